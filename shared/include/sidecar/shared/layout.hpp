// The shared-memory layout between one inference sidecar and its clients.
//
// One POSIX shared-memory segment per sidecar instance, named from the instance name:
//
//   [SegmentHeader][Channel 0]...[Channel N-1][arena 0]...[arena N-1]
//
// A client claims one channel, writes its input tensors into that channel's arena, posts a
// RequestDescriptor on the channel's request ring, and reads the ResponseDescriptor and the output
// tensors (also in its arena) in place. Only these fixed-size descriptors cross the rings.
//
// Rules for everything in this file:
// - Offsets, never pointers: the segment is mapped at a different address in every process.
// - Every field a client can write is untrusted input to the sidecar, which copies descriptors
//   out of shared memory before validating them and computes channel and arena bounds itself.
// - Any change to a struct here changes kLayoutVersion; tests/unit/layout_test.cpp pins the sizes
//   and offsets so that a change cannot slip through unnoticed.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>

#include "sidecar/shared/dtype.hpp"
#include "sidecar/shared/futex.hpp"
#include "sidecar/shared/spsc_ring.hpp"

namespace sidecar {

inline constexpr std::uint64_t kSegmentMagic = 0x3152414345444953ull;  // "SIDECAR1", little-endian
inline constexpr std::uint32_t kLayoutVersion = 3;

inline constexpr std::uint32_t kMaxRank = 8;
inline constexpr std::uint32_t kMaxTensors = 8;     // inputs per request, outputs per response
inline constexpr std::uint32_t kMaxSignatures = 8;  // warmed input shapes the header describes
inline constexpr std::uint32_t kMaxChannels = 256;
inline constexpr std::uint32_t kRingCapacity = 16;   // descriptors in flight per channel
inline constexpr std::uint32_t kMessageBytes = 512;  // error text carried in a response
inline constexpr std::uint32_t kModelPathBytes = 256;
inline constexpr std::uint64_t kArenaAlignment = 4096;
inline constexpr std::uint64_t kTensorAlignment = 64;

enum class SidecarState : std::uint32_t {
  kStarting = 1,
  kWarming = 2,
  kReady = 3,
  kStopping = 4,
};

constexpr const char* sidecar_state_name(std::uint32_t state) noexcept {
  switch (static_cast<SidecarState>(state)) {
    case SidecarState::kStarting: return "starting";
    case SidecarState::kWarming: return "warming up";
    case SidecarState::kReady: return "ready";
    case SidecarState::kStopping: return "stopping";
  }
  return "unknown";
}

enum class ChannelState : std::uint32_t {
  kFree = 0,
  kClaimed = 1,    // set by the client (CAS from kFree)
  kDetaching = 2,  // set by the client when it closes; the sidecar recycles the channel
};

// Status of one request; numbers are part of the layout.
enum class Status : std::uint32_t {
  kOk = 0,
  kInvalidRequest = 1,     // wrong dtype, rank, shape, byte count, offset or input count
  kModelError = 2,         // the model threw: the message is TorchScript's text
  kUnsupportedOutput = 3,  // the model returned something other than tensors
  kOutputTooLarge = 4,     // the outputs do not fit the space the client reserved
  kDeadlineExceeded = 5,
  kOverloaded = 6,
  kCancelled = 7,
  kShuttingDown = 8,
  kInternal = 9,
};

// Request flags.
inline constexpr std::uint32_t kRequestFlagNone = 0;
// Neither look the inputs up in the result cache nor store the result.
inline constexpr std::uint32_t kRequestFlagBypassCache = 1u << 0;
// The client looked the inputs up itself and missed: the sidecar stores the result but does not
// look again. Only saves work; the sidecar trusts nothing else about it.
inline constexpr std::uint32_t kRequestFlagCacheChecked = 1u << 1;
// A control request with no inputs: empty the result cache. The answer's message says how much.
inline constexpr std::uint32_t kRequestFlagFlushCache = 1u << 2;
// The request can be cancelled: `cancel_offset` names an 8-byte word in the channel's arena that
// the client sets to non-zero to cancel. Checked before the request runs.
inline constexpr std::uint32_t kRequestFlagCancellable = 1u << 3;
inline constexpr std::uint32_t kRequestFlagsKnown =
    kRequestFlagBypassCache | kRequestFlagCacheChecked | kRequestFlagFlushCache | kRequestFlagCancellable;

// Response flags.
inline constexpr std::uint32_t kResponseFlagFromCache = 1u << 0;  // the sidecar answered from its cache

// dtype + shape of one tensor, as stored in descriptors and in the model description.
struct TensorShape {
  std::uint8_t dtype;  // a DType value
  std::uint8_t rank;   // <= kMaxRank
  std::uint16_t reserved0;
  std::uint32_t reserved1;
  std::int64_t dims[kMaxRank];
};
static_assert(sizeof(TensorShape) == 72 && alignof(TensorShape) == 8);

// A tensor's bytes in the channel's arena: [offset, offset + bytes), dense, row-major.
struct TensorDescriptor {
  TensorShape shape;
  std::uint64_t offset;  // from the start of the channel's arena, kTensorAlignment-aligned
  std::uint64_t bytes;
  std::uint64_t reserved;
};
static_assert(sizeof(TensorDescriptor) == 96);

// Client -> sidecar.
struct RequestDescriptor {
  std::uint64_t request_id;   // chosen by the client, echoed in the response
  std::uint64_t deadline_ns;  // CLOCK_MONOTONIC; 0 = none
  std::uint32_t flags;
  std::uint16_t input_count;
  std::uint16_t reserved0;
  // Where the sidecar may write the outputs: [output_offset, output_offset + output_capacity).
  std::uint64_t output_offset;
  std::uint64_t output_capacity;
  std::uint64_t cancel_offset;  // with kRequestFlagCancellable: the cancel word, 8-byte aligned
  std::uint64_t reserved1[2];
  TensorDescriptor inputs[kMaxTensors];
};
static_assert(sizeof(RequestDescriptor) == 64 + kMaxTensors * sizeof(TensorDescriptor));

// Sidecar -> client.
struct ResponseDescriptor {
  std::uint64_t request_id;
  std::uint32_t status;  // a Status value
  std::uint16_t output_count;
  std::uint16_t message_length;  // bytes of `message` used
  std::uint32_t flags;           // kResponseFlag*
  std::uint16_t batch_size;      // requests in the forward that answered this one (0: none ran)
  std::uint16_t reserved0;
  // The order in which the sidecar took requests, across all channels: lets a client (and the
  // fairness test) see how many others were served in between.
  std::uint64_t service_order;
  std::uint64_t reserved[4];
  TensorDescriptor outputs[kMaxTensors];
  char message[kMessageBytes];
};
static_assert(sizeof(ResponseDescriptor) == 64 + kMaxTensors * sizeof(TensorDescriptor) + kMessageBytes);

static_assert(std::is_trivially_copyable_v<RequestDescriptor> && std::is_standard_layout_v<RequestDescriptor>);
static_assert(std::is_trivially_copyable_v<ResponseDescriptor> && std::is_standard_layout_v<ResponseDescriptor>);

// A client's hit in the result cache, reported back so that the sidecar's eviction order (LRU) sees
// it: the slot and the slot's sequence when it was read, so a report about an entry replaced since
// then is ignored.
struct CacheHitRecord {
  std::uint32_t slot;
  std::uint32_t reserved;
  std::uint64_t sequence;
};
inline constexpr std::uint32_t kHitLogCapacity = 64;  // hits beyond this between two drains are not reported

using RequestRing = SpscRing<RequestDescriptor, kRingCapacity>;
using ResponseRing = SpscRing<ResponseDescriptor, kRingCapacity>;
using HitLogRing = SpscRing<CacheHitRecord, kHitLogCapacity>;

// Wakes a waiter in another process without losing the wake-up:
//   waiter: s = sequence; ++sleepers; if (!condition) futex_wait(sequence, s); --sleepers
//   ringer: publish; ++sequence; if (sleepers) futex_wake(sequence)
// Either the ringer sees the sleeper, or the waiter's futex_wait sees a changed sequence.
struct alignas(kCacheLine) Doorbell {
  std::atomic<std::uint32_t> sequence;
  std::atomic<std::uint32_t> sleepers;

