// A worker's hand on its shard of the metrics in the status page (metrics_layout.hpp).
#pragma once

#include <cstdint>

#include "sidecar/shared/metrics_layout.hpp"

namespace sidecar {

class MetricsRecorder {
 public:
  MetricsRecorder() = default;
  // `exclusive`: no other thread writes this shard, so a count is a plain load and store; otherwise
  // (more workers than shards, or two pools during a reload) an atomic add.
  MetricsRecorder(MetricsShard& shard, bool exclusive) : shard_(&shard), exclusive_(exclusive) {}

  void count_status(std::uint32_t status) noexcept {
    if (shard_) add(shard_->requests_by_status[status < kStatusCount ? status : kStatusCount - 1], 1);
  }
  void count_forward(std::uint64_t requests) noexcept {
    if (!shard_) return;
    add(shard_->forwards, 1);
    add(shard_->forward_requests, requests);
    add(shard_->batch_sizes[batch_size_bucket(requests)], 1);
  }
  void count_unwarmed_forward() noexcept {
    if (shard_) add(shard_->unwarmed_forwards, 1);
  }
  void count_idle_look() noexcept {
    if (shard_) add(shard_->idle_looks, 1);
  }
  SignatureLatencies* latencies(std::uint32_t signature_row) noexcept {
    return shard_ ? &shard_->signatures[signature_row < kSignatureRows ? signature_row : kUnmatchedSignature] : nullptr;
  }
  void record(LatencyHistogram& histogram, std::uint64_t nanoseconds) noexcept {
    add(histogram.buckets[latency_bucket(nanoseconds)], 1);
    add(histogram.sum_ns, nanoseconds);
  }

 private:
  void add(std::atomic<std::uint64_t>& counter, std::uint64_t amount) noexcept {
    if (exclusive_) {
      counter.store(counter.load(std::memory_order_relaxed) + amount, std::memory_order_relaxed);
    } else {
      counter.fetch_add(amount, std::memory_order_relaxed);
    }
  }

  MetricsShard* shard_ = nullptr;
  bool exclusive_ = false;
};

}  // namespace sidecar
