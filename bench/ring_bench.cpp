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
#include <functional>
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

// One trial: `rounds` round trips, each timed alone so that a preemption by a neighbour spoils only
// the round trips it hits (the median ignores them; the mean, over the whole run, does not).
struct Trial {
  double mean_ns = 0;
  double median_ns = 0;
};

template <typename Ping, typename Echo>
Trial time_round_trips(std::size_t rounds, Ping ping_and_wait, Echo echo_one) {
  std::thread echo([&] {
    pin_to(0);
    for (std::size_t i = 0; i < rounds; ++i) echo_one();
  });
  pin_to(1);
  std::vector<double> each(rounds);
  const auto start = Clock::now();
  for (std::size_t i = 0; i < rounds; ++i) {
    const auto sent = Clock::now();
    ping_and_wait(i);
    each[i] = std::chrono::duration<double, std::nano>(Clock::now() - sent).count();
  }
  const auto elapsed = Clock::now() - start;
  echo.join();
  std::nth_element(each.begin(), each.begin() + rounds / 2, each.end());
  return {std::chrono::duration<double, std::nano>(elapsed).count() / static_cast<double>(rounds), each[rounds / 2]};
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

  Trial round_trips(std::size_t rounds) {
    SpscConsumer<RequestRing> echo_in(ping.get());
    SpscProducer<RequestRing> echo_out(pong.get());
    SpscProducer<RequestRing> out(ping.get());
    SpscConsumer<RequestRing> in(pong.get());
    RequestDescriptor echoed{}, item{};
    return time_round_trips(
        rounds,
        [&](std::size_t i) {
          item.request_id = i;
          send(out, item);
          receive(in, item);
        },
        [&] {
          receive(echo_in, echoed);
          send(echo_out, echoed);
        });
  }
};

struct BoostRings {
  using Queue = boost::lockfree::spsc_queue<RequestDescriptor, boost::lockfree::capacity<kRingCapacity>>;
  std::unique_ptr<Queue> ping = std::make_unique<Queue>();
  std::unique_ptr<Queue> pong = std::make_unique<Queue>();

  Trial round_trips(std::size_t rounds) {
    RequestDescriptor echoed{}, item{};
    return time_round_trips(
        rounds,
        [&](std::size_t i) {
          item.request_id = i;
          while (!ping->push(item)) cpu_relax();
          while (!pong->pop(item)) cpu_relax();
        },
        [&] {
          while (!ping->pop(echoed)) cpu_relax();
          while (!pong->push(echoed)) cpu_relax();
        });
  }
};

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

struct Row {
  const char* name;
  std::function<Trial(std::size_t)> run;
  std::vector<double> means, medians;
};

}  // namespace

int main(int argc, char** argv) {
  const std::size_t rounds = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 200000;
  if (std::thread::hardware_concurrency() < 2) {
    std::fprintf(stderr, "ring-bench needs two CPUs\n");
    return 1;
  }
  constexpr std::size_t kOneInputRequest = offsetof(RequestDescriptor, inputs) + sizeof(TensorDescriptor);
  auto own = [](std::size_t copied) {
    return [copied](std::size_t rounds) {
      OwnRings rings;
      rings.copied = copied;
      return rings.round_trips(rounds);
    };
  };
  std::vector<Row> rows = {
      {"sidecar SpscRing, whole descriptor", own(sizeof(RequestDescriptor)), {}, {}},
      {"boost::lockfree::spsc_queue", [](std::size_t rounds) { return BoostRings().round_trips(rounds); }, {}, {}},
      {"sidecar SpscRing, one-input part", own(kOneInputRequest), {}, {}},
  };
  constexpr int kTrials = 7;
  // Interleaved, so that a noisy neighbour affects all alike.
  for (int trial = 0; trial < kTrials; ++trial) {
    for (Row& row : rows) {
      const Trial result = row.run(rounds);
      row.means.push_back(result.mean_ns);
      row.medians.push_back(result.median_ns);
    }
  }
  std::printf("round trip of a %zu-byte descriptor (one-input part: %zu bytes), %d trials x %zu, ns:\n",
              sizeof(RequestDescriptor), kOneInputRequest, kTrials, rounds);
  std::printf("  %-38s %10s %22s\n", "", "mean", "p50 (trials min-max)");
  for (const Row& row : rows) {
    std::printf("  %-38s %10.1f %8.1f (%6.1f-%6.1f)\n", row.name, median(row.means), median(row.medians),
                *std::min_element(row.medians.begin(), row.medians.end()),
                *std::max_element(row.medians.begin(), row.medians.end()));
  }
  return 0;
}