  void ring() noexcept {
    sequence.fetch_add(1, std::memory_order_seq_cst);
    if (sleepers.load(std::memory_order_seq_cst) != 0) futex_wake_all(&sequence);
  }

  // Blocks until rung or `timeout`; `ready()` is checked after announcing the sleep.
  template <typename Ready>
  void wait(Ready&& ready, std::chrono::nanoseconds timeout) noexcept {
    const std::uint32_t seen = sequence.load(std::memory_order_seq_cst);
    sleepers.fetch_add(1, std::memory_order_seq_cst);
    if (!ready()) futex_wait(&sequence, seen, timeout);
    sleepers.fetch_sub(1, std::memory_order_seq_cst);
  }
};
static_assert(sizeof(Doorbell) == kCacheLine);

// One client's connection. The client writes `state` (claim/detach), the owner fields and the
// request ring's tail; the sidecar writes the request ring's head, the response ring's tail, and
// recycles the channel. The arena is not here: see SegmentGeometry.
struct alignas(kCacheLine) Channel {
  std::atomic<std::uint32_t> state;  // ChannelState
  std::uint32_t reserved0;
  // Bumped by the sidecar each time it recycles the channel, so a stale client can tell.
  std::atomic<std::uint64_t> generation;
  std::atomic<std::int32_t> owner_pid;
  std::uint32_t reserved1;
  // The owner's start time (field 22 of /proc/PID/stat): with the pid, it names one process even
  // after the pid is reused.
  std::atomic<std::uint64_t> owner_start_time;
  // Hits this channel's client found in the result cache by itself (client-written; only counted
  // in the statistics, so a lying client fools nobody but the statistics).
  std::atomic<std::uint64_t> cache_hits;
  std::uint64_t reserved2[3];

