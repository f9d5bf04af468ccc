// The sidecar's metrics (metrics_layout.hpp) as one consistent-enough copy, and that copy written
// out for a person, for programs (JSON) and for Prometheus (its text exposition format). Used by
// `sidecarctl stats` through the client library and by the daemon's --metrics-file: one writer of
// each format.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "sidecar/shared/status_layout.hpp"

namespace sidecar {

struct HistogramSnapshot {
  std::uint64_t buckets[kLatencyBuckets] = {};
  std::uint64_t sum_ns = 0;
  std::uint64_t count() const noexcept;
  // The smallest bucket bound under which `quantile` of the values fall (an upper estimate), in ns;
  // 0 when empty, UINT64_MAX when it falls in the unbounded bucket.
  std::uint64_t quantile_bound_ns(double quantile) const noexcept;
};

struct SignatureSnapshot {
  std::string signature;  // "1x64:float32", or "other" for requests that matched none
  HistogramSnapshot queue_wait;
  HistogramSnapshot inference;
  HistogramSnapshot end_to_end;
};

struct MetricsSnapshot {
  std::string name;
  std::string state;
  std::string model_path;
  std::int32_t pid = 0;
  std::uint64_t start_generation = 0;
  std::uint64_t started_unix_ns = 0;
  std::uint64_t requests_by_status[kStatusCount] = {};
  std::uint64_t forwards = 0;
  std::uint64_t forward_requests = 0;
  std::uint64_t unwarmed_forwards = 0;
  std::uint64_t batch_sizes[kBatchSizeBuckets] = {};
  std::vector<SignatureSnapshot> signatures;  // the described ones, then "other" when it has any
  std::uint64_t clients_connected = 0;
  std::uint64_t clients_admitted = 0;
  std::uint64_t clients_refused = 0;
  std::uint64_t clients_reclaimed = 0;
  std::uint64_t observers = 0;
  bool cache_enabled = false;
  std::uint64_t cache_budget_bytes = 0;
  std::uint64_t cache_bytes_used = 0;
  std::uint64_t cache_entries = 0;
  std::uint64_t cache_sidecar_hits = 0;
  std::uint64_t cache_client_hits = 0;
  std::uint64_t cache_misses = 0;
  std::uint64_t cache_inserts = 0;
  std::uint64_t cache_evictions = 0;
  std::uint64_t cache_too_large = 0;
  std::uint64_t cache_flushes = 0;
  std::uint64_t reloads = 0;
  std::uint64_t failed_reloads = 0;
  std::uint64_t last_reload_unix_ns = 0;

  std::uint64_t requests() const noexcept;
};

// The name of a response Status as the metrics label it ("ok", "invalid_request", ...).
const char* status_label(std::uint32_t status) noexcept;

MetricsSnapshot snapshot_metrics(const StatusPage& page, const std::string& name);
std::string metrics_as_text(const MetricsSnapshot& metrics);
std::string metrics_as_json(const MetricsSnapshot& metrics);
std::string metrics_as_prometheus(const MetricsSnapshot& metrics);

}  // namespace sidecar
