// The sidecar's status page: a memfd every client maps read-only, holding what the sidecar tells
// all of them: who it is, its state, the model it serves, its statistics, and whether its leader
// sleeps. Sealed with F_SEAL_FUTURE_WRITE after the sidecar mapped it writable, so the kernel lets
// no other holder write it, whatever its uid: no client can forge the state or the model, or break
// a word the sidecar depends on.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "sidecar/shared/cache_layout.hpp"
#include "sidecar/shared/clock.hpp"
#include "sidecar/shared/descriptors.hpp"
#include "sidecar/shared/metrics_layout.hpp"
#include "sidecar/shared/signature.hpp"
#include "sidecar/shared/spsc_ring.hpp"

namespace sidecar {

inline constexpr std::uint64_t kStatusMagic = 0x5441545345444953ull;  // "SIDESTAT", little-endian
inline constexpr std::uint32_t kModelPathBytes = 256;

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

// Whose requests share cache entries. kPerUser puts the client's uid (from the kernel, SO_PEERCRED)
// in every key, and clients then get no mapping of the cache: with one, any client could probe for
// another user's inputs.
enum class CacheScope : std::uint32_t { kShared = 1, kPerUser = 2 };

// One accepted signature: the input sizes it takes, and the output shapes the model gave on its
// largest request (for a fixed signature, its only one), from which clients size their output
// regions. A signature with a dim of any size (`?`) has no largest request: outputs_known is 0.
struct ModelSignature {
  ShapeRange inputs[kMaxTensors];
  TensorShape outputs[kMaxTensors];
  std::uint32_t outputs_known;
  std::uint32_t reserved;
};

// One input shape every worker was warmed up on (batch sizes included).
struct WarmedShape {
  TensorShape inputs[kMaxTensors];
};

// Written by the sidecar before it marks itself ready.
struct ModelDescription {
  std::uint32_t input_count;
  std::uint32_t output_count;
  std::uint32_t signature_count;  // 0: the sidecar accepts any dtype and shape
  // > 1: signatures whose inputs all have a leading dim of exactly 1 also accept 2..max_batch
  // rows, and requests of equal shapes are batched into one forward.
  std::uint32_t max_batch;
  char model_path[kModelPathBytes];
  ModelSignature signatures[kMaxSignatures];
  std::uint32_t warmed_count;  // the first warmed_count of `warmed` are filled
  std::uint32_t warmed_total;  // shapes warmed, also past kMaxWarmedShapes
  WarmedShape warmed[kMaxWarmedShapes];
};

// Counts kept by the sidecar, read by anyone who maps the page.
struct ClientCounters {
  std::atomic<std::uint64_t> connected;  // clients holding a channel now
  std::atomic<std::uint64_t> admitted;   // channels handed out since start
  std::atomic<std::uint64_t> refused;    // handshakes refused (policy, limits, versions, garbage)
  std::atomic<std::uint64_t> reclaimed;  // channels taken back after their client hung up or died
  std::atomic<std::uint64_t> observers;  // connections that only watch (sidecarctl status)
  std::atomic<std::uint64_t> requests;   // requests answered, any status
  // The longest a channel waited, from its client's hang-up to its reclaim, since start.
  std::atomic<std::uint64_t> slowest_reclaim_ns;
  // Sleeping clients woken as their request was taken rather than when it was answered.
  std::atomic<std::uint64_t> woken_ahead;
};

struct alignas(kCacheLine) StatusPage {
  // Identity: written before the page is sealed and sent.
  std::uint64_t magic;
  std::uint32_t protocol_version;
  std::uint32_t page_bytes;  // sizeof(StatusPage)
  std::int32_t sidecar_pid;
  std::uint32_t sidecar_uid;
  std::uint64_t started_unix_ns;
  // Increases each time a sidecar of this name starts (kept in its lock file), so a client can
  // tell a restart.
  std::uint64_t start_generation;
  std::uint32_t max_clients;
  std::uint32_t cache_scope;  // a CacheScope
  std::uint64_t default_arena_bytes;
  std::uint64_t max_arena_bytes;
  std::uint64_t cache_bytes;  // 0: no result cache

  alignas(kCacheLine) std::atomic<std::uint32_t> state;  // a SidecarState

  // Non-zero while the sidecar's polling thread sleeps (or is about to): a client that posts a
  // request then signals its request eventfd. The sidecar sets it, re-checks every ring, then
  // sleeps; a client publishes, then reads it (both seq_cst), so either the sidecar sees the
  // request or the client sees the flag. Alone on its line: clients read it on every request.
  alignas(kCacheLine) std::atomic<std::uint32_t> leader_sleeping;

  alignas(kCacheLine) ClientCounters clients;
  // The result cache's statistics, here rather than in the cache so that clients of a per-user
  // cache, which do not map the cache, can read them too.
  alignas(kCacheLine) CacheCounters cache;

  alignas(kCacheLine) LifecycleCounters lifecycle;

  // Even while `model` is stable, odd while the sidecar rewrites it (a reload): a reader copies the
  // description between two equal even reads. Alone on its line: clients read it on every request.
  alignas(kCacheLine) std::atomic<std::uint64_t> model_sequence;
  alignas(kCacheLine) ModelDescription model;

  MetricsShard metrics[kMetricShards];
};
static_assert(std::is_standard_layout_v<StatusPage>);
static_assert(offsetof(StatusPage, state) % kCacheLine == 0);
static_assert(offsetof(StatusPage, leader_sleeping) % kCacheLine == 0);
static_assert(offsetof(StatusPage, model_sequence) % kCacheLine == 0);
static_assert(offsetof(StatusPage, metrics) % kCacheLine == 0 && sizeof(MetricsShard) % kCacheLine == 0);
static_assert(sizeof(StatusPage) % kCacheLine == 0);

// Advances while the sidecar's scheduling loop makes progress (metrics_layout.hpp, idle_looks).
inline std::uint64_t scheduling_progress(const StatusPage& page) noexcept {
  std::uint64_t progress = 0;
  for (const MetricsShard& shard : page.metrics) {
    progress += shard.idle_looks.load(std::memory_order_relaxed);
    for (const auto& count : shard.requests_by_status) progress += count.load(std::memory_order_relaxed);
  }
  return progress;
}

// Copies the model description as one piece: the sidecar rewrites it in a reload. Returns the
// model_sequence it copied at. A sidecar that died in the middle of a rewrite leaves the sequence
// odd: after enough tries the copy is returned as it is (and the client learns of the death from
// its socket).
inline std::uint64_t copy_model_description(const StatusPage& page, ModelDescription& copy) noexcept {
  constexpr int kTries = 1 << 20;
  std::uint64_t before = 0;
  for (int attempt = 0; attempt < kTries; ++attempt) {
    before = page.model_sequence.load(std::memory_order_acquire);
    if (before & 1) {
      cpu_relax();
      continue;
    }
    std::memcpy(static_cast<void*>(&copy), &page.model, sizeof copy);
    std::atomic_thread_fence(std::memory_order_acquire);
    if (page.model_sequence.load(std::memory_order_relaxed) == before) return before;
  }
  std::memcpy(static_cast<void*>(&copy), &page.model, sizeof copy);
  return before;
}

// The page's size in its memfd: whole pages.
inline constexpr std::uint64_t kStatusPageBytes = align_up(sizeof(StatusPage), 4096);

}  // namespace sidecar
