// Request counters and latency histograms, kept by the sidecar's workers in its status page (so
// clients and sidecarctl read them through their read-only mapping, and no client can write them).
//
// Each worker writes only its own shard, so a count is a load and a store on a line no other core
// writes: nothing on the request path waits for another core. Readers add the shards up. Counts are
// monotonic; a reader may see one shard a request ahead of another, never a count going back.
#pragma once

#include <atomic>
#include <cstdint>

#include "sidecar/shared/descriptors.hpp"
#include "sidecar/shared/spsc_ring.hpp"

namespace sidecar {

inline constexpr std::uint32_t kMetricShards = 16;
// Histogram bucket i counts values up to kLatencyBucketBaseNs << i; the last bucket has no bound.
inline constexpr std::uint32_t kLatencyBuckets = 24;  // 1 us .. ~4.2 s, then +Inf
inline constexpr std::uint64_t kLatencyBucketBaseNs = 1000;
// Batch sizes (requests in one forward): bucket i counts sizes up to 1 << i; the last has no bound.
inline constexpr std::uint32_t kBatchSizeBuckets = 12;
inline constexpr std::uint32_t kStatusCount = 10;  // Status values 0..9; others are counted as the last
// Rows of per-signature histograms: the status page's signatures, then one for requests that match
// none of them (a sidecar without declared shapes, or a refused request).
inline constexpr std::uint32_t kSignatureRows = kMaxSignatures + 1;
inline constexpr std::uint32_t kUnmatchedSignature = kMaxSignatures;

struct LatencyHistogram {
  std::atomic<std::uint64_t> buckets[kLatencyBuckets];
  std::atomic<std::uint64_t> sum_ns;
};

struct SignatureLatencies {
  LatencyHistogram queue_wait;  // from the client's post to the sidecar's admission
  LatencyHistogram inference;   // the forward that answered it (a batch's whole forward)
  LatencyHistogram end_to_end;  // from the client's post to the answer ready in its channel
};

struct alignas(kCacheLine) MetricsShard {
  std::atomic<std::uint64_t> requests_by_status[kStatusCount];
  std::atomic<std::uint64_t> forwards;
  std::atomic<std::uint64_t> forward_requests;  // requests those forwards answered: the batch sizes' sum
  // Forwards on input shapes the workers were not warmed up on (within an accepted range, or any
  // shape when none is declared): the first of each shape on each worker is a cold call.
  std::atomic<std::uint64_t> unwarmed_forwards;
  // Looks at the rings by an idle leader (one at least every 100 ms). With the requests answered,
  // it advances while the scheduling loop makes progress: what the watchdog checks.
  std::atomic<std::uint64_t> idle_looks;
  std::atomic<std::uint64_t> batch_sizes[kBatchSizeBuckets];
  SignatureLatencies signatures[kSignatureRows];
};

// Events outside the request path, written by one thread each.
struct LifecycleCounters {
  std::atomic<std::uint64_t> reloads;         // model reloads that took effect
  std::atomic<std::uint64_t> failed_reloads;  // reloads refused (load or warm-up failed); the old model served on
  std::atomic<std::uint64_t> last_reload_unix_ns;
};

constexpr std::uint32_t latency_bucket(std::uint64_t nanoseconds) noexcept {
  std::uint32_t bucket = 0;
  while (bucket + 1 < kLatencyBuckets && nanoseconds > (kLatencyBucketBaseNs << bucket)) ++bucket;
  return bucket;
}

constexpr std::uint32_t batch_size_bucket(std::uint64_t size) noexcept {
  std::uint32_t bucket = 0;
  while (bucket + 1 < kBatchSizeBuckets && size > (std::uint64_t{1} << bucket)) ++bucket;
  return bucket;
}

}  // namespace sidecar
