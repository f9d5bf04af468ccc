// The result cache without a sidecar: ResultCache (the writer) and CacheView (the reader) over a
// real sealed memfd, with readers in this process and in child processes that map it read-only.
#include "result_cache.hpp"

#include <gtest/gtest.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <random>
#include <vector>

#include "sidecar/shared/cache_reader.hpp"
#include "sidecar/shared/memfd.hpp"

namespace sidecar {
namespace {

TensorShape shape_of(DType dtype, std::initializer_list<std::int64_t> dims) {
  TensorShape shape{};
  shape.dtype = static_cast<std::uint8_t>(dtype);
  shape.rank = static_cast<std::uint8_t>(dims.size());
  std::copy(dims.begin(), dims.end(), shape.dims);
  return shape;
}

TensorBytes bytes_of(const TensorShape& shape, const std::vector<float>& values) {
  return TensorBytes{shape, values.data(), values.size() * sizeof(float)};
}

// Copies the outputs of a hit into `out`, one vector per output.
struct Collect {
  std::vector<std::vector<std::uint8_t>>& out;
  std::vector<TensorShape>* shapes = nullptr;
  bool operator()(std::uint32_t count, const CacheTensor* outputs, std::uint8_t** where) {
    out.assign(count, {});
    if (shapes) shapes->clear();
    for (std::uint32_t i = 0; i < count; ++i) {
      out[i].resize(outputs[i].bytes);
      where[i] = out[i].data();
      if (shapes) shapes->push_back(outputs[i].shape);
    }
    return true;
  }
};

std::optional<CacheHit> look_up(const ResultCache& cache, std::span<const TensorBytes> inputs,
                                std::vector<std::vector<std::uint8_t>>& out) {
  const std::uint64_t generation = cache.generation();
  return cache.view().lookup(compute_cache_key(generation, kSharedScope, inputs), generation, inputs, Collect{out});
}

ResultCache::Stored store(ResultCache& cache, std::span<const TensorBytes> inputs,
                          std::span<const TensorBytes> outputs) {
  const std::uint64_t generation = cache.generation();
  return cache.insert(compute_cache_key(generation, kSharedScope, inputs), generation, inputs, outputs);
}

// A cache and the statistics it writes (the status page's, in a sidecar).
struct TestCache {
  std::unique_ptr<CacheCounters> counters = std::make_unique<CacheCounters>();
  std::unique_ptr<ResultCache> cache;
  ResultCache* operator->() const { return cache.get(); }
  ResultCache& operator*() const { return *cache; }
};

TestCache make_cache(std::uint64_t budget, std::uint64_t max_entry = 0) {
  CacheSettings settings;
  settings.budget_bytes = budget;
  settings.max_entry_bytes = max_entry;
  TestCache made;
  Result<std::unique_ptr<ResultCache>> cache = ResultCache::create(settings, *made.counters);
  if (!cache.ok()) throw std::runtime_error(cache.message());
  made.cache = std::move(*cache);
  return made;
}

TEST(ResultCache, StoredResultIsFoundWithItsOutputs) {
  auto cache = make_cache(1 << 20);
  std::vector<float> input(64, 0.5f), output{1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
  const TensorBytes in[] = {bytes_of(shape_of(DType::kFloat32, {1, 64}), input)};
  const TensorBytes out[] = {bytes_of(shape_of(DType::kFloat32, {1, 10}), output)};
  std::vector<std::vector<std::uint8_t>> found;
  EXPECT_FALSE(look_up(*cache, in, found));
  ASSERT_EQ(store(*cache, in, out), ResultCache::Stored::kStored);
  EXPECT_EQ(store(*cache, in, out), ResultCache::Stored::kAlreadyPresent);
  ASSERT_TRUE(look_up(*cache, in, found));
  ASSERT_EQ(found.size(), 1u);
  ASSERT_EQ(found[0].size(), output.size() * sizeof(float));
  EXPECT_EQ(std::memcmp(found[0].data(), output.data(), found[0].size()), 0);
  EXPECT_EQ(cache->check_invariants(), "");
}

// The failure this cache exists to prevent: inputs that differ in one element sharing a result.
TEST(ResultCache, InputsDifferingInOneElementNeverShareAResult) {
  auto cache = make_cache(8 << 20);
  const TensorShape image = shape_of(DType::kFloat32, {1, 3, 224, 224});
  std::vector<float> a(3 * 224 * 224);
  std::mt19937 random(7);
  for (float& v : a) v = std::uniform_real_distribution<float>(-1, 1)(random);
  std::vector<float> output_a{1.0f, 2.0f};
  const TensorBytes in_a[] = {bytes_of(image, a)};
  const TensorBytes out_a[] = {bytes_of(shape_of(DType::kFloat32, {1, 2}), output_a)};
  ASSERT_EQ(store(*cache, in_a, out_a), ResultCache::Stored::kStored);

  std::vector<std::vector<std::uint8_t>> found;
  for (std::size_t position : {std::size_t{0}, a.size() / 2, a.size() - 1}) {
    std::vector<float> b = a;
    b[position] = std::nextafter(b[position], 2.0f);  // the smallest change a float allows
    const TensorBytes in_b[] = {bytes_of(image, b)};
    EXPECT_FALSE(look_up(*cache, in_b, found)) << "element " << position;
  }
  EXPECT_TRUE(look_up(*cache, in_a, found));
}

// A hash match alone is never trusted: with the key forced equal, the bytes still decide.
TEST(ResultCache, HashMatchWithDifferentInputsIsAMiss) {
  auto cache = make_cache(1 << 20);
  std::vector<float> a(6, 1.0f), b(6, 1.0f), output{42.0f};
  b[5] = 2.0f;
  const TensorShape shape = shape_of(DType::kFloat32, {2, 3});
  const TensorBytes in_a[] = {bytes_of(shape, a)};
  const TensorBytes out[] = {bytes_of(shape_of(DType::kFloat32, {1}), output)};
  const std::uint64_t generation = cache->generation();
  const CacheKey key = compute_cache_key(generation, kSharedScope, in_a);
  ASSERT_EQ(cache->insert(key, generation, in_a, out), ResultCache::Stored::kStored);

  std::vector<std::vector<std::uint8_t>> found;
  const TensorBytes in_b[] = {bytes_of(shape, b)};
  EXPECT_FALSE(cache->view().lookup(key, generation, in_b, Collect{found}));
  // Same bytes, other shape or dtype: also a miss under the same key.
  const TensorBytes transposed[] = {bytes_of(shape_of(DType::kFloat32, {3, 2}), a)};
  EXPECT_FALSE(cache->view().lookup(key, generation, transposed, Collect{found}));
  const TensorBytes as_int[] = {TensorBytes{shape_of(DType::kInt32, {2, 3}), a.data(), a.size() * 4}};
  EXPECT_FALSE(cache->view().lookup(key, generation, as_int, Collect{found}));
  EXPECT_TRUE(cache->view().lookup(key, generation, in_a, Collect{found}));
  // And the key itself tells these apart.
  EXPECT_NE(compute_cache_key(generation, kSharedScope, transposed), key);
  EXPECT_NE(compute_cache_key(generation, kSharedScope, as_int), key);
  EXPECT_NE(compute_cache_key(generation + 1, kSharedScope, in_a), key);
}

TEST(ResultCache, ReservedShapeFieldsAndUnusedDimsAreNotPartOfTheKey) {
  std::vector<float> a(6, 1.0f);
  TensorShape clean = shape_of(DType::kFloat32, {2, 3});
  TensorShape noisy = clean;
  noisy.reserved0 = 7;
  noisy.reserved1 = 9;
  noisy.dims[5] = 123;
  const TensorBytes x[] = {bytes_of(clean, a)};
  const TensorBytes y[] = {bytes_of(noisy, a)};
  EXPECT_EQ(compute_cache_key(1, kSharedScope, x), compute_cache_key(1, kSharedScope, y));
}

TEST(ResultCache, BudgetHoldsWhileFilledManyTimesOverWithVariedSizes) {
  constexpr std::uint64_t kBudget = 1 << 20;
  auto cache = make_cache(kBudget);
  struct stat info {};
  ASSERT_EQ(::fstat(cache->fd(), &info), 0);
  EXPECT_EQ(static_cast<std::uint64_t>(info.st_size), kBudget);
  EXPECT_EQ(cache->bytes(), kBudget);

  std::mt19937 random(11);
  std::uint64_t stored_bytes = 0;
  std::vector<std::vector<std::uint8_t>> found;
  for (int i = 0; i < 4000; ++i) {
    // From a few bytes to over the entry cap (an eighth of the budget), skewed small.
    const auto elements = static_cast<std::int64_t>(1 + std::exponential_distribution<double>(1.0 / 6000)(random));
    std::vector<float> input(static_cast<std::size_t>(elements), static_cast<float>(i));
    std::vector<float> output(1 + i % 100, static_cast<float>(-i));
    const TensorBytes in[] = {bytes_of(shape_of(DType::kFloat32, {elements}), input)};
    const TensorBytes out[] = {bytes_of(shape_of(DType::kFloat32, {static_cast<std::int64_t>(output.size())}), output)};
    const auto stored = store(*cache, in, out);
    if (stored == ResultCache::Stored::kStored) stored_bytes += ResultCache::record_bytes(in, out);
    ASSERT_LE(cache.counters->bytes_used.load(), kBudget) << "insert " << i;
    if (stored == ResultCache::Stored::kStored) {
      ASSERT_TRUE(look_up(*cache, in, found)) << "just stored, insert " << i;
      ASSERT_EQ(std::memcmp(found[0].data(), output.data(), found[0].size()), 0);
    } else {
      ASSERT_EQ(stored, ResultCache::Stored::kTooLarge);
      ASSERT_GT(ResultCache::record_bytes(in, out), cache->max_entry_bytes());
    }
    if (i % 97 == 0) {
      ASSERT_EQ(cache->check_invariants(), "") << "insert " << i;
    }
  }
  EXPECT_EQ(cache->check_invariants(), "");
  EXPECT_GT(stored_bytes, 10 * kBudget) << "the test must fill the cache many times over";
  EXPECT_GT(cache.counters->evictions.load(), 1000u);
  EXPECT_GT(cache.counters->too_large.load(), 0u);
  EXPECT_GT(cache.counters->entries.load(), 0u);
}

TEST(ResultCache, RecentlyUsedEntrySurvivesEvictionOfColderOnes) {
  auto cache = make_cache(256 << 10, 32 << 10);
  std::vector<std::vector<float>> inputs;
  for (int i = 0; i < 64; ++i) inputs.emplace_back(4000, static_cast<float>(i));  // 16 KB each
  std::vector<float> output{1.0f};
  const TensorShape shape = shape_of(DType::kFloat32, {4000});
  const TensorBytes out[] = {bytes_of(shape_of(DType::kFloat32, {1}), output)};
  std::vector<std::vector<std::uint8_t>> found;
  const TensorBytes hot[] = {bytes_of(shape, inputs[0])};
  ASSERT_EQ(store(*cache, hot, out), ResultCache::Stored::kStored);
  for (int i = 1; i < 64; ++i) {
    // Keep entry 0 warm as a reader would: a hit reported back to the writer.
    auto hit = look_up(*cache, hot, found);
    ASSERT_TRUE(hit) << "the warm entry was evicted at insert " << i;
    cache->touch(hit->slot, hit->sequence);
    const TensorBytes in[] = {bytes_of(shape, inputs[i])};
    ASSERT_EQ(store(*cache, in, out), ResultCache::Stored::kStored);
  }
  const TensorBytes first_cold[] = {bytes_of(shape, inputs[1])};
  EXPECT_FALSE(look_up(*cache, first_cold, found)) << "16 KB entries x 63 cannot all fit in 256 KB";
  EXPECT_EQ(cache->check_invariants(), "");
}

TEST(ResultCache, FlushEmptiesAndOldGenerationResultsAreDropped) {
  auto cache = make_cache(1 << 20);
  std::vector<float> input(64, 3.0f), output{1.0f};
  const TensorBytes in[] = {bytes_of(shape_of(DType::kFloat32, {64}), input)};
  const TensorBytes out[] = {bytes_of(shape_of(DType::kFloat32, {1}), output)};
  const std::uint64_t before = cache->generation();
  const CacheKey old_key = compute_cache_key(before, kSharedScope, in);
  ASSERT_EQ(store(*cache, in, out), ResultCache::Stored::kStored);
  const auto flushed = cache->flush();
  EXPECT_EQ(flushed.entries, 1u);
  EXPECT_GT(cache->generation(), before);
  std::vector<std::vector<std::uint8_t>> found;
  EXPECT_FALSE(look_up(*cache, in, found));
  // A result computed before the flush arrives after it: not stored.
  EXPECT_EQ(cache->insert(old_key, before, in, out), ResultCache::Stored::kStaleGeneration);
  EXPECT_EQ(cache.counters->entries.load(), 0u);
  cache->close();
  EXPECT_EQ(cache->generation(), 0u);
  EXPECT_EQ(store(*cache, in, out), ResultCache::Stored::kStaleGeneration);
  EXPECT_EQ(cache->check_invariants(), "");
}

TEST(ResultCache, TooSmallBudgetIsRefusedWithTheMinimum) {
  CacheSettings settings;
  settings.budget_bytes = 1000;
  CacheCounters counters{};
  Result<std::unique_ptr<ResultCache>> cache = ResultCache::create(settings, counters);
  ASSERT_FALSE(cache.ok()) << "a 1000-byte budget was accepted";
  EXPECT_EQ(cache.code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(cache.message().find("minimum"), std::string::npos) << cache.message();
}

// Every mapping but the sidecar's own is read-only, whoever holds the fd: the kernel refuses a
// writable mapping, an upgrade of a read-only one, writes through the fd, truncation and growth.
TEST(ResultCache, ItsMemfdIsReadOnlyForEveryOtherHolder) {
  auto cache = make_cache(1 << 20);
  const int fd = cache->fd();
  EXPECT_EQ(::mmap(nullptr, cache->bytes(), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), MAP_FAILED);
  EXPECT_EQ(errno, EPERM);
  void* read_only = ::mmap(nullptr, cache->bytes(), PROT_READ, MAP_SHARED, fd, 0);
  ASSERT_NE(read_only, MAP_FAILED);
  EXPECT_NE(::mprotect(read_only, cache->bytes(), PROT_READ | PROT_WRITE), 0);
  EXPECT_NE(::pwrite(fd, "x", 1, 0), 1);
  EXPECT_NE(::ftruncate(fd, 0), 0);
  EXPECT_NE(::ftruncate(fd, static_cast<off_t>(cache->bytes()) * 2), 0);
  EXPECT_NE(::fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 4096), 0);
  EXPECT_NE(::fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE), 0) << "the seals themselves are sealed";
  // Reading through it works, and shows what the sidecar wrote.
  EXPECT_EQ(check_cache_layout(static_cast<const std::uint8_t*>(read_only), cache->bytes()).code(), ErrorCode::kOk);
  ::munmap(read_only, cache->bytes());
}

// --- Torn reads -----------------------------------------------------------------------------------
// Entry s has a deterministic input and output, both derived from s, of a size that varies with s.
// Readers in child processes look random entries up while this process inserts continuously into
// a cache far smaller than the key space, so slots and heap blocks are reused under the readers all
// the time. Every hit must carry exactly entry s's output, byte for byte.

std::vector<float> stress_input(std::uint32_t s) {
  std::vector<float> values(8 + (s * 7919u) % 3000);
  for (std::size_t i = 0; i < values.size(); ++i) values[i] = static_cast<float>(s) + static_cast<float>(i) * 1e-3f;
  return values;
}
std::vector<std::uint32_t> stress_output(std::uint32_t s) {
  std::vector<std::uint32_t> values(1 + (s * 104729u) % 2000);
  for (std::size_t i = 0; i < values.size(); ++i) values[i] = s * 2654435761u ^ static_cast<std::uint32_t>(i);
  return values;
}

ResultCache::Stored store_stress_entry(ResultCache& cache, std::uint32_t s) {
  const std::vector<float> input = stress_input(s);
  const std::vector<std::uint32_t> output = stress_output(s);
  const TensorShape in_shape = shape_of(DType::kFloat32, {static_cast<std::int64_t>(input.size())});
  const TensorShape out_shape = shape_of(DType::kInt32, {static_cast<std::int64_t>(output.size())});
  const TensorBytes in[] = {TensorBytes{in_shape, input.data(), input.size() * 4}};
  const TensorBytes out[] = {TensorBytes{out_shape, output.data(), output.size() * 4}};
  return store(cache, in, out);
}

struct ReaderReport {
  std::uint64_t lookups = 0;
  std::uint64_t hits = 0;
  std::uint64_t wrong = 0;
};

// Maps the cache read-only, as a client does, and looks keys up until it has `hits_wanted` hits.
ReaderReport run_reader(int cache_fd, std::uint64_t cache_bytes, std::uint32_t keys, std::uint64_t hits_wanted,
                        std::uint32_t seed) {
  ReaderReport report;
  Result<SharedMapping> mapping = map_received(cache_fd, cache_bytes, kReadOnlySeals, false, "the cache");
  if (!mapping.ok() || !check_cache_layout(mapping->base(), mapping->size()).ok()) {
    report.wrong = ~0ull;
    return report;
  }
  CacheView view(mapping->base());
  std::mt19937 random(seed);
  std::vector<std::uint8_t> destination;
  TensorShape found_shape{};
  while (report.hits < hits_wanted) {
    const std::uint32_t s = random() % keys;
    const std::vector<float> input = stress_input(s);
    TensorShape shape{};
    shape.dtype = static_cast<std::uint8_t>(DType::kFloat32);
    shape.rank = 1;
    shape.dims[0] = static_cast<std::int64_t>(input.size());
    const TensorBytes in[] = {TensorBytes{shape, input.data(), input.size() * sizeof(float)}};
    const std::uint64_t generation = view.generation();
    ++report.lookups;
    auto hit = view.lookup(compute_cache_key(generation, kSharedScope, in), generation, in,
                           [&](std::uint32_t count, const CacheTensor* outputs, std::uint8_t** where) {
                             if (count != 1) return false;
                             found_shape = outputs[0].shape;
                             destination.resize(outputs[0].bytes);
                             where[0] = destination.data();
                             return true;
                           });
    if (!hit) continue;
    ++report.hits;
    const std::vector<std::uint32_t> expected = stress_output(s);
    const bool right = found_shape.rank == 1 && found_shape.dims[0] == static_cast<std::int64_t>(expected.size()) &&
                       destination.size() == expected.size() * 4 &&
                       std::memcmp(destination.data(), expected.data(), destination.size()) == 0;
    if (!right) ++report.wrong;
  }
  return report;
}

// Counts work, not time: the readers run until each has checked kHitsPerReader hits, and the writer
// keeps replacing entries until they are done and it has evicted at least kMinEvictions. On a busy
// machine this takes longer; it never passes with less checked.
TEST(ResultCacheStress, ReadersInOtherProcessesNeverSeeTornOrMismatchedEntries) {
  constexpr std::uint32_t kKeys = 600;  // ~ 9 MB of entries in a 1 MiB cache
  constexpr int kReaders = 3;
  constexpr std::uint64_t kHitsPerReader = 20000;
  constexpr std::uint64_t kMinEvictions = 20000;
  auto cache = make_cache(1 << 20);

  // Pre-fill so that readers hit from the start.
  for (std::uint32_t s = 0; s < kKeys; ++s) (void)store_stress_entry(*cache, s);

  struct Child {
    pid_t pid;
    int pipe_read;
  };
  std::vector<Child> children;
  for (int r = 0; r < kReaders; ++r) {
    int fds[2];
    ASSERT_EQ(::pipe(fds), 0);
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      ::close(fds[0]);
      const ReaderReport report = run_reader(cache->fd(), cache->bytes(), kKeys, kHitsPerReader, 1000 + r);
      const bool written = ::write(fds[1], &report, sizeof report) == sizeof report;
      ::_exit(written ? 0 : 1);
    }
    ::close(fds[1]);
    children.push_back({pid, fds[0]});
  }

