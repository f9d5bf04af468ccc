// The result cache through the real sidecar: hits found by clients in shared memory and by the
// sidecar, from this process and from child processes; correctness against the model, the budget,
// bypass, flush and statistics.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <random>
#include <thread>

#include "client_helpers.hpp"
#include "raw_client.hpp"
#include "sidecar/client.hpp"
#include "sidecar/shared/cache_layout.hpp"
#include "sidecar_process.hpp"

namespace sidecar {
namespace {

using testing::connect_or_fail;
using testing::kImageElements;
using testing::kImageShape;
using testing::model_path;
using testing::random_values;
using testing::SidecarProcess;
using testing::unique_name;
using namespace std::chrono_literals;

std::vector<std::byte> only_output(Result<std::vector<Tensor>>& result) {
  EXPECT_TRUE(result.ok()) << result.message();
  if (!result.ok() || result->size() != 1) return {};
  return (*result)[0].data;
}

// Polls the statistics until `ready` holds: client-side hits reach them every ~100 ms.
template <typename Ready>
CacheStats wait_for_stats(const std::string& name, Ready&& ready) {
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  while (true) {
    auto stats = read_cache_stats(name);
    EXPECT_TRUE(stats.ok()) << stats.message();
    if (!stats.ok()) return {};
    if (ready(*stats) || std::chrono::steady_clock::now() > deadline) return *stats;
    std::this_thread::sleep_for(20ms);
  }
}

class DemoCacheSidecar : public testing::SuiteSidecar<DemoCacheSidecar> {
 public:
  static std::vector<std::string> sidecar_args() {
    return {"--model",
            model_path("demo"),
            "--warmup-shape",
            "1x3x224x224",
            "--warmup-iterations",
            "2",
            "--max-clients",
            "8",
            "--arena-bytes",
            "2M",
            "--cache-bytes",
            "16M"};
  }
};

// The failure a dict keyed by str(tensor) has: two inputs that differ in one element get one answer.
TEST_F(DemoCacheSidecar, InputsDifferingInOneElementNeverShareAResult) {
  for (CacheLookup lookup : {CacheLookup::kInClient, CacheLookup::kInSidecar}) {
    SCOPED_TRACE(lookup == CacheLookup::kInClient ? "lookup in client" : "lookup in sidecar");
    ConnectOptions options;
    options.cache_lookup = lookup;
    Client client = connect_or_fail(sidecar_->name(), options);
    const std::vector<float> a = random_values(kImageElements, lookup == CacheLookup::kInClient ? 1 : 2);
    auto first = client.infer(TensorView::of(a, kImageShape), 10s);
    const std::vector<std::byte> result_a = only_output(first);
    EXPECT_EQ(client.last_cache_outcome(), CacheOutcome::kMiss);
    auto again = client.infer(TensorView::of(a, kImageShape), 10s);
    EXPECT_EQ(only_output(again), result_a);
    EXPECT_EQ(client.last_cache_outcome(),
              lookup == CacheLookup::kInClient ? CacheOutcome::kHitInClient : CacheOutcome::kHitInSidecar);

    // One element changed, at the start, the middle and the end; a large change, so that the model's
    // output moves too and a wrong answer would show.
    for (std::size_t position : {std::size_t{0}, kImageElements / 2, kImageElements - 1}) {
      SCOPED_TRACE("element " + std::to_string(position));
      std::vector<float> b = a;
      b[position] += 50.0f;
      auto cached_path = client.infer(TensorView::of(b, kImageShape), 10s);
      const std::vector<std::byte> result_b = only_output(cached_path);
      EXPECT_EQ(client.last_cache_outcome(), CacheOutcome::kMiss);
      auto direct = client.infer(TensorView::of(b, kImageShape), 10s, CachePolicy::kBypass);
      EXPECT_EQ(client.last_cache_outcome(), CacheOutcome::kNotUsed);
      EXPECT_EQ(result_b, only_output(direct)) << "the answer for b is the model's answer for b";
      EXPECT_NE(result_b, result_a) << "and not a's";
    }
  }
}

TEST_F(DemoCacheSidecar, AResultStoredForOneProcessIsFoundByAnother) {
  const std::vector<float> input = random_values(kImageElements, 3);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    auto client = Client::connect(sidecar_->name());
    if (!client.ok()) ::_exit(2);
    auto result = client->infer(TensorView::of(input, kImageShape), 10s);
    ::_exit(result.ok() && client->last_cache_outcome() == CacheOutcome::kMiss ? 0 : 3);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;

  Client client = connect_or_fail(sidecar_->name());
  auto cached = client.infer(TensorView::of(input, kImageShape), 10s);
  EXPECT_EQ(client.last_cache_outcome(), CacheOutcome::kHitInClient);
  auto direct = client.infer(TensorView::of(input, kImageShape), 10s, CachePolicy::kBypass);
  EXPECT_EQ(only_output(cached), only_output(direct));
}

TEST_F(DemoCacheSidecar, ZeroCopyRunHitsInTheArena) {
  Client client = connect_or_fail(sidecar_->name());
  const std::vector<float> input = random_values(kImageElements, 4);
  std::vector<std::byte> expected;
  for (int call = 0; call < 2; ++call) {
    auto buffer = client.input_buffer(DType::kFloat32, kImageShape);
    ASSERT_TRUE(buffer.ok()) << buffer.message();
    std::memcpy(buffer->data(), input.data(), buffer->size());
    auto outputs = client.run(10s);
    ASSERT_TRUE(outputs.ok()) << outputs.message();
    ASSERT_EQ(outputs->size(), 1u);
    const auto* bytes = static_cast<const std::byte*>((*outputs)[0].data);
    std::vector<std::byte> got(bytes, bytes + (*outputs)[0].bytes);
    if (call == 0) {
      EXPECT_EQ(client.last_cache_outcome(), CacheOutcome::kMiss);
      expected = got;
    } else {
      EXPECT_EQ(client.last_cache_outcome(), CacheOutcome::kHitInClient);
      EXPECT_EQ(got, expected);
      EXPECT_EQ((*outputs)[0].shape.size(), 2u);
    }
  }
}

TEST_F(DemoCacheSidecar, BypassNeitherLooksUpNorStores) {
  Client client = connect_or_fail(sidecar_->name());
  const std::vector<float> input = random_values(kImageElements, 5);
  const CacheStats before = client.cache_stats();
  for (int i = 0; i < 2; ++i) {
    auto result = client.infer(TensorView::of(input, kImageShape), 10s, CachePolicy::kBypass);
    ASSERT_TRUE(result.ok()) << result.message();
    EXPECT_EQ(client.last_cache_outcome(), CacheOutcome::kNotUsed);
  }
  const CacheStats after = client.cache_stats();
  EXPECT_EQ(after.inserts, before.inserts);
  EXPECT_EQ(after.misses, before.misses);
  auto used = client.infer(TensorView::of(input, kImageShape), 10s);
  EXPECT_EQ(client.last_cache_outcome(), CacheOutcome::kMiss) << "bypassed calls stored nothing";
}

TEST_F(DemoCacheSidecar, FlushEmptiesTheCacheAndStatisticsCountEverything) {
  Client client = connect_or_fail(sidecar_->name());
  const std::vector<float> input = random_values(kImageElements, 6);
  const CacheStats before = client.cache_stats();
  ASSERT_TRUE(before.enabled);
  EXPECT_EQ(before.budget_bytes, 16u << 20);
  auto miss = client.infer(TensorView::of(input, kImageShape), 10s);
  for (int i = 0; i < 3; ++i) {
    auto hit = client.infer(TensorView::of(input, kImageShape), 10s);
    EXPECT_EQ(client.last_cache_outcome(), CacheOutcome::kHitInClient);
  }
  const CacheStats counted =
      wait_for_stats(sidecar_->name(), [&](const CacheStats& s) { return s.client_hits >= before.client_hits + 3; });
  EXPECT_GE(counted.client_hits, before.client_hits + 3);
  EXPECT_GE(counted.misses, before.misses + 1);
  EXPECT_GE(counted.inserts, before.inserts + 1);
  EXPECT_GE(counted.entries, 1u);
  EXPECT_LE(counted.bytes_used, counted.budget_bytes);

  auto flushed = client.flush_cache(5s);
  ASSERT_TRUE(flushed.ok()) << flushed.message();
  EXPECT_NE(flushed->find("flushed"), std::string::npos) << *flushed;
  // A client flushing in a loop would turn the cache off for everyone: at most one a second.
  auto again_at_once = client.flush_cache(5s);
  EXPECT_EQ(again_at_once.code(), ErrorCode::kOverloaded) << again_at_once.message();
  const CacheStats after = client.cache_stats();
  EXPECT_EQ(after.entries, 0u);
  EXPECT_GT(after.generation, counted.generation);
  EXPECT_EQ(after.flushes, counted.flushes + 1);
  auto again = client.infer(TensorView::of(input, kImageShape), 10s);
  EXPECT_EQ(client.last_cache_outcome(), CacheOutcome::kMiss);
}

// --- The budget, through the sidecar --------------------------------------------------------------
// The tiny model (a linear layer over the last dim) accepts [N, 64] for any N when no warm-up shape
// pins it, so entries of many sizes go through the real serving path.
class SmallCacheSidecar : public testing::SuiteSidecar<SmallCacheSidecar> {
 public:
  static std::vector<std::string> sidecar_args() {
    return {"--model", model_path("tiny"),        "--max-clients", "4", "--arena-bytes", "1M", "--cache-bytes",
            "256K",    "--cache-max-entry-bytes", "48K"};
  }
};

TEST_F(SmallCacheSidecar, BudgetHoldsWhileFilledManyTimesOverAndEveryHitIsRight) {
  Client client = connect_or_fail(sidecar_->name());
  {
    testing::RawClient raw(sidecar_->name());
    ASSERT_EQ(raw.reply().fd_count, 4u);
    struct stat info {};
    ASSERT_EQ(::fstat(raw.fds()[kCacheFd].get(), &info), 0);
    EXPECT_EQ(info.st_size, 256 << 10) << "the cache's memfd is the budget";
  }

  std::uint64_t stored_input_bytes = 0;
  int hits = 0;
  for (std::uint32_t i = 0; i < 400; ++i) {
    const std::int64_t rows = 1 + (i * 37) % 220;  // 256 bytes to 55 KB of input, some over the cap
    const std::int64_t shape[] = {rows, 64};
    const std::vector<float> input = random_values(static_cast<std::size_t>(rows) * 64, 100 + i);
    auto first = client.infer(TensorView::of(input, shape), 5s);
    ASSERT_TRUE(first.ok()) << first.message();
    stored_input_bytes += input.size() * sizeof(float);
    // Half of them again at once, half after others have been stored: whenever it is a hit, it
    // must be this input's answer.
    const std::uint32_t j = i % 2 ? i : i / 2;
    const std::int64_t rows_j = 1 + (j * 37) % 220;
    const std::int64_t shape_j[] = {rows_j, 64};
    const std::vector<float> input_j = random_values(static_cast<std::size_t>(rows_j) * 64, 100 + j);
    auto cached = client.infer(TensorView::of(input_j, shape_j), 5s);
    const bool hit = client.last_cache_outcome() == CacheOutcome::kHitInClient;
    auto direct = client.infer(TensorView::of(input_j, shape_j), 5s, CachePolicy::kBypass);
    ASSERT_EQ(only_output(cached), only_output(direct)) << "input " << j << (hit ? " (a hit)" : " (a miss)");
    hits += hit;
    const CacheStats stats = client.cache_stats();
    ASSERT_LE(stats.bytes_used, stats.budget_bytes) << "after input " << i;
  }
  const CacheStats stats = client.cache_stats();
  EXPECT_GT(stored_input_bytes, 20u * stats.budget_bytes) << "filled many times over";
  EXPECT_GT(stats.evictions, 100u);
  EXPECT_GT(stats.too_large, 0u) << "some entries were over the 48K cap";
  EXPECT_GT(hits, 100);
  EXPECT_EQ(stats.budget_bytes, 256u << 10);
}

TEST(CacheOff, ZeroCacheBytesRunsWithoutACacheAndSaysSo) {
  SidecarProcess sidecar(unique_name("nocache"), {"--model", model_path("tiny"), "--warmup-shape", "1x64", "--max-clients",
                                                  "2", "--arena-bytes", "64K", "--cache-bytes", "0"});
  ASSERT_TRUE(sidecar.wait_ready()) << sidecar.log();
  Client client = connect_or_fail(sidecar.name());
  const std::vector<float> input = random_values(64, 7);
  const std::int64_t shape[] = {1, 64};
  for (int i = 0; i < 2; ++i) {
    auto result = client.infer(TensorView::of(input, shape), 5s);
    ASSERT_TRUE(result.ok()) << result.message();
    EXPECT_EQ(client.last_cache_outcome(), CacheOutcome::kNotUsed);
  }
  EXPECT_FALSE(client.cache_stats().enabled);
  auto stats = read_cache_stats(sidecar.name());
  ASSERT_TRUE(stats.ok()) << stats.message();
  EXPECT_FALSE(stats->enabled);
  auto flushed = client.flush_cache(5s);
  EXPECT_EQ(flushed.code(), ErrorCode::kRejected);
  EXPECT_NE(flushed.message().find("--cache-bytes 0"), std::string::npos) << flushed.message();
  testing::RawClient raw(sidecar.name());
  EXPECT_EQ(raw.reply().fd_count, 3u) << "no cache fd";
  EXPECT_EQ(raw.reply().cache_bytes, 0u);
  EXPECT_EQ(sidecar.stop(), 0);
}

TEST(CacheLifetime, StoppingRemovesTheCacheAndARestartStartsEmpty) {
  const std::string name = unique_name("cachelife");
  const std::vector<std::string> args = {"--model",        model_path("tiny"),
                                         "--warmup-shape", "1x64",
                                         "--max-clients",     "2",
                                         "--arena-bytes",  "64K",
                                         "--cache-bytes",  "1M"};
  const std::vector<float> input = random_values(64, 8);
  const std::int64_t shape[] = {1, 64};
  {
    SidecarProcess sidecar(name, args);
    ASSERT_TRUE(sidecar.wait_ready()) << sidecar.log();
    Client client = connect_or_fail(name);
    auto stored = client.infer(TensorView::of(input, shape), 5s);
    auto hit = client.infer(TensorView::of(input, shape), 5s);
    EXPECT_EQ(client.last_cache_outcome(), CacheOutcome::kHitInClient);
    EXPECT_EQ(sidecar.stop(), 0);
    // The old sidecar's cache is closed: this client's lookups miss, and it learns the sidecar is gone.
    auto after_stop = client.infer(TensorView::of(input, shape), 1s);
    EXPECT_FALSE(after_stop.ok());
    EXPECT_EQ(after_stop.code(), ErrorCode::kNotRunning) << after_stop.message();
  }
  SidecarProcess restarted(name, args);
  ASSERT_TRUE(restarted.wait_ready()) << restarted.log();
  Client client = connect_or_fail(name);
  auto first = client.infer(TensorView::of(input, shape), 5s);
  ASSERT_TRUE(first.ok()) << first.message();
  EXPECT_EQ(client.last_cache_outcome(), CacheOutcome::kMiss);
  EXPECT_EQ(restarted.stop(), 0);
}

// Runs `body(client)` in a child process that has dropped to uid/gid 65534 (nobody), and returns
// its exit status (0 when the body returned true). Needs root.
template <typename Body>
int as_nobody(const std::string& name, Body&& body) {
  const pid_t child = ::fork();
  if (child == 0) {
    if (::setgid(65534) != 0 || ::setuid(65534) != 0) ::_exit(90);
    auto client = Client::connect(name);
    if (!client.ok()) ::_exit(91);
    ::_exit(body(*client) ? 0 : 1);
  }
  int status = 0;
  ::waitpid(child, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// What "shared" means: an entry one user's request stored is another user's hit. With per-user
// scope the key carries the uid the kernel reports for the client, and clients get no mapping of
// the cache at all (with one, anyone could look any user's inputs up): the other user misses, and
// each user's own repeats are hits found by the sidecar.
TEST(CacheScope, SharedEntriesServeEveryUserPerUserOnesOnlyTheirOwn) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to run a client as another user";
  const std::vector<float> input = random_values(64, 31);
  const std::int64_t shape[] = {1, 64};
  for (const char* scope : {"shared", "per-user"}) {
    SCOPED_TRACE(scope);
    const bool per_user = std::string(scope) == "per-user";
    SidecarProcess sidecar(unique_name("scope"), {"--model", model_path("tiny"), "--warmup-shape", "1x64",
                                                  "--socket-mode", "0666", "--cache-scope", scope});
    ASSERT_TRUE(sidecar.wait_ready()) << sidecar.log();
    Client owner = connect_or_fail(sidecar.name());
    ASSERT_TRUE(owner.infer(TensorView::of(input, shape), 5s).ok());
    auto repeat = owner.infer(TensorView::of(input, shape), 5s);
    ASSERT_TRUE(repeat.ok()) << repeat.message();
    EXPECT_EQ(owner.last_cache_outcome(), per_user ? CacheOutcome::kHitInSidecar : CacheOutcome::kHitInClient);
    testing::RawClient raw(sidecar.name());
    EXPECT_EQ(raw.reply().fd_count, per_user ? 3u : 4u) << "a per-user cache is never mapped by clients";

    const int other_user = as_nobody(sidecar.name(), [&](Client& client) {
      auto first = client.infer(TensorView::of(input, shape), 5s);
      if (!first.ok()) return false;
      const CacheOutcome outcome = client.last_cache_outcome();
      auto second = client.infer(TensorView::of(input, shape), 5s);
      const bool own_repeat_hits = second.ok() && client.last_cache_outcome() != CacheOutcome::kMiss;
      return own_repeat_hits && (per_user ? outcome == CacheOutcome::kMiss : outcome == CacheOutcome::kHitInClient);
    });
    EXPECT_EQ(other_user, 0);
    EXPECT_EQ(sidecar.stop(), 0);
  }
}

// A cache larger than the memory there is stops start-up with one clear line: checked before the
// commit, because the kernel asked for more than it has would kill a process rather than fail.
TEST(CacheBudget, ABudgetTheMemoryCannotHoldStopsStartUpClearly) {
  const std::string name = unique_name("hugecache");
  SidecarProcess sidecar(name, {"--model", model_path("tiny"), "--warmup-shape", "1x64", "--max-clients", "2",
                                "--arena-bytes", "64K", "--cache-bytes", "65536G"});
  EXPECT_EQ(sidecar.wait_exit(), 1) << sidecar.log();
  EXPECT_NE(sidecar.log().find("cannot commit 70368744177664 bytes for sidecar-cache: only "), std::string::npos)
      << sidecar.log();
  EXPECT_FALSE(testing::socket_exists(name));
}

}  // namespace
}  // namespace sidecar
