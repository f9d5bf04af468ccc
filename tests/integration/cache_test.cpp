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
#include "result_cache.hpp"
#include "sidecar/client.hpp"
#include "sidecar/shared/cache_layout.hpp"
#include "sidecar/shared/layout.hpp"
#include "sidecar/shared/process_identity.hpp"
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
            "--channels",
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
    return {"--model", model_path("tiny"),        "--channels", "4", "--arena-bytes", "1M", "--cache-bytes",
            "256K",    "--cache-max-entry-bytes", "48K"};
  }
};

TEST_F(SmallCacheSidecar, BudgetHoldsWhileFilledManyTimesOverAndEveryHitIsRight) {
  Client client = connect_or_fail(sidecar_->name());
  struct stat info {};
  ASSERT_EQ(::stat(("/dev/shm" + cache_segment_name(sidecar_->name())).c_str(), &info), 0);
  EXPECT_EQ(info.st_size, 256 << 10) << "the segment is the budget";

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
  ASSERT_EQ(::stat(("/dev/shm" + cache_segment_name(sidecar_->name())).c_str(), &info), 0);
  EXPECT_EQ(info.st_size, 256 << 10);
}

TEST(CacheOff, ZeroCacheBytesRunsWithoutACacheAndSaysSo) {
  SidecarProcess sidecar(unique_name("nocache"), {"--model", model_path("tiny"), "--warmup-shape", "1x64", "--channels",
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
  struct stat info {};
  EXPECT_NE(::stat(("/dev/shm" + cache_segment_name(sidecar.name())).c_str(), &info), 0);
  EXPECT_EQ(sidecar.stop(), 0);
}

TEST(CacheLifetime, StoppingRemovesTheCacheAndARestartStartsEmpty) {
  const std::string name = unique_name("cachelife");
  const std::vector<std::string> args = {"--model",        model_path("tiny"),
                                         "--warmup-shape", "1x64",
                                         "--channels",     "2",
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
    struct stat info {};
    EXPECT_NE(::stat(("/dev/shm" + cache_segment_name(name)).c_str(), &info), 0) << "cache segment removed";
  }
  SidecarProcess restarted(name, args);
  ASSERT_TRUE(restarted.wait_ready()) << restarted.log();
  Client client = connect_or_fail(name);
  auto first = client.infer(TensorView::of(input, shape), 5s);
  ASSERT_TRUE(first.ok()) << first.message();
  EXPECT_EQ(client.last_cache_outcome(), CacheOutcome::kMiss);
  EXPECT_EQ(restarted.stop(), 0);
}

// Anyone may create files in /dev/shm, and a sidecar's pid and start time are public. A cache
// segment planted under the sidecar's cache name, claiming its pid, must not be believed unless the
// sidecar's user owns it and nobody else can write it.
TEST(CacheTrust, AForgedCacheIsIgnoredUnlessTheSidecarsUserOwnsIt) {
  SidecarProcess sidecar(unique_name("forged"), {"--model", model_path("tiny"), "--warmup-shape", "1x64", "--channels",
                                                 "2", "--arena-bytes", "64K", "--cache-bytes", "0"});
  ASSERT_TRUE(sidecar.wait_ready()) << sidecar.log();
  const std::vector<float> input = random_values(64, 9);
  const std::int64_t shape[] = {1, 64};
  TensorShape in_shape{};
  in_shape.dtype = static_cast<std::uint8_t>(DType::kFloat32);
  in_shape.rank = 2;
  in_shape.dims[0] = 1;
  in_shape.dims[1] = 64;
  TensorShape out_shape = in_shape;
  out_shape.dims[1] = 10;
  const std::vector<float> forged_output(10, 1234.5f);

  Client reference = connect_or_fail(sidecar.name());
  auto real = reference.infer(TensorView::of(input, shape), 5s);
  const std::vector<std::byte> real_output = only_output(real);

  // The forgery: a well-formed cache claiming the sidecar's pid and start time, with a wrong answer.
  CacheSettings settings;
  settings.budget_bytes = 1 << 20;
  settings.mode = 0644;
  auto forged = ResultCache::create(sidecar.name(), settings);
  auto& header = const_cast<CacheHeader&>(forged->view().header());
  header.sidecar_pid = sidecar.pid();
  header.sidecar_start_time = process_start_time(sidecar.pid());
  const TensorBytes in[] = {TensorBytes{in_shape, input.data(), input.size() * 4}};
  const TensorBytes out[] = {TensorBytes{out_shape, forged_output.data(), forged_output.size() * 4}};
  ASSERT_EQ(forged->insert(compute_cache_key(forged->generation(), in), forged->generation(), in, out),
            ResultCache::Stored::kStored);
  const std::string path = "/dev/shm" + cache_segment_name(sidecar.name());

  struct Case {
    const char* what;
    uid_t owner;
    mode_t mode;
    bool believed;
  };
  // The tests run as the sidecar's user, for whom a forgery is no boundary (it could ptrace the
  // sidecar): the first case shows the lookup would find the planted entry, so the others test
  // the ownership checks and not a miss for some other reason.
  const Case cases[] = {{"owned by the sidecar's user, 0644", ::geteuid(), 0644, true},
                        {"owned by another user", 65534, 0644, false},
                        {"writable by the group", ::geteuid(), 0664, false},
                        {"writable by everyone", ::geteuid(), 0666, false}};
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    ASSERT_EQ(::chown(path.c_str(), c.owner, static_cast<gid_t>(-1)), 0);
    ASSERT_EQ(::chmod(path.c_str(), c.mode), 0);
    Client client = connect_or_fail(sidecar.name());
    auto result = client.infer(TensorView::of(input, shape), 5s);
    const std::vector<std::byte> output = only_output(result);
    if (c.believed) {
      EXPECT_EQ(client.last_cache_outcome(), CacheOutcome::kHitInClient);
      EXPECT_NE(output, real_output);
    } else {
      EXPECT_NE(client.last_cache_outcome(), CacheOutcome::kHitInClient);
      EXPECT_EQ(output, real_output);
      EXPECT_FALSE(read_cache_stats(sidecar.name())->enabled);
    }
  }
  EXPECT_EQ(sidecar.stop(), 0);
}

// A cache that /dev/shm cannot hold stops start-up with one clear line, not a SIGBUS, and leaves
// no segment behind.
TEST(CacheBudget, ABudgetDevShmCannotHoldStopsStartUpClearly) {
  const std::string name = unique_name("hugecache");
  SidecarProcess sidecar(name, {"--model", model_path("tiny"), "--warmup-shape", "1x64", "--channels", "2",
                                "--arena-bytes", "64K", "--cache-bytes", "65536G"});
  EXPECT_EQ(sidecar.wait_exit(), 1) << sidecar.log();
  EXPECT_NE(sidecar.log().find("cannot reserve"), std::string::npos) << sidecar.log();
  struct stat info {};
  EXPECT_NE(::stat(("/dev/shm" + cache_segment_name(name)).c_str(), &info), 0);
  EXPECT_FALSE(testing::segment_exists(name));
}

}  // namespace
}  // namespace sidecar
