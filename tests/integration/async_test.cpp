// Many requests in flight: the asynchronous client, cancellation, deadlines, overload, fairness
// between clients, and 64 clients at once, against the real sidecar.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <deque>
#include <random>
#include <thread>

#include "client_helpers.hpp"
#include "sidecar/client.hpp"
#include "sidecar/sidecar_client.h"
#include "sidecar_process.hpp"

namespace sidecar {
namespace {

using testing::kTinyShape;
using testing::connect_or_fail;
using testing::kImageElements;
using testing::kImageShape;
using testing::model_path;
using testing::random_values;
using testing::SidecarProcess;
using testing::unique_name;
using namespace std::chrono_literals;

std::vector<std::byte> bytes_of(Result<std::vector<Tensor>>& result) {
  EXPECT_TRUE(result.ok()) << result.message();
  return result.ok() && !result->empty() ? (*result)[0].data : std::vector<std::byte>{};
}

class TinyAsync : public testing::SuiteSidecar<TinyAsync> {
 public:
  static std::vector<std::string> sidecar_args() {
    return {"--model", model_path("tiny"), "--warmup-shape", "1x64",          "--max-clients",
            "80",      "--arena-bytes",    "256K",           "--cache-bytes", "0"};
  }
};

TEST_F(TinyAsync, SixteenInFlightAreAnsweredEachWithItsOwnResultInAnyOrder) {
  Client client = connect_or_fail(sidecar_->name());
  std::vector<std::vector<float>> inputs;
  std::vector<std::vector<std::byte>> expected;
  for (std::uint32_t i = 0; i < 16; ++i) {
    inputs.push_back(random_values(64, i));
    auto alone = client.infer(TensorView::of(inputs[i], kTinyShape), 5s);
    expected.push_back(bytes_of(alone));
  }
  std::vector<RequestHandle> handles;
  for (std::uint32_t i = 0; i < 16; ++i) {
    const TensorView input = TensorView::of(inputs[i], kTinyShape);
    auto handle = client.submit(std::span<const TensorView>(&input, 1));
    ASSERT_TRUE(handle.ok()) << i << ": " << handle.message();
    handles.push_back(*handle);
  }
  // Collected newest first: each answer still belongs to its own request.
  for (int i = 15; i >= 0; --i) {
    auto result = client.wait(handles[static_cast<std::size_t>(i)], 5s);
    EXPECT_EQ(bytes_of(result), expected[static_cast<std::size_t>(i)]) << "request " << i;
  }
  EXPECT_EQ(client.in_flight(), 0u);
  auto again = client.wait(handles[0], 1s);
  EXPECT_EQ(again.code(), ErrorCode::kInvalidArgument) << "a handle is collected once";
}

TEST_F(TinyAsync, TryGetNeverBlocksAndTheCApiMatches) {
  Client client = connect_or_fail(sidecar_->name());
  const auto input = random_values(64, 99);
  const TensorView view = TensorView::of(input, kTinyShape);
  auto handle = client.submit(std::span<const TensorView>(&view, 1));
  ASSERT_TRUE(handle.ok()) << handle.message();
  std::optional<Result<std::vector<Tensor>>> got;
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  while (!(got = client.try_get(*handle)) && std::chrono::steady_clock::now() < deadline) std::this_thread::yield();
  ASSERT_TRUE(got.has_value());
  const std::vector<std::byte> from_cpp = bytes_of(*got);

  sidecar_client* c = nullptr;
  ASSERT_EQ(sidecar_connect(sidecar_->name().c_str(), 5000, &c), SIDECAR_OK) << sidecar_connect_error();
  const sidecar_tensor c_input{SIDECAR_FLOAT32, 2, kTinyShape, input.data(), input.size() * sizeof(float)};
  std::uint64_t c_handle = 0;
  ASSERT_EQ(sidecar_submit(c, &c_input, 1, 5000000, &c_handle), SIDECAR_OK) << sidecar_last_error(c);
  sidecar_tensor outputs[4];
  std::size_t count = 4;
  ASSERT_EQ(sidecar_wait(c, c_handle, outputs, &count, 5000000), SIDECAR_OK) << sidecar_last_error(c);
  ASSERT_EQ(count, 1u);
  ASSERT_EQ(outputs[0].bytes, from_cpp.size());
  EXPECT_EQ(std::memcmp(outputs[0].data, from_cpp.data(), from_cpp.size()), 0);
  count = 4;
  EXPECT_NE(sidecar_try_get(c, c_handle, outputs, &count), SIDECAR_OK) << "collected already";
  sidecar_close(c);
}

// 8 processes x 8 threads, a client (channel) each, 4 requests in flight each; every answer checked.
TEST_F(TinyAsync, SixtyFourClientsAtOnceEachWithSeveralRequestsInFlight) {
  Client reference = connect_or_fail(sidecar_->name());
  std::vector<std::vector<float>> inputs;
  std::vector<std::vector<std::byte>> expected;
  for (std::uint32_t i = 0; i < 4; ++i) {
    inputs.push_back(random_values(64, 200 + i));
    auto result = reference.infer(TensorView::of(inputs[i], kTinyShape), 5s);
    expected.push_back(bytes_of(result));
  }
  std::vector<pid_t> children;
  for (int p = 0; p < 8; ++p) {
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      std::atomic<int> failures{0};
      std::vector<std::thread> threads;
      for (int t = 0; t < 8; ++t) {
        threads.emplace_back([&] {
          auto client = Client::connect(sidecar_->name(), testing::connect_options(std::chrono::milliseconds(20000)));
          if (!client.ok()) {
            ++failures;
            return;
          }
          for (int round = 0; round < 10; ++round) {
            RequestHandle handles[4];
            for (std::uint32_t i = 0; i < 4; ++i) {
              const TensorView view = TensorView::of(inputs[i], kTinyShape);
              auto handle = client->submit(std::span<const TensorView>(&view, 1), SubmitOptions{30s});
              if (!handle.ok()) {
                ++failures;
                return;
              }
              handles[i] = *handle;
            }
            for (std::uint32_t i = 0; i < 4; ++i) {
              auto result = client->wait(handles[i], 30s);
              if (!result.ok() || (*result)[0].data != expected[i]) ++failures;
            }
          }
        });
      }
      for (std::thread& thread : threads) thread.join();
      ::_exit(failures.load() == 0 ? 0 : 1);
    }
    children.push_back(pid);
  }
  for (pid_t child : children) {
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "a client process saw a failure";
  }
}

// One worker and the demo CNN (a forward takes milliseconds), so requests queue behind each other.
class DemoQueue : public testing::SuiteSidecar<DemoQueue> {
 public:
  static std::vector<std::string> sidecar_args() {
    return {"--model",
            model_path("demo"),
            "--warmup-shape",
            "1x3x224x224",
            "--workers",
            "1",
            "--warmup-iterations",
            "2",
            "--max-clients",
            "8",
            "--arena-bytes",
            "16M",
            "--cache-bytes",
            "16M"};
  }
};

TEST_F(DemoQueue, TheSeventeenthRequestInFlightIsOverloadedNotQueued) {
  Client client = connect_or_fail(sidecar_->name());
  const auto input = random_values(kImageElements, 7);
  const TensorView view = TensorView::of(input, kImageShape);
  std::deque<RequestHandle> handles;
  std::optional<Result<RequestHandle>> refused;
  // Submitting is faster than the forwards, so the count of unanswered requests reaches the limit.
  for (int attempt = 0; attempt < 200 && !refused; ++attempt) {
    auto handle = client.submit(std::span<const TensorView>(&view, 1), SubmitOptions{60s, CachePolicy::kBypass});
    if (handle.ok()) {
      handles.push_back(*handle);
    } else {
      EXPECT_EQ(client.in_flight(), 16u);
      refused.emplace(std::move(handle));
    }
  }
  ASSERT_TRUE(refused.has_value()) << "never refused";
  EXPECT_EQ(refused->code(), ErrorCode::kOverloaded) << refused->message();
  // Collecting answers makes room again (the oldest handles may have been answered already).
  while (client.in_flight() >= 16) {
    auto oldest = client.wait(handles.front(), 60s);
    ASSERT_TRUE(oldest.ok()) << oldest.message();
    handles.pop_front();
  }
  auto room_again = client.submit(std::span<const TensorView>(&view, 1), SubmitOptions{60s, CachePolicy::kBypass});
  ASSERT_TRUE(room_again.ok()) << room_again.message();
  handles.push_back(*room_again);
  for (RequestHandle handle : handles) {
    auto result = client.wait(handle, 60s);
    EXPECT_TRUE(result.ok()) << result.message();
  }
}

TEST_F(DemoQueue, ACancelledRequestNeverRuns) {
  ConnectOptions options;
  options.cache_lookup = CacheLookup::kInSidecar;  // so that a later lookup tells whether it ran
  Client client = connect_or_fail(sidecar_->name(), options);
  const auto first = random_values(kImageElements, 1);
  const auto second = random_values(kImageElements, 2);
  const TensorView running = TensorView::of(first, kImageShape);
  const TensorView queued = TensorView::of(second, kImageShape);
  auto a = client.submit(std::span<const TensorView>(&running, 1));
  auto b = client.submit(std::span<const TensorView>(&queued, 1));
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_TRUE(client.cancel(*b));
  auto cancelled = client.wait(*b, 10s);
  EXPECT_EQ(cancelled.code(), ErrorCode::kCancelled) << cancelled.message();
  auto done = client.wait(*a, 10s);
  ASSERT_TRUE(done.ok()) << done.message();
  // Had the cancelled request run, its result would be in the cache now.
  while (client.in_flight() != 0) {
    auto probe = client.try_get(*a);  // pumps answers; the cancelled one frees its region
    (void)probe;
    std::this_thread::sleep_for(1ms);
  }
  auto after = client.infer(queued, 10s);
  ASSERT_TRUE(after.ok()) << after.message();
  EXPECT_EQ(client.last_cache_outcome(), CacheOutcome::kMiss) << "the cancelled request ran";
  auto again = client.infer(running, 10s);
  EXPECT_EQ(client.last_cache_outcome(), CacheOutcome::kHitInSidecar) << "the other one ran and was stored";
}

TEST_F(DemoQueue, ARequestWhoseDeadlinePassedInTheQueueIsNeverRun) {
  ConnectOptions options;
  options.cache_lookup = CacheLookup::kInSidecar;
  Client client = connect_or_fail(sidecar_->name(), options);
  const auto first = random_values(kImageElements, 3);
  const auto second = random_values(kImageElements, 4);
  const TensorView running = TensorView::of(first, kImageShape);
  const TensorView late = TensorView::of(second, kImageShape);
  auto a = client.submit(std::span<const TensorView>(&running, 1), SubmitOptions{10s});
  // Due 1 us from now: it is still queued behind a forward of milliseconds when that passes.
  auto b = client.submit(std::span<const TensorView>(&late, 1), SubmitOptions{1us});
  ASSERT_TRUE(a.ok() && b.ok());
  auto expired = client.wait(*b, 10s);
  EXPECT_EQ(expired.code(), ErrorCode::kDeadlineExceeded) << expired.message();
  EXPECT_EQ(client.last_service().batch_size, 0u) << "it was part of a forward";
  auto done = client.wait(*a, 10s);
  ASSERT_TRUE(done.ok()) << done.message();
  auto after = client.infer(late, 10s);
  EXPECT_EQ(client.last_cache_outcome(), CacheOutcome::kMiss) << "the expired request ran";
}

// A client keeping its ring full must not push another client back by more than the request
// running when it arrives and the one taken just before: the leader takes from the channels in
// turn. Counted in the sidecar's service order rather than timed, so the bound does not depend on
// this machine's speed: for each of the victim's requests, at most 2 of the flooder's are taken
// between it and the victim's previous one.
TEST_F(DemoQueue, AFloodingClientCannotPushAnotherBackByMoreThanTwoRequests) {
  std::atomic<bool> stop{false};
  std::vector<std::uint64_t> flooder_orders;
  // Connected first, the flooder holds the lower channel: a leader that always scanned from
  // channel 0 would serve it first every time.
  Client flooding_client = connect_or_fail(sidecar_->name());
  Client victim = connect_or_fail(sidecar_->name());
  ASSERT_LT(flooding_client.client_id(), victim.client_id());
  std::thread flooder([&] {
    Client& client = flooding_client;
    const auto input = random_values(kImageElements, 5);
    const TensorView view = TensorView::of(input, kImageShape);
    std::deque<RequestHandle> handles;
    while (!stop.load()) {
      while (true) {
        auto handle = client.submit(std::span<const TensorView>(&view, 1), SubmitOptions{60s, CachePolicy::kBypass});
        if (!handle.ok()) break;  // overloaded: its ring is full
        handles.push_back(*handle);
      }
      auto result = client.wait(handles.front(), 60s);
      handles.pop_front();
      if (result.ok()) flooder_orders.push_back(client.last_service().service_order);
    }
    for (RequestHandle handle : handles) {
      auto result = client.wait(handle, 60s);
      if (result.ok()) flooder_orders.push_back(client.last_service().service_order);
    }
  });
  const auto input = random_values(kImageElements, 6);
  std::vector<std::uint64_t> victim_orders;
  std::this_thread::sleep_for(200ms);  // the flooder's ring is full by now
  for (int i = 0; i < 15; ++i) {
    auto result = victim.infer(TensorView::of(input, kImageShape), 10s, CachePolicy::kBypass);
    if (!result.ok()) {
      stop.store(true);
      flooder.join();
      FAIL() << "victim request " << i << ": " << result.message();
    }
    victim_orders.push_back(victim.last_service().service_order);
  }
  stop.store(true);
  flooder.join();
  ASSERT_GT(flooder_orders.size(), 15u) << "the flooder did not flood";
  std::sort(flooder_orders.begin(), flooder_orders.end());
  for (std::size_t k = 1; k < victim_orders.size(); ++k) {
    const auto between = std::count_if(flooder_orders.begin(), flooder_orders.end(), [&](std::uint64_t order) {
      return order > victim_orders[k - 1] && order < victim_orders[k];
    });
    EXPECT_LE(between, 2) << "victim request " << k;
  }
}

}  // namespace
}  // namespace sidecar