  // The writer: keeps replacing entries for the whole run.
  const std::uint64_t evictions_before = cache.counters->evictions.load();
  std::mt19937 random(5);
  std::uint64_t inserts = 0;
  std::uint64_t writes = 0;
  auto readers_running = [&] {
    for (const Child& child : children) {
      pollfd done{child.pipe_read, POLLIN, 0};
      if (::poll(&done, 1, 0) == 0) return true;
    }
    return false;
  };
  while (readers_running() || cache.counters->evictions.load() - evictions_before < kMinEvictions) {
    for (int burst = 0; burst < 256; ++burst) {
      if (store_stress_entry(*cache, random() % kKeys) == ResultCache::Stored::kStored) ++inserts;
      if (++writes % 4096 == 0) cache->flush();  // empties under the readers too, now and then
    }
  }
  const std::uint64_t evictions = cache.counters->evictions.load() - evictions_before;

  ReaderReport total;
  for (const Child& child : children) {
    ReaderReport report;
    ASSERT_EQ(::read(child.pipe_read, &report, sizeof report), static_cast<ssize_t>(sizeof report));
    ::close(child.pipe_read);
    int status = 0;
    ASSERT_EQ(::waitpid(child.pid, &status, 0), child.pid);
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    total.lookups += report.lookups;
    total.hits += report.hits;
    total.wrong += report.wrong;
  }
  std::printf("stress: %llu lookups, %llu hits, %llu wrong; %llu inserts and %llu evictions during the run\n",
              static_cast<unsigned long long>(total.lookups), static_cast<unsigned long long>(total.hits),
              static_cast<unsigned long long>(total.wrong), static_cast<unsigned long long>(inserts),
              static_cast<unsigned long long>(evictions));
  EXPECT_EQ(total.wrong, 0u);
  // Not vacuous: every reader checked its hits while the writer replaced entries under it.
  EXPECT_EQ(total.hits, kHitsPerReader * kReaders);
  EXPECT_GE(evictions, kMinEvictions);
  EXPECT_EQ(cache->check_invariants(), "");
}

}  // namespace
}  // namespace sidecar
