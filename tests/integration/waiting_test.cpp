// How clients and the sidecar wait for each other: blocking round trips with no wake-up lost
// (also when a client is woken ahead of its answer), the spin budget, and late answers.
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <iterator>
#include <mutex>
#include <sstream>
#include <thread>

#include "client_helpers.hpp"
#include "sidecar/client.hpp"
#include "sidecar_process.hpp"

namespace sidecar {
namespace {

using testing::connect_or_fail;
using testing::kTinyShape;
using testing::model_path;
using testing::ramp;
using testing::SidecarProcess;
using testing::unique_name;
using namespace std::chrono_literals;

// With no spinning on either side every request goes through a sleep and a wake-up on each side
// (the client woken ahead of its answer, since the tiny model answers quickly); under load from
// several threads none may be lost.
TEST(Blocking, NoLostWakeupsWithoutSpinning) {
  // No cache: every repeat of the same input would be a hit in the client, and no round trip.
  SidecarProcess sidecar(unique_name("block"), {"--model", model_path("tiny"), "--warmup-shape", "1x64", "--spin-us",
                                                "0", "--max-clients", "8", "--arena-bytes", "64K", "--cache-bytes", "0"});
  ASSERT_TRUE(sidecar.wait_ready()) << sidecar.log();
  constexpr int kThreads = 4;
  constexpr int kRequests = 1500;
  constexpr auto kTimeout = 5s;
  std::atomic<int> failures{0};
  std::string first_failure;
  std::mutex failure_mutex;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      ConnectOptions options;
      options.spin = 0us;
      auto client = Client::connect(sidecar.name(), options);
      if (!client.ok()) {
        ++failures;
        return;
      }
      const auto input = ramp(64, 0.01f);
      for (int r = 0; r < kRequests; ++r) {
        // A lost wake-up does not fail the call, which finds its answer when its sleep ends at the
        // deadline: a call that lasted its whole timeout is one.
        const auto start = std::chrono::steady_clock::now();
        auto outputs = client->infer(TensorView::of(input, kTinyShape), kTimeout);
        const bool waited_out = std::chrono::steady_clock::now() - start >= kTimeout;
        if (!outputs.ok() || waited_out) {
          std::lock_guard lock(failure_mutex);
          if (failures++ == 0) first_failure = outputs.ok() ? "answered only at the deadline" : outputs.message();
        }
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(failures.load(), 0) << first_failure;
  auto status = read_status(sidecar.name());
  ASSERT_TRUE(status.ok()) << status.message();
  EXPECT_GT(status->requests_woken_ahead, 0u);
  EXPECT_EQ(sidecar.stop(), 0);
}

// A client woken ahead of an answer that then takes longer than its wake-up (forced here with a
// --wake-ahead-us longer than the demo CNN's forward) finds nothing, sleeps again, and must be woken
// once more when the answer lands. A lost wake-up does not fail the call: the client finds the
// answer when its sleep ends at the deadline. So the test counts calls that lasted their whole
// timeout, a thousand forwards: each is a lost wake-up.
TEST(Blocking, AClientWokenAheadOfASlowAnswerSleepsAgainAndGetsIt) {
  SidecarProcess sidecar(unique_name("ahead"), {"--model", model_path("demo"), "--warmup-shape", "1x3x224x224",
                                                "--spin-us", "0", "--wake-ahead-us", "1000000", "--workers", "1",
                                                "--warmup-iterations", "2", "--max-clients", "4", "--cache-bytes", "0"});
  ASSERT_TRUE(sidecar.wait_ready()) << sidecar.log();
  constexpr int kThreads = 2;
  constexpr int kRequests = 15;
  constexpr auto kTimeout = 6s;
  const auto input = ramp(testing::kImageElements, 0.001f);
  std::vector<std::vector<float>> answers(kThreads);
  std::atomic<int> failures{0};
  std::string first_failure;
  std::mutex failure_mutex;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      auto client = Client::connect(sidecar.name(), testing::connect_options(30s, 0us));
      if (!client.ok()) {
        ++failures;
        return;
      }
      for (int r = 0; r < kRequests; ++r) {
        const auto start = std::chrono::steady_clock::now();
        auto outputs = client->infer(TensorView::of(input, testing::kImageShape), kTimeout);
        const bool waited_out = std::chrono::steady_clock::now() - start >= kTimeout;
        std::lock_guard lock(failure_mutex);
        if (!outputs.ok() || waited_out) {
          if (failures++ == 0) first_failure = outputs.ok() ? "answered only at the deadline" : outputs.message();
          continue;
        }
        const auto values = (*outputs)[0].values<float>();
        std::vector<float> answer(values.begin(), values.end());
        if (answers[t].empty()) answers[t] = answer;
        if (answer != answers[t] && failures++ == 0) first_failure = "a different answer to the same input";
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(failures.load(), 0) << first_failure;
  EXPECT_FALSE(answers[0].empty());
  EXPECT_EQ(answers[0], answers[1]);
  auto status = read_status(sidecar.name());
  ASSERT_TRUE(status.ok()) << status.message();
  EXPECT_GT(status->requests_woken_ahead, 0u);
  EXPECT_EQ(sidecar.stop(), 0);
}

// CPU time the process has used so far (user and system), in clock ticks.
long cpu_ticks_of(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  // Fields after the command name, which is in parentheses and may hold spaces: state is the 3rd,
  // utime the 14th, stime the 15th.
  std::istringstream fields(text.substr(text.rfind(')') + 2));
  std::string field;
  long utime = 0;
  long stime = 0;
  for (int index = 3; fields >> field; ++index) {
    if (index == 14) utime = std::stol(field);
    if (index == 15) {
      stime = std::stol(field);
      break;
    }
  }
  return utime + stime;
}

// The spin budget runs from the last request: an idle sidecar spins that long, then only sleeps,
// even though its leader looks at the rings now and then by itself. (It used to start a new spin
// budget after each of those looks, and so spun without end.)
TEST(Spinning, AnIdleSidecarStopsSpinningOnceItsBudgetRunsOut) {
  SidecarProcess sidecar(unique_name("idle"), {"--model", model_path("tiny"), "--warmup-shape", "1x64", "--spin-us",
                                               "300000", "--workers", "1", "--cache-bytes", "0"});
  ASSERT_TRUE(sidecar.wait_ready()) << sidecar.log();
  auto client = connect_or_fail(sidecar.name());
  const auto input = ramp(64, 0.01f);
  ASSERT_TRUE(client.infer(TensorView::of(input, kTinyShape), 20s).ok());
  std::this_thread::sleep_for(600ms);  // the budget (300 ms) has run out
  const long before = cpu_ticks_of(sidecar.pid());
  std::this_thread::sleep_for(1s);
  const long used = cpu_ticks_of(sidecar.pid()) - before;
  // A second of spinning would be ::sysconf(_SC_CLK_TCK) ticks; sleeping, a handful at most.
  EXPECT_LT(used, ::sysconf(_SC_CLK_TCK) / 4) << "ticks of CPU while idle";
  EXPECT_EQ(sidecar.stop(), 0);
}

// A request given up on (timed out) must not spoil the next one: the sidecar may still write the
// late answer into the arena, so the next request's inputs must not be placed there until it came.
TEST(Timeouts, ALateAnswerNeverLandsInTheNextRequest) {
  // No cache: the abandoned request's result would be cached, and its repeats answered from it.
  SidecarProcess sidecar(unique_name("late"), {"--model", model_path("demo"), "--warmup-shape", "1x3x224x224",
                                               "--warmup-shape", "4x3x224x224", "--workers", "1", "--warmup-iterations",
                                               "3", "--max-clients", "2", "--cache-bytes", "0"});
  ASSERT_TRUE(sidecar.wait_ready()) << sidecar.log();
  Client client = connect_or_fail(sidecar.name());
  const auto small = ramp(3 * 224 * 224, 0.01f);
  const auto large = ramp(4 * 3 * 224 * 224, 0.003f);
  const std::int64_t small_shape[] = {1, 3, 224, 224};
  const std::int64_t large_shape[] = {4, 3, 224, 224};
  auto reference = client.infer(TensorView::of(small, small_shape), 60s);
  ASSERT_TRUE(reference.ok()) << reference.message();
  // Giving up shows as our timeout, or as the sidecar's "deadline exceeded" when it saw the
  // request only after its deadline; only the first leaves a late answer behind.
  auto gave_up = [](ErrorCode code) { return code == ErrorCode::kTimeout || code == ErrorCode::kDeadlineExceeded; };
  // The abandoned request is the 4-row one, whose forward takes several times the 1 ms it is
  // given. A round in which it still made it in time exercises nothing and is only not counted:
  // the test asserts on what it saw, never on the machine's speed.
  int late_answers = 0;
  for (int round = 0; round < 10; ++round) {
    auto abandoned = client.infer(TensorView::of(large, large_shape), 1ms);
    if (abandoned.ok()) continue;
    ASSERT_TRUE(gave_up(abandoned.code())) << error_code_name(abandoned.code()) << ": " << abandoned.message();
    if (abandoned.code() == ErrorCode::kTimeout) ++late_answers;
    auto next = client.infer(TensorView::of(small, small_shape), 60s);
    ASSERT_TRUE(next.ok()) << next.message();
    EXPECT_EQ((*next)[0].data, (*reference)[0].data) << "round " << round;
  }
  EXPECT_GT(late_answers, 0) << "no round left a late answer: the test did not exercise the case";
  // The zero-copy path refuses arena space while the late answer is still due, instead of
  // handing out bytes the sidecar may write into.
  // (Asked until a request is late: each try is one forward of the 4-row input at most.)
  for (int attempt = 0; attempt < 10; ++attempt) {
    auto abandoned = client.infer(TensorView::of(large, large_shape), 1ms);
    if (abandoned.ok()) continue;
    ASSERT_TRUE(gave_up(abandoned.code())) << abandoned.message();
    auto buffer = client.input_buffer(DType::kFloat32, large_shape);
    if (!buffer.ok()) {
      EXPECT_EQ(buffer.code(), ErrorCode::kBusy) << buffer.message();
    }
    break;
  }
  client.reset_inputs();
  EXPECT_EQ(sidecar.stop(), 0);
}

}  // namespace
}  // namespace sidecar