  Doorbell response_bell;  // the sidecar rings it after posting a response
  RequestRing requests;
  ResponseRing responses;
  HitLogRing cache_hit_log;  // client -> sidecar: which entries its own lookups hit
};
static_assert(std::atomic<std::int32_t>::is_always_lock_free);
static_assert(offsetof(Channel, response_bell) == kCacheLine);
static_assert(std::is_standard_layout_v<Channel>);

struct ModelSignature {
  TensorShape inputs[kMaxTensors];
  TensorShape outputs[kMaxTensors];
};

// Written by the sidecar before it marks the segment ready; read-only for clients after that.
struct ModelDescription {
  std::uint32_t input_count;
  std::uint32_t output_count;
  std::uint32_t signature_count;  // 0: the sidecar accepts any dtype and shape (no warm-up shapes)
  // > 1: signatures whose inputs all have a leading dim of 1 also accept 2..max_batch rows, and
  // requests of such shapes are batched into one forward.
  std::uint32_t max_batch;
  char model_path[kModelPathBytes];
  ModelSignature signatures[kMaxSignatures];
};

struct alignas(kCacheLine) SegmentHeader {
  // Identity: written once at creation; `magic` last, with release, so a reader that sees the
  // magic sees the rest.
  std::atomic<std::uint64_t> magic;
  std::uint32_t layout_version;
  std::uint32_t header_bytes;  // sizeof(SegmentHeader)
  std::uint64_t segment_bytes;
  std::uint32_t channel_count;
  std::uint32_t ring_capacity;
  std::uint64_t arena_bytes;  // per channel
  std::uint64_t channels_offset;
  std::uint64_t channel_stride;
  std::uint64_t arenas_offset;

  std::int32_t sidecar_pid;
  std::uint32_t reserved0;
  std::uint64_t sidecar_start_time;  // field 22 of /proc/PID/stat
  std::uint64_t started_unix_ns;
  // Increases each time a sidecar of this name starts, so a client can tell a restart.
  std::uint64_t start_generation;

  std::atomic<std::uint32_t> state;  // SidecarState
  std::uint32_t reserved1;
  std::uint64_t reserved2[3];

  // Clients ring it after posting a request; the sidecar's poller sleeps on it when idle.
  Doorbell request_bell;
  // Bit i set: channel i may hold requests. Clients set their bit after claiming a channel, so an
  // idle poller scans only the channels in use.
  alignas(kCacheLine) std::atomic<std::uint64_t> active_channels[kMaxChannels / 64];

  alignas(kCacheLine) ModelDescription model;
};
static_assert(std::is_standard_layout_v<SegmentHeader>);
static_assert(offsetof(SegmentHeader, request_bell) % kCacheLine == 0);
static_assert(sizeof(SegmentHeader) % kCacheLine == 0);

constexpr std::uint64_t align_up(std::uint64_t value, std::uint64_t alignment) noexcept {
  return (value + alignment - 1) / alignment * alignment;
}

// Where everything is, computed from the two numbers that size a segment. The sidecar uses its own
// result; a client recomputes it from the header and refuses a header that disagrees.
struct SegmentGeometry {
  std::uint64_t channels_offset = 0;
  std::uint64_t channel_stride = 0;
  std::uint64_t arenas_offset = 0;
  std::uint64_t arena_bytes = 0;
  std::uint64_t segment_bytes = 0;

  static constexpr SegmentGeometry compute(std::uint32_t channel_count, std::uint64_t arena_bytes) {
    SegmentGeometry g;
    g.channels_offset = align_up(sizeof(SegmentHeader), kCacheLine);
    g.channel_stride = align_up(sizeof(Channel), kCacheLine);
    g.arenas_offset = align_up(g.channels_offset + g.channel_stride * channel_count, kArenaAlignment);
    g.arena_bytes = align_up(arena_bytes, kArenaAlignment);
    g.segment_bytes = g.arenas_offset + g.arena_bytes * channel_count;
    return g;
  }

  std::uint64_t channel_offset(std::uint32_t index) const noexcept { return channels_offset + channel_stride * index; }
  std::uint64_t arena_offset(std::uint32_t index) const noexcept { return arenas_offset + arena_bytes * index; }
};

// "/sidecar.NAME": the name passed to shm_open. Instance names are checked by is_valid_instance_name.
inline std::string segment_name(const std::string& instance) { return "/sidecar." + instance; }

// Letters, digits, '-', '_', '.', 1..64 characters, not starting with '.': safe as a file name
// under /dev/shm and as a systemd instance name.
inline bool is_valid_instance_name(const std::string& name) noexcept {
  if (name.empty() || name.size() > 64 || name[0] == '.') return false;
  for (char c : name) {
    const bool ok =
        (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.';
    if (!ok) return false;
  }
  return true;
}

inline std::uint64_t element_count(const TensorShape& shape) noexcept {
  std::uint64_t count = 1;
  for (std::uint32_t i = 0; i < shape.rank && i < kMaxRank; ++i) {
    count *= static_cast<std::uint64_t>(shape.dims[i]);
  }
  return count;
}

}  // namespace sidecar
