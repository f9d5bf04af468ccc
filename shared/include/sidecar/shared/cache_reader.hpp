// Reading the result cache: the key of a request, and the lookup both sides use (a client in its
// read-only mapping, the sidecar when a client leaves the lookup to it). See cache_layout.hpp.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstring>
#include <optional>
#include <span>
#include <string>

#include "sidecar/shared/cache_layout.hpp"
#include "sidecar/shared/descriptor_check.hpp"
#include "sidecar/shared/error.hpp"
#include "sidecar/shared/output_region.hpp"
#include "sidecar/shared/signature.hpp"

// xxHash from Debian's libxxhash, through its runtime dispatch (xxh_x86dispatch.h maps the XXH3
// calls to variants that pick AVX2 when the CPU has it): the SSE2 baseline that the plain entry
// points and an -O2 inline build use hashes a large input several times slower
// (docs/benchmarks.md, "The result cache").
#define XXH_STATIC_LINKING_ONLY  // XXH3_state_t on the stack
#include <xxh_x86dispatch.h>
#include <xxhash.h>

namespace sidecar {

struct CacheKey {
  std::uint64_t low = 0;
  std::uint64_t high = 0;
  friend bool operator==(const CacheKey&, const CacheKey&) = default;
};

// A tensor's dtype, shape and bytes, wherever they are: an input as a key sees it, or an output to store.
struct TensorBytes {
  TensorShape shape;
  const void* data = nullptr;
  std::uint64_t bytes = 0;
};

// Who may share an entry: kSharedScope for everyone, or per_user_scope(uid) to keep each user's
// entries to that user (the sidecar takes the uid from the kernel, never from the client).
inline constexpr std::uint64_t kSharedScope = 0;
constexpr std::uint64_t per_user_scope(std::uint32_t uid) noexcept { return std::uint64_t{uid} + 1; }

// XXH3-128 over the generation, the scope, each input's dtype and dims (only the used ones:
// reserved fields and dims past the rank are not part of an input's identity) and then every input
// byte.
inline CacheKey compute_cache_key(std::uint64_t generation, std::uint64_t scope, std::span<const TensorBytes> inputs) {
  // generation, scope, count, then per input: dtype, rank, dims.
  std::uint8_t prefix[24 + kMaxTensors * (8 + 8 * kMaxRank)];
  std::size_t used = 0;
  auto put = [&](const void* bytes, std::size_t size) {
    std::memcpy(prefix + used, bytes, size);
    used += size;
  };
  const std::uint64_t count = std::min<std::uint64_t>(inputs.size(), kMaxTensors);
  put(&generation, 8);
  put(&scope, 8);
  put(&count, 8);
  for (std::size_t i = 0; i < count; ++i) {
    const TensorShape& shape = inputs[i].shape;
    const std::uint64_t kind = std::uint64_t{shape.dtype} | std::uint64_t{shape.rank} << 8;
    put(&kind, 8);
    put(shape.dims, 8 * std::min<std::uint32_t>(shape.rank, kMaxRank));
  }
  XXH3_state_t state;
  XXH3_128bits_reset(&state);
  XXH3_128bits_update(&state, prefix, used);
  for (std::size_t i = 0; i < count; ++i) XXH3_128bits_update(&state, inputs[i].data, inputs[i].bytes);
  const XXH128_hash_t hash = XXH3_128bits_digest(&state);
  return CacheKey{hash.low64, hash.high64};
}

// Whether a mapped cache of `size` bytes can be read by this build: magic, version, and a geometry
// that matches both the formula and the mapped size.
inline Done check_cache_layout(const std::uint8_t* base, std::uint64_t size) {
  if (size < sizeof(CacheHeader)) return {ErrorCode::kProtocolError, "the result cache is smaller than its header"};
  const auto& header = *reinterpret_cast<const CacheHeader*>(base);
  if (header.magic.load(std::memory_order_acquire) != kCacheMagic) {
    return {ErrorCode::kProtocolError, "the result cache has a bad magic"};
  }
  if (header.protocol_version != kProtocolVersion) {
    return {ErrorCode::kVersionMismatch, "the sidecar's result cache speaks protocol version " +
                                             std::to_string(header.protocol_version) + ", this client speaks version " +
                                             std::to_string(kProtocolVersion) + "; upgrade the older side"};
  }
  if (header.segment_bytes < kCacheMinimumBytes) {
    return {ErrorCode::kProtocolError, "the result cache has an impossible size"};
  }
  const CacheGeometry geometry = CacheGeometry::compute(header.segment_bytes);
  if (header.header_bytes != sizeof(CacheHeader) || header.ways != kCacheWays ||
      header.bucket_count != geometry.bucket_count || header.tags_offset != geometry.tags_offset ||
      header.slots_offset != geometry.slots_offset || header.heap_offset != geometry.heap_offset ||
      header.heap_bytes != geometry.heap_bytes || header.segment_bytes != size) {
    return {ErrorCode::kProtocolError, "the result cache has an inconsistent geometry"};
  }
  return {};
}

// A hit: which slot, and its sequence when read (for the recency report to the sidecar).
struct CacheHit {
  std::uint32_t slot = 0;
  std::uint64_t sequence = 0;
};

// The read side of a cache, valid while its mapping is. Construct only over a mapping that passed
// check_cache_layout. Lookups are lock-free and never write to the segment.
class CacheView {
 public:
  CacheView() = default;
  explicit CacheView(const std::uint8_t* base) noexcept
      : header_(reinterpret_cast<const CacheHeader*>(base)),
        tags_(reinterpret_cast<const CacheTags*>(base + header_->tags_offset)),
        slots_(reinterpret_cast<const CacheSlot*>(base + header_->slots_offset)),
        heap_(base + header_->heap_offset),
        heap_bytes_(header_->heap_bytes),
        bucket_mask_(header_->bucket_count - 1) {}

