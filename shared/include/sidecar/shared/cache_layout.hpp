// The shared-memory layout of a sidecar's result cache.
//
// One memfd per sidecar, exactly --cache-bytes long, its memory committed at start: the budget
// bounds everything the cache holds, its metadata included, because nothing of it lives elsewhere
// (its statistics are on the status page).
//
//   [CacheHeader][CacheTags x buckets][CacheSlot x buckets x ways][heap]
//
// The sidecar is the only writer: the memfd is sealed with F_SEAL_FUTURE_WRITE once the sidecar has
// mapped it, so every other mapping is read-only, enforced by the kernel. Clients of a shared-scope
// cache map it and look their inputs up themselves, so a hit costs no round trip and wakes nobody. Slots form a set-associative table: a
// key's bucket is fixed by its hash, and the entry may sit in any of the bucket's ways. A slot
// points at a record in the heap holding the entry's input tensors (compared byte for byte on a hash
// match) and its output tensors.
//
// Each bucket also has a line of tags, the low word of each way's key, so that a lookup that misses
// reads one cache line instead of eight. Tags are only hints: a matching tag leads to the slot,
// which decides.
//
// Readers never block the writer: every slot carries a sequence number (a seqlock). The sidecar
// makes it odd before it changes or frees anything the slot refers to and even again afterwards;
// a reader copies what it needs, then checks that the sequence did not move. Everything a reader
// follows (offsets, counts, sizes) is bounds-checked before use, because a reader racing the writer
// can see any mix of old and new values until that final check.
#pragma once

#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>

#include "sidecar/shared/descriptors.hpp"
#include "sidecar/shared/spsc_ring.hpp"

namespace sidecar {

inline constexpr std::uint64_t kCacheMagic = 0x4843414345444953ull;  // "SIDECACH", little-endian
inline constexpr std::uint32_t kCacheWays = 8;
// One slot (64 bytes, plus 8 of tags) per this many bytes of budget: metadata stays under 1/50 of
// the budget, and the budget fills with entries of about this size or larger before slots run out.
inline constexpr std::uint64_t kCacheBytesPerSlot = 4096;
inline constexpr std::uint64_t kCacheMinimumBytes = 64 * 1024;
inline constexpr std::uint64_t kCacheHeapAlignment = 64;
// Records are where the heap's allocator puts them (16-byte aligned); tensor bytes inside a record
// sit at kTensorAlignment from its start. Only compared and copied, they need no more.
inline constexpr std::uint64_t kCacheRecordAlignment = 16;

struct alignas(kCacheLine) CacheSlot {
  std::atomic<std::uint64_t> sequence;  // odd while the sidecar rewrites this slot or its record
  std::atomic<std::uint64_t> key_low;
  std::atomic<std::uint64_t> key_high;
  std::atomic<std::uint64_t> generation;     // the cache generation it was stored under; 0 = empty
  std::atomic<std::uint64_t> record_offset;  // from the start of the heap
  std::atomic<std::uint64_t> record_bytes;
  std::uint64_t reserved[2];
};
static_assert(sizeof(CacheSlot) == kCacheLine);
static_assert(std::atomic<std::uint64_t>::is_always_lock_free);

struct alignas(kCacheLine) CacheTags {
  std::atomic<std::uint64_t> key_low[kCacheWays];
};
static_assert(sizeof(CacheTags) == kCacheLine);

// A tensor stored in a record: its bytes at [offset, offset + bytes) from the record's start.
struct CacheTensor {
  TensorShape shape;
  std::uint64_t offset;
  std::uint64_t bytes;
};
static_assert(sizeof(CacheTensor) == 88);

// The start of a record; input_count + output_count CacheTensors follow it, then the tensor bytes,
// each at kTensorAlignment from the record's start.
struct CacheRecordHeader {
  std::uint32_t input_count;
  std::uint32_t output_count;
  std::uint64_t reserved;
};
static_assert(sizeof(CacheRecordHeader) == 16);

constexpr std::uint64_t cache_record_table_bytes(std::uint32_t input_count, std::uint32_t output_count) {
  return sizeof(CacheRecordHeader) + sizeof(CacheTensor) * (input_count + output_count);
}

// Statistics, written by the sidecar only (client-side hits are folded in from the channels). They
// live on the status page.
struct CacheCounters {
  std::atomic<std::uint64_t> entries;
  std::atomic<std::uint64_t> bytes_used;  // metadata + heap in use, never above segment_bytes
  std::atomic<std::uint64_t> sidecar_hits;
  std::atomic<std::uint64_t> client_hits;
  std::atomic<std::uint64_t> misses;
  std::atomic<std::uint64_t> inserts;
  std::atomic<std::uint64_t> evictions;
  std::atomic<std::uint64_t> too_large;  // results not cached because their entry exceeds max_entry_bytes
  std::atomic<std::uint64_t> flushes;
  // Copies of the cache header's generation and entry cap, for whoever does not map the cache.
  std::atomic<std::uint64_t> generation;
  std::atomic<std::uint64_t> max_entry_bytes;
};

struct alignas(kCacheLine) CacheHeader {
  // Written once at creation; `magic` last, with release.
  std::atomic<std::uint64_t> magic;
  std::uint32_t protocol_version;
  std::uint32_t header_bytes;   // sizeof(CacheHeader)
  std::uint64_t segment_bytes;  // the budget
  std::uint32_t bucket_count;   // a power of two
  std::uint32_t ways;
  std::uint64_t tags_offset;
  std::uint64_t slots_offset;
  std::uint64_t heap_offset;
  std::uint64_t heap_bytes;
  std::uint64_t max_entry_bytes;  // larger entries are not cached
  std::uint64_t reserved0[3];

