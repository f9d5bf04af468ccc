// ring-bench: round-trip latency of our shared-memory SPSC ring against boost::lockfree::spsc_queue
// with the same capacity and the same descriptors, between two threads pinned to different CPUs.
// A round trip is: ping a descriptor through ring A, the other thread copies it out and pongs it
// back through ring B. This is the figure that justifies not using Boost's queue.
#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <boost/lockfree/spsc_queue.hpp>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include "sidecar/shared/channel_layout.hpp"
#include "sidecar/shared/clock.hpp"

namespace {

using namespace sidecar;
using Clock = std::chrono::steady_clock;

void pin_to(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  ::pthread_setaffinity_np(::pthread_self(), sizeof(set), &set);
}

struct OwnRings {
  // How much of each descriptor is copied: the whole slot (as Boost's queue must), or only the
  // part a one-input request uses, as the sidecar and the client do.
  std::size_t copied = sizeof(RequestDescriptor);
  std::unique_ptr<RequestRing> ping = std::make_unique<RequestRing>();
  std::unique_ptr<RequestRing> pong = std::make_unique<RequestRing>();
  OwnRings() {
    ping->reset();
    pong->reset();
  }
  void send(SpscProducer<RequestRing>& producer, const RequestDescriptor& item) const {
    RequestDescriptor* slot;
    while ((slot = producer.try_claim()) == nullptr) cpu_relax();
    std::memcpy(slot, &item, copied);
    producer.publish();
  }
  void receive(SpscConsumer<RequestRing>& consumer, RequestDescriptor& item) const {
    const RequestDescriptor* slot;
    while ((slot = consumer.front()) == nullptr) cpu_relax();
    std::memcpy(&item, slot, copied);
    consumer.pop();
  }

  double round_trip_ns(std::size_t rounds) {
    std::thread echo([&] {
      pin_to(0);
      SpscConsumer<RequestRing> in(ping.get());
      SpscProducer<RequestRing> out(pong.get());
      RequestDescriptor item;
      for (std::size_t i = 0; i < rounds; ++i) {
        receive(in, item);
        send(out, item);
      }
    });
    pin_to(1);
    SpscProducer<RequestRing> out(ping.get());
    SpscConsumer<RequestRing> in(pong.get());
    RequestDescriptor item{};
    const auto start = Clock::now();
    for (std::size_t i = 0; i < rounds; ++i) {
      item.request_id = i;
      send(out, item);
      receive(in, item);
    }
    const auto elapsed = Clock::now() - start;
    echo.join();
    return std::chrono::duration<double, std::nano>(elapsed).count() / static_cast<double>(rounds);
  }
};

struct BoostRings {
  using Queue = boost::lockfree::spsc_queue<RequestDescriptor, boost::lockfree::capacity<kRingCapacity>>;
  std::unique_ptr<Queue> ping = std::make_unique<Queue>();
  std::unique_ptr<Queue> pong = std::make_unique<Queue>();

  double round_trip_ns(std::size_t rounds) {
    std::thread echo([&] {
      pin_to(0);
      RequestDescriptor item;
      for (std::size_t i = 0; i < rounds; ++i) {
        while (!ping->pop(item)) cpu_relax();
        while (!pong->push(item)) cpu_relax();
      }
    });
    pin_to(1);
    RequestDescriptor item{};
    const auto start = Clock::now();
    for (std::size_t i = 0; i < rounds; ++i) {
      item.request_id = i;
      while (!ping->push(item)) cpu_relax();
      while (!pong->pop(item)) cpu_relax();
    }
    const auto elapsed = Clock::now() - start;
    echo.join();
    return std::chrono::duration<double, std::nano>(elapsed).count() / static_cast<double>(rounds);
  }
};

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  const std::size_t rounds = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 200000;
  if (std::thread::hardware_concurrency() < 2) {
    std::fprintf(stderr, "ring-bench needs two CPUs\n");
    return 1;
  }
  std::vector<double> own, own_used, boost;
  constexpr std::size_t kOneInputRequest = offsetof(RequestDescriptor, inputs) + sizeof(TensorDescriptor);
  // Interleaved, so that a noisy neighbour affects all alike.
  for (int trial = 0; trial < 7; ++trial) {
    own.push_back(OwnRings().round_trip_ns(rounds));
    OwnRings used;
    used.copied = kOneInputRequest;
    own_used.push_back(used.round_trip_ns(rounds));
    boost.push_back(BoostRings().round_trip_ns(rounds));
  }
  std::printf("round trip of a %zu-byte descriptor, median of 7 x %zu:\n", sizeof(RequestDescriptor), rounds);
  std::printf("  sidecar SpscRing                 %8.1f ns\n", median(own));
  std::printf("  boost::lockfree::spsc_queue      %8.1f ns\n", median(boost));
  std::printf("  ratio boost / sidecar            %8.2f\n", median(boost) / median(own));
  std::printf("  sidecar SpscRing, copying only the %zu bytes a one-input request uses: %.1f ns\n", kOneInputRequest,
              median(own_used));
  return 0;
}