  bool attached() const noexcept { return header_ != nullptr; }
  const CacheHeader& header() const noexcept { return *header_; }
  // 0 when the cache is closed.
  std::uint64_t generation() const noexcept { return header_->generation.load(std::memory_order_acquire); }
  std::uint32_t bucket_of(const CacheKey& key) const noexcept {
    return static_cast<std::uint32_t>(key.low) & bucket_mask_;
  }

  // Looks `inputs` up under `key` (computed with `generation`). On a hash match it compares the
  // stored dtypes, shapes and bytes with the inputs, asks `destination` where to put the outputs,
  // copies them there, and returns the hit only if the slot did not change meanwhile. A nullopt
  // means a miss; `destination` may then hold partial bytes, which the caller must not use.
  //
  // destination: bool(std::uint32_t count, const CacheTensor* outputs, std::uint8_t** where)
  // fills where[0..count) with room for each output's bytes, or returns false (no room: a miss).
  template <typename Destination>
  std::optional<CacheHit> lookup(const CacheKey& key, std::uint64_t generation, std::span<const TensorBytes> inputs,
                                 Destination&& destination) const {
    if (generation == 0 || inputs.size() > kMaxTensors) return std::nullopt;
    const std::uint32_t bucket = bucket_of(key);
    const std::uint32_t first = bucket * kCacheWays;
    const CacheTags& tags = tags_[bucket];
    for (std::uint32_t way = 0; way < kCacheWays; ++way) {
      if (tags.key_low[way].load(std::memory_order_relaxed) != key.low) continue;
      const CacheSlot& slot = slots_[first + way];
      const std::uint64_t sequence = slot.sequence.load(std::memory_order_acquire);
      if (sequence & 1) continue;
      if (slot.key_low.load(std::memory_order_relaxed) != key.low ||
          slot.key_high.load(std::memory_order_relaxed) != key.high ||
          slot.generation.load(std::memory_order_relaxed) != generation) {
        continue;
      }
      const std::uint64_t offset = slot.record_offset.load(std::memory_order_relaxed);
      const std::uint64_t bytes = slot.record_bytes.load(std::memory_order_relaxed);
      if (copy_if_same(offset, bytes, inputs, destination) && unchanged(slot, sequence)) {
        return CacheHit{first + way, sequence};
      }
      // Keys are unique per bucket: a record that differs or changed underneath is a miss.
      return std::nullopt;
    }
    return std::nullopt;
  }

