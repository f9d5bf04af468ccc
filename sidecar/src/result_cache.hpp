// The writer of the result cache (see shared/.../cache_layout.hpp for the layout and the protocol
// readers follow). Only the sidecar writes, under one private mutex; readers never take it.
//
// Space: the heap is managed by Boost.Interprocess's best-fit allocator (rbtree_best_fit, no
// mutex: ours serialises), whose own bookkeeping lives inside the heap, so it counts against the
// budget like everything else. Eviction is least-recently-used: the recency list is private to the
// sidecar, fed by its own hits and by the hits clients report through their channels' hit logs.
// An insert that needs room evicts from the cold end until the allocator finds a block; an insert
// into a full bucket evicts that bucket's least recently used way.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "sidecar/shared/cache_reader.hpp"
#include "committed_memory.hpp"
#include "sidecar/shared/memfd.hpp"

namespace sidecar {

struct CacheSettings {
  std::uint64_t budget_bytes = 0;     // the whole memfd; >= kCacheMinimumBytes
  std::uint64_t max_entry_bytes = 0;  // 0: an eighth of the budget
};

class ResultCache {
 public:
  // A cache in a new memfd of exactly the budget, its memory committed, sealed so that every other
  // mapping of it is read-only. Its statistics go to `counters` (the status page's). Errors:
  // kInvalidArgument for a budget below the minimum, kOutOfMemory when the memory is not there.
  static Result<std::unique_ptr<ResultCache>> create(const CacheSettings& settings, CacheCounters& counters);
  ~ResultCache();
  ResultCache(const ResultCache&) = delete;
  ResultCache& operator=(const ResultCache&) = delete;

  const CacheView& view() const noexcept { return view_; }
  std::uint64_t generation() const noexcept { return view_.generation(); }
  std::uint64_t max_entry_bytes() const noexcept { return header_->max_entry_bytes; }
  // The memfd to hand to clients (read-only for them by its seals), and its size.
  int fd() const noexcept { return memory_.fd.get(); }
  std::uint64_t bytes() const noexcept { return memory_.mapping.size(); }

  // Bytes an entry with `input_count` inputs of `input_bytes` in all leaves for its outputs under
  // the size cap (allowing for the largest table and every tensor's alignment); 0 when the inputs
  // alone reach it.
  std::uint64_t output_room(std::uint64_t input_bytes, std::uint32_t input_count) const noexcept {
    const std::uint64_t overhead =
        cache_record_table_bytes(input_count, kMaxTensors) + kTensorAlignment * (input_count + kMaxTensors);
    const std::uint64_t cap = max_entry_bytes();
    return input_bytes + overhead >= cap ? 0 : cap - input_bytes - overhead;
  }

  // Bytes an entry with these tensors takes in the heap (before the allocator's own overhead).
  static std::uint64_t record_bytes(std::span<const TensorBytes> inputs, std::span<const TensorBytes> outputs);

  enum class Stored { kStored, kAlreadyPresent, kTooLarge, kStaleGeneration };
  // Stores a result computed from `inputs` under `key`, which was computed with `generation`.
  // A result from before a flush (an older generation) is dropped.
  Stored insert(const CacheKey& key, std::uint64_t generation, std::span<const TensorBytes> inputs,
                std::span<const TensorBytes> outputs);

  // A hit on `slot` as it was at `sequence`: moves the entry to the warm end. Reports about an
  // entry replaced since, or about slots that do not exist, are ignored.
  void touch(std::uint32_t slot, std::uint64_t sequence);

  struct Flushed {
    std::uint64_t entries = 0;
    std::uint64_t bytes = 0;
  };
  // Empties the cache and moves to a new generation (on a model change, or on request).
  Flushed flush();
  // From now on every lookup misses (the sidecar is stopping).
  void close();

  void count_sidecar_hit() noexcept { bump(counters_->sidecar_hits); }
  void count_miss() noexcept { bump(counters_->misses); }
  void count_too_large() noexcept { bump(counters_->too_large); }
  void set_client_hits(std::uint64_t total) noexcept { counters_->client_hits.store(total, std::memory_order_relaxed); }

  // Consistency of the private bookkeeping with the segment, for tests: "" or what is wrong.
  std::string check_invariants();

 private:
  struct Heap;
  static constexpr std::uint32_t kNone = ~0u;

  ResultCache() = default;
  static void bump(std::atomic<std::uint64_t>& counter) noexcept { counter.fetch_add(1, std::memory_order_relaxed); }
  bool in_use(std::uint32_t slot) const noexcept { return records_[slot] != nullptr; }
  void evict(std::uint32_t slot);
  std::uint32_t choose_way(std::uint32_t bucket);
  void link_warmest(std::uint32_t slot);
  void unlink(std::uint32_t slot);
  void publish_usage();

  std::mutex mutex_;
  OwnedMemory memory_;
  CacheHeader* header_ = nullptr;
  CacheCounters* counters_ = nullptr;
  CacheTags* tags_ = nullptr;
  CacheSlot* slots_ = nullptr;
  std::uint8_t* heap_base_ = nullptr;
  std::unique_ptr<Heap> heap_;
  CacheView view_;

  // Private bookkeeping, one element per slot: the record's address (nullptr when the slot is
  // free), the recency list (doubly linked through slot numbers), and a use stamp that picks the
  // victim within a full bucket.
  std::vector<std::uint8_t*> records_;
  std::vector<std::uint32_t> warmer_;
  std::vector<std::uint32_t> colder_;
  std::vector<std::uint64_t> last_use_;
  std::uint32_t warmest_ = kNone;
  std::uint32_t coldest_ = kNone;
  std::uint64_t use_clock_ = 0;
  std::uint64_t entries_ = 0;
};

}  // namespace sidecar
