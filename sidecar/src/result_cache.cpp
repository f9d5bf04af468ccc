#include "result_cache.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <boost/interprocess/mem_algo/rbtree_best_fit.hpp>
#include <boost/interprocess/sync/mutex_family.hpp>
#include <cerrno>
#include <cstring>
#include <stdexcept>


namespace sidecar {

namespace bip = boost::interprocess;

// Boost's best-fit algorithm placed at the start of the heap, its bookkeeping inside the heap.
struct ResultCache::Heap {
  static_assert(bip::rbtree_best_fit<bip::null_mutex_family>::Alignment % kCacheRecordAlignment == 0);
  using Algorithm = bip::rbtree_best_fit<bip::null_mutex_family>;
  Algorithm* algorithm = nullptr;
  // Plain allocate: 16-byte aligned is enough for the records, and allocate_aligned(64) costs
  // several times more per insert (docs/benchmarks.md, "The result cache").
  void* allocate(std::uint64_t bytes) { return algorithm->allocate(bytes); }
  void deallocate(void* block) { algorithm->deallocate(block); }
  std::uint64_t free_bytes() const { return algorithm->get_free_memory(); }
  bool check_sanity() { return algorithm->check_sanity(); }
};

namespace {

// The seqlock's write side: readers that saw `sequence` before begin_write() fail their final check.
// The fence keeps the odd store ahead of every store that follows; x86-64 does not reorder stores,
// so a reader that sees any of them also sees the odd sequence.
void begin_write(CacheSlot& slot) {
  slot.sequence.store(slot.sequence.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_release);
}
void end_write(CacheSlot& slot) {
  slot.sequence.store(slot.sequence.load(std::memory_order_relaxed) + 1, std::memory_order_release);
}

}  // namespace

Result<std::unique_ptr<ResultCache>> ResultCache::create(const CacheSettings& settings, CacheCounters& counters) {
  if (settings.budget_bytes < kCacheMinimumBytes) {
    return Error{ErrorCode::kInvalidArgument, "cache budget of " + std::to_string(settings.budget_bytes) +
                                                  " bytes is below the minimum of " +
                                                  std::to_string(kCacheMinimumBytes)};
  }
  const CacheGeometry geometry = CacheGeometry::compute(settings.budget_bytes);
  std::unique_ptr<ResultCache> cache(new ResultCache);
  // Committed and faulted in at once: the memory a cache of this size needs is known (and refused
  // clearly when missing) at start, and no miss pays a page fault to store its result.
  Result<OwnedMemory> memory = create_committed_memory("sidecar-cache", geometry.segment_bytes);
  if (!memory.ok()) return Error{memory.code(), "result cache: " + memory.message()};
  cache->memory_ = std::move(*memory);
  cache->counters_ = &counters;
  std::uint8_t* base = cache->memory_.mapping.base();

  auto* header = new (base) CacheHeader;
  header->protocol_version = kProtocolVersion;
  header->header_bytes = sizeof(CacheHeader);
  header->segment_bytes = geometry.segment_bytes;
  header->bucket_count = geometry.bucket_count;
  header->ways = kCacheWays;
  header->tags_offset = geometry.tags_offset;
  header->slots_offset = geometry.slots_offset;
  header->heap_offset = geometry.heap_offset;
  header->heap_bytes = geometry.heap_bytes;
  const std::uint64_t default_cap = settings.budget_bytes / 8;
  header->max_entry_bytes =
      std::min(settings.max_entry_bytes ? settings.max_entry_bytes : default_cap, geometry.heap_bytes);
  header->generation.store(1, std::memory_order_relaxed);
  counters.generation.store(1, std::memory_order_relaxed);
  counters.max_entry_bytes.store(header->max_entry_bytes, std::memory_order_relaxed);
  cache->header_ = header;
  cache->tags_ = reinterpret_cast<CacheTags*>(base + geometry.tags_offset);
  for (std::uint32_t i = 0; i < geometry.bucket_count; ++i) new (&cache->tags_[i]) CacheTags{};
  cache->slots_ = reinterpret_cast<CacheSlot*>(base + geometry.slots_offset);
  for (std::uint64_t i = 0; i < geometry.slot_count(); ++i) new (&cache->slots_[i]) CacheSlot{};
  cache->heap_base_ = base + geometry.heap_offset;
  cache->heap_ = std::make_unique<Heap>();
  cache->heap_->algorithm = new (cache->heap_base_) Heap::Algorithm(geometry.heap_bytes, 0);

  const auto slots = static_cast<std::size_t>(geometry.slot_count());
  cache->records_.assign(slots, nullptr);
  cache->warmer_.assign(slots, kNone);
  cache->colder_.assign(slots, kNone);
  cache->last_use_.assign(slots, 0);
  cache->publish_usage();
  header->magic.store(kCacheMagic, std::memory_order_release);
  // From here on only the mapping above can write the cache.
  if (Done sealed = add_seals(cache->fd(), kReadOnlySeals); !sealed.ok()) return sealed.error();
  cache->view_ = CacheView(base);
  return cache;
}

// Lookups in mappings clients still hold miss from now on.
ResultCache::~ResultCache() {
  if (header_ != nullptr) close();
}

std::uint64_t ResultCache::record_bytes(std::span<const TensorBytes> inputs, std::span<const TensorBytes> outputs) {
  std::uint64_t total =
      cache_record_table_bytes(static_cast<std::uint32_t>(inputs.size()), static_cast<std::uint32_t>(outputs.size()));
  for (const TensorBytes& tensor : inputs) total = align_up(total, kTensorAlignment) + tensor.bytes;
  for (const TensorBytes& tensor : outputs) total = align_up(total, kTensorAlignment) + tensor.bytes;
  return total;
}

ResultCache::Stored ResultCache::insert(const CacheKey& key, std::uint64_t generation,
                                        std::span<const TensorBytes> inputs, std::span<const TensorBytes> outputs) {
  const std::uint64_t bytes = record_bytes(inputs, outputs);
  std::lock_guard lock(mutex_);
  if (generation == 0 || generation != header_->generation.load(std::memory_order_relaxed)) {
    return Stored::kStaleGeneration;
  }
  if (bytes > header_->max_entry_bytes || inputs.size() > kMaxTensors || outputs.size() > kMaxTensors) {
    bump(counters_->too_large);
    return Stored::kTooLarge;
  }
  const std::uint32_t bucket = view_.bucket_of(key);
  for (std::uint32_t way = 0; way < kCacheWays; ++way) {
    const std::uint32_t slot = bucket * kCacheWays + way;
    if (tags_[bucket].key_low[way].load(std::memory_order_relaxed) != key.low) continue;
    const CacheSlot& shared = slots_[slot];
    if (in_use(slot) && shared.key_low.load(std::memory_order_relaxed) == key.low &&
        shared.key_high.load(std::memory_order_relaxed) == key.high &&
        shared.generation.load(std::memory_order_relaxed) == generation) {
      // Two workers computed the same result: keep the first. (Keys stay unique per bucket, which
      // lets readers stop at the first key match.)
      return Stored::kAlreadyPresent;
    }
  }

  const std::uint32_t slot = choose_way(bucket);
  if (in_use(slot)) evict(slot);
  std::uint8_t* record = nullptr;
  while ((record = static_cast<std::uint8_t*>(heap_->allocate(bytes))) == nullptr) {
    if (coldest_ == kNone) {
      // Nothing left to evict and still no block: the entry is larger than the heap can hold.
      bump(counters_->too_large);
      publish_usage();
      return Stored::kTooLarge;
    }
    evict(coldest_);
  }

  // The block is unreachable from every slot (a slot is emptied before its block is freed), so it
  // can be written before the slot points at it.
  CacheRecordHeader record_header{};
  record_header.input_count = static_cast<std::uint32_t>(inputs.size());
  record_header.output_count = static_cast<std::uint32_t>(outputs.size());
  std::memcpy(record, &record_header, sizeof record_header);
  auto* table = reinterpret_cast<CacheTensor*>(record + sizeof record_header);
  std::uint64_t cursor = cache_record_table_bytes(record_header.input_count, record_header.output_count);
  std::size_t index = 0;
  for (auto group : {inputs, outputs}) {
    for (const TensorBytes& tensor : group) {
      cursor = align_up(cursor, kTensorAlignment);
      CacheTensor entry{};
      entry.shape.dtype = tensor.shape.dtype;
      entry.shape.rank = tensor.shape.rank;
      std::copy(tensor.shape.dims, tensor.shape.dims + std::min<std::uint32_t>(tensor.shape.rank, kMaxRank),
                entry.shape.dims);
      entry.offset = cursor;
      entry.bytes = tensor.bytes;
      std::memcpy(&table[index++], &entry, sizeof entry);
      if (tensor.bytes) std::memcpy(record + cursor, tensor.data, tensor.bytes);
      cursor += tensor.bytes;
    }
  }

  CacheSlot& shared = slots_[slot];
  begin_write(shared);
  shared.key_low.store(key.low, std::memory_order_relaxed);
  shared.key_high.store(key.high, std::memory_order_relaxed);
  shared.generation.store(generation, std::memory_order_relaxed);
  shared.record_offset.store(static_cast<std::uint64_t>(record - heap_base_), std::memory_order_relaxed);
  shared.record_bytes.store(bytes, std::memory_order_relaxed);
  end_write(shared);
  tags_[bucket].key_low[slot % kCacheWays].store(key.low, std::memory_order_relaxed);

  records_[slot] = record;
  link_warmest(slot);
  ++entries_;
  bump(counters_->inserts);
  publish_usage();
  return Stored::kStored;
}

void ResultCache::touch(std::uint32_t slot, std::uint64_t sequence) {
  std::lock_guard lock(mutex_);
  if (slot >= records_.size() || !in_use(slot)) return;
  if (slots_[slot].sequence.load(std::memory_order_relaxed) != sequence) return;
  unlink(slot);
  link_warmest(slot);
}

ResultCache::Flushed ResultCache::flush() {
  std::lock_guard lock(mutex_);
  Flushed flushed;
  flushed.entries = entries_;
  flushed.bytes = counters_->bytes_used.load(std::memory_order_relaxed) - header_->heap_offset;
  // A new generation first: lookups racing the flush miss instead of finding what is being removed.
  const std::uint64_t generation = header_->generation.load(std::memory_order_relaxed);
  if (generation != 0) {
    header_->generation.store(generation + 1, std::memory_order_release);
    counters_->generation.store(generation + 1, std::memory_order_relaxed);
  }
  while (coldest_ != kNone) evict(coldest_);
  bump(counters_->flushes);
  publish_usage();
  return flushed;
}

void ResultCache::close() {
  std::lock_guard lock(mutex_);
  header_->generation.store(0, std::memory_order_release);
  counters_->generation.store(0, std::memory_order_relaxed);
}

// The way to store into: a free one, else the bucket's least recently used.
std::uint32_t ResultCache::choose_way(std::uint32_t bucket) {
  std::uint32_t victim = bucket * kCacheWays;
  for (std::uint32_t way = 0; way < kCacheWays; ++way) {
    const std::uint32_t slot = bucket * kCacheWays + way;
    if (!in_use(slot)) return slot;
    if (last_use_[slot] < last_use_[victim]) victim = slot;
  }
  return victim;
}

void ResultCache::evict(std::uint32_t slot) {
  CacheSlot& shared = slots_[slot];
  // Empty the slot before its block is freed: a reader still copying from the block then fails its
  // sequence check, whatever the allocator writes there next.
  begin_write(shared);
  shared.generation.store(0, std::memory_order_relaxed);
  shared.key_low.store(0, std::memory_order_relaxed);
  shared.key_high.store(0, std::memory_order_relaxed);
  shared.record_offset.store(0, std::memory_order_relaxed);
  shared.record_bytes.store(0, std::memory_order_relaxed);
  end_write(shared);
  tags_[slot / kCacheWays].key_low[slot % kCacheWays].store(0, std::memory_order_relaxed);
  heap_->deallocate(records_[slot]);
  records_[slot] = nullptr;
  unlink(slot);
  --entries_;
  bump(counters_->evictions);
}

void ResultCache::link_warmest(std::uint32_t slot) {
  colder_[slot] = warmest_;
  warmer_[slot] = kNone;
  if (warmest_ != kNone) warmer_[warmest_] = slot;
  warmest_ = slot;
  if (coldest_ == kNone) coldest_ = slot;
  last_use_[slot] = ++use_clock_;
}

void ResultCache::unlink(std::uint32_t slot) {
  const std::uint32_t warmer = warmer_[slot];
  const std::uint32_t colder = colder_[slot];
  if (warmer != kNone)
    colder_[warmer] = colder;
  else
    warmest_ = colder;
  if (colder != kNone)
    warmer_[colder] = warmer;
  else
    coldest_ = warmer;
  warmer_[slot] = colder_[slot] = kNone;
}

void ResultCache::publish_usage() {
  counters_->entries.store(entries_, std::memory_order_relaxed);
  const std::uint64_t heap_used = header_->heap_bytes - heap_->free_bytes();
  counters_->bytes_used.store(header_->heap_offset + heap_used, std::memory_order_relaxed);
}

std::string ResultCache::check_invariants() {
  std::lock_guard lock(mutex_);
  std::uint64_t listed = 0;
  std::uint32_t previous = kNone;
  for (std::uint32_t slot = warmest_; slot != kNone; slot = colder_[slot]) {
    if (warmer_[slot] != previous) return "recency list broken at slot " + std::to_string(slot);
    if (!in_use(slot)) return "free slot " + std::to_string(slot) + " on the recency list";
    if (++listed > records_.size()) return "recency list has a cycle";
    previous = slot;
  }
  if (previous != coldest_) return "coldest end of the recency list is wrong";
  std::uint64_t used = 0;
  for (std::uint32_t slot = 0; slot < records_.size(); ++slot) {
    const CacheSlot& shared = slots_[slot];
    if (shared.sequence.load() & 1) return "slot " + std::to_string(slot) + " left mid-write";
    if (!in_use(slot)) {
      if (shared.generation.load() != 0) return "free slot " + std::to_string(slot) + " still has a generation";
      if (tags_[slot / kCacheWays].key_low[slot % kCacheWays].load() != 0)
        return "free slot " + std::to_string(slot) + " still has a tag";
      continue;
    }
    if (tags_[slot / kCacheWays].key_low[slot % kCacheWays].load() != shared.key_low.load())
      return "slot " + std::to_string(slot) + " has a tag that is not its key";
    ++used;
    const std::uint64_t offset = shared.record_offset.load();
    const std::uint64_t bytes = shared.record_bytes.load();
    if (records_[slot] != heap_base_ + offset) return "slot " + std::to_string(slot) + " points elsewhere";
    if (offset % kCacheRecordAlignment != 0 || offset + bytes > header_->heap_bytes)
      return "slot " + std::to_string(slot) + " record out of the heap or misaligned";
  }
  if (used != entries_ || used != listed) return "entry count disagrees with the slots";
  if (!heap_->check_sanity()) return "the heap allocator's structures are inconsistent";
  if (counters_->bytes_used.load() > header_->segment_bytes) return "bytes used exceed the budget";
  return {};
}

}  // namespace sidecar