  // The generation of the cached results. It is part of every key, so results of an earlier
  // generation can never be found; it changes whenever the cache is emptied (model change, flush).
  // 0: closed (the sidecar is stopping); every lookup misses.
  alignas(kCacheLine) std::atomic<std::uint64_t> generation;
};
static_assert(std::is_standard_layout_v<CacheHeader>);
static_assert(sizeof(CacheHeader) % kCacheLine == 0);

// Where everything is, from the budget alone. The sidecar uses its own result; a client recomputes
// it from the header and refuses a header that disagrees.
struct CacheGeometry {
  std::uint64_t segment_bytes = 0;
  std::uint32_t bucket_count = 0;
  std::uint64_t tags_offset = 0;
  std::uint64_t slots_offset = 0;
  std::uint64_t heap_offset = 0;
  std::uint64_t heap_bytes = 0;

  // The budget must be at least kCacheMinimumBytes (callers check).
  static constexpr CacheGeometry compute(std::uint64_t budget_bytes) {
    CacheGeometry g;
    g.segment_bytes = budget_bytes;
    const std::uint64_t wanted_buckets = budget_bytes / kCacheBytesPerSlot / kCacheWays;
    g.bucket_count = static_cast<std::uint32_t>(std::bit_floor(wanted_buckets < 1            ? 1
                                                               : wanted_buckets > (1u << 24) ? (1u << 24)
                                                                                             : wanted_buckets));
    g.tags_offset = align_up(sizeof(CacheHeader), kCacheLine);
    g.slots_offset = g.tags_offset + sizeof(CacheTags) * g.bucket_count;
    g.heap_offset = align_up(g.slots_offset + sizeof(CacheSlot) * g.slot_count(), kCacheHeapAlignment);
    g.heap_bytes = budget_bytes > g.heap_offset ? budget_bytes - g.heap_offset : 0;
    return g;
  }

  constexpr std::uint64_t slot_count() const noexcept { return std::uint64_t{bucket_count} * kCacheWays; }
  constexpr std::uint64_t metadata_bytes() const noexcept { return heap_offset; }
};

}  // namespace sidecar