 private:
  static bool unchanged(const CacheSlot& slot, std::uint64_t sequence) noexcept {
    std::atomic_thread_fence(std::memory_order_acquire);
    return slot.sequence.load(std::memory_order_relaxed) == sequence;
  }

  // Compares the record's inputs and copies its outputs out, trusting nothing in it: the writer may
  // be rewriting it, so every count and offset is checked before it is followed.
  template <typename Destination>
  bool copy_if_same(std::uint64_t offset, std::uint64_t bytes, std::span<const TensorBytes> inputs,
                    Destination& destination) const {
    if (offset > heap_bytes_ || bytes > heap_bytes_ - offset || bytes < sizeof(CacheRecordHeader)) return false;
    const std::uint8_t* record = heap_ + offset;
    CacheRecordHeader header;
    std::memcpy(&header, record, sizeof header);
    if (header.input_count != inputs.size() || header.output_count > kMaxTensors) return false;
    if (cache_record_table_bytes(header.input_count, header.output_count) > bytes) return false;
    CacheTensor tensors[2 * kMaxTensors];
    std::memcpy(tensors, record + sizeof header, sizeof(CacheTensor) * (header.input_count + header.output_count));
    for (std::uint32_t i = 0; i < header.input_count + header.output_count; ++i) {
      if (tensors[i].offset > bytes || tensors[i].bytes > bytes - tensors[i].offset) return false;
    }
    for (std::uint32_t i = 0; i < header.input_count; ++i) {
      if (!same_shape(tensors[i].shape, inputs[i].shape) || tensors[i].bytes != inputs[i].bytes) return false;
      if (std::memcmp(record + tensors[i].offset, inputs[i].data, inputs[i].bytes) != 0) return false;
    }
    const CacheTensor* outputs = tensors + header.input_count;
    for (std::uint32_t i = 0; i < header.output_count; ++i) {
      std::uint64_t expected = 0;
      if (!shape_byte_size(outputs[i].shape, expected) || expected != outputs[i].bytes) return false;
    }
    std::uint8_t* where[kMaxTensors] = {};
    if (!destination(header.output_count, outputs, where)) return false;
    for (std::uint32_t i = 0; i < header.output_count; ++i) {
      std::memcpy(where[i], record + outputs[i].offset, outputs[i].bytes);
    }
    return true;
  }

  const CacheHeader* header_ = nullptr;
  const CacheTags* tags_ = nullptr;
  const CacheSlot* slots_ = nullptr;
  const std::uint8_t* heap_ = nullptr;
  std::uint64_t heap_bytes_ = 0;
  std::uint32_t bucket_mask_ = 0;
};

// Looks `inputs` up (under the cache's current generation, in `scope`) and, on a hit, puts the outputs in
// `region` of `arena` the way the sidecar places a forward's outputs, described in
// outputs[0..output_count). For a client's zero-copy run() and for the sidecar when a client leaves
// the lookup to it. On a miss, the region may hold partial bytes.
inline std::optional<CacheHit> lookup_into_arena(const CacheView& cache, std::uint64_t scope,
                                                 std::span<const TensorBytes> inputs,
                                                 std::uint8_t* arena, const OutputRegion& region,
                                                 TensorDescriptor* outputs, std::uint32_t& output_count) {
  const std::uint64_t generation = cache.generation();
  output_count = 0;
  return cache.lookup(compute_cache_key(generation, scope, inputs), generation, inputs,
                      [&](std::uint32_t count, const CacheTensor* found, std::uint8_t** where) {
                        std::uint64_t sizes[kMaxTensors];
                        std::uint64_t offsets[kMaxTensors];
                        for (std::uint32_t i = 0; i < count; ++i) sizes[i] = found[i].bytes;
                        if (!region.place(sizes, count, offsets)) return false;
                        for (std::uint32_t i = 0; i < count; ++i) {
                          outputs[i] = TensorDescriptor{};
                          outputs[i].shape = found[i].shape;
                          outputs[i].offset = offsets[i];
                          outputs[i].bytes = found[i].bytes;
                          where[i] = arena + offsets[i];
                        }
                        output_count = count;
                        return true;
                      });
}

}  // namespace sidecar
