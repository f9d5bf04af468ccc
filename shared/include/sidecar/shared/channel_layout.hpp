// One client's channel: a memfd the sidecar creates for that client alone and sends it over the
// client's socket. Nobody else ever holds it.
//
//   [ChannelHeader: identity, wait flag, rings][arena]
//
// The client writes its input tensors into the arena, posts a RequestDescriptor on the request
// ring, and reads the ResponseDescriptor and its outputs (also in the arena) in place. The memfd is
// sealed against shrinking and growing before it is sent, so no holder can truncate it under the
// other (the SIGBUS attack), and its memory was committed when it was made.
//
// Who writes what: the sidecar writes the identity (before sending), the request ring's head, the
// response ring's tail and its slots; the client writes everything else. The client can write the
// whole mapping, so every word the sidecar reads here is untrusted: the rings keep their
// authoritative indices in each side's private memory, descriptors are copied out before they are
// checked, and a lie in `client_waiting` costs the client only its own wake-ups.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "sidecar/shared/descriptors.hpp"
#include "sidecar/shared/spsc_ring.hpp"

namespace sidecar {

inline constexpr std::uint64_t kChannelMagic = 0x4e41484345444953ull;  // "SIDECHAN", little-endian

using RequestRing = SpscRing<RequestDescriptor, kRingCapacity>;
using ResponseRing = SpscRing<ResponseDescriptor, kRingCapacity>;
using HitLogRing = SpscRing<CacheHitRecord, kHitLogCapacity>;

struct alignas(kCacheLine) ChannelHeader {
  // Written by the sidecar before the fd is sent; the client checks them against the handshake.
  std::uint64_t magic;
  std::uint32_t protocol_version;
  std::uint32_t header_bytes;  // sizeof(ChannelHeader)
  std::uint64_t channel_bytes;
  std::uint64_t arena_offset;
  std::uint64_t arena_bytes;
  std::uint64_t reserved0[3];

  // Non-zero while the client sleeps (or is about to) waiting for a response: the sidecar then
  // takes it back and sends one byte on the client's socket, after posting a response or, for a
  // client whose answers come quickly, as it takes the request. The client sets it, re-checks the
  // response ring, then sleeps; the sidecar publishes, then reads it (both seq_cst), so either the
  // client sees the response or the sidecar sees the flag.
  alignas(kCacheLine) std::atomic<std::uint32_t> client_waiting;
  std::uint32_t reserved1;
  // Hits the client found in the result cache by itself: statistics only, so a lying client fools
  // nobody but the statistics.
  std::atomic<std::uint64_t> cache_hits;

  RequestRing requests;
  ResponseRing responses;
  HitLogRing cache_hit_log;  // client -> sidecar: which entries its own lookups hit
};
static_assert(std::is_standard_layout_v<ChannelHeader>);
static_assert(offsetof(ChannelHeader, client_waiting) == kCacheLine);
static_assert(sizeof(ChannelHeader) % kCacheLine == 0);
static_assert(std::atomic<std::uint32_t>::is_always_lock_free && std::atomic<std::uint64_t>::is_always_lock_free);

// Where the arena is, from the arena's size alone. The sidecar uses its own result; the client
// recomputes it and refuses a handshake or a header that disagrees.
struct ChannelGeometry {
  std::uint64_t arena_offset = 0;
  std::uint64_t arena_bytes = 0;
  std::uint64_t channel_bytes = 0;

  static constexpr ChannelGeometry compute(std::uint64_t arena_bytes) {
    ChannelGeometry g;
    g.arena_offset = align_up(sizeof(ChannelHeader), kArenaAlignment);
    g.arena_bytes = align_up(arena_bytes, kArenaAlignment);
    g.channel_bytes = g.arena_offset + g.arena_bytes;
    return g;
  }
};

}  // namespace sidecar
