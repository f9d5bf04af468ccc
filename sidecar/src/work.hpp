// What the leader takes from the rings and a worker runs: the private copies a request is handled
// through, from admission to its answer.
#pragma once

#include <cstdint>
#include <vector>

#include "channel_table.hpp"
#include "metrics_recorder.hpp"
#include "sidecar/shared/cache_reader.hpp"
#include "sidecar/shared/descriptors.hpp"
#include "sidecar/shared/signature.hpp"

namespace sidecar {

// Private copies of a call's outputs, for the cache.
struct CapturedOutputs {
  std::vector<std::uint8_t> bytes;
  TensorBytes tensors[kMaxTensors];
  std::uint32_t count = 0;
  std::uint64_t limit = 0;  // outputs larger in all are not captured: their entry would be over the cap
  bool captured = false;
};

// One request taken from a ring: its bookkeeping, which is reset for every request taken...
struct TakenRequestState {
  ChannelSlot* slot = nullptr;
  std::uint64_t service_order = 0;
  std::uint64_t taken_ns = 0;  // monotonic; 0 when not timed (its client was not sleeping)
  // For the metrics: when admission looked at it, when the forward that answered it ended, how long
  // that forward ran (0: none ran), and the signature it matched.
  std::uint64_t admitted_ns = 0;
  std::uint64_t forward_end_ns = 0;
  std::uint64_t forward_ns = 0;
  std::uint32_t signature_row = kUnmatchedSignature;
  // For the cache: whether its result is stored, under the key and generation of its inputs
  // (computed before the forward), and the outputs captured for it.
  bool store_result = false;
  std::uint64_t generation = 0;
  std::uint32_t output_count = 0;
};

// ...and the kilobytes that are written before they are read: the used part of the request (copied
// out of the ring), the response (its header cleared at admission), the cache's key and copies.
struct TakenRequest : TakenRequestState {
  RequestDescriptor request;  // a private copy: the client cannot change it under us
  ResponseDescriptor response;
  CacheKey key;
  TensorBytes staged[kMaxTensors];  // its inputs in the private copy (a batch's rows, or its own)
  TensorBytes outputs[kMaxTensors];
};

// What the leader took for one run, one request or a batch, in storage kept from run to run:
// zeroing a fresh TakenRequest for every request would cost more than taking it does.
class TakenRequests {
 public:
  void reserve(std::size_t count) {
    if (storage_.size() < count) storage_.resize(count);
  }
  // The next request's entry, its bookkeeping reset. May move the entries before it.
  TakenRequest& add() {
    if (count_ == storage_.size()) storage_.emplace_back();
    TakenRequest& taken = storage_[count_++];
    static_cast<TakenRequestState&>(taken) = TakenRequestState{};
    return taken;
  }
  void pop_back() noexcept { --count_; }
  void clear() noexcept { count_ = 0; }
  std::size_t size() const noexcept { return count_; }
  TakenRequest& operator[](std::size_t index) noexcept { return storage_[index]; }
  TakenRequest& front() noexcept { return storage_[0]; }
  TakenRequest* begin() noexcept { return storage_.data(); }
  TakenRequest* end() noexcept { return storage_.data() + count_; }

 private:
  std::vector<TakenRequest> storage_;
  std::size_t count_ = 0;
};

struct LoadedModel;

struct Work {
  const LoadedModel* model = nullptr;  // what this worker was warmed on and runs
  // What the leader took: one request, or several compatible ones to run as one batch.
  TakenRequests taken;
  std::uint32_t batch_rows = 0;
  // A request whose result will be cached, and every batch, runs on a private copy of its inputs,
  // so that what is stored is exactly what the model saw: a client can rewrite its arena at any
  // moment. Reused from request to request.
  std::vector<std::uint8_t> staged_bytes;
  CapturedOutputs outputs;
  MetricsRecorder metrics;  // the worker's shard
  InputSignature last_warmed;  // the input shapes of the last forward, if they were warmed up
};

}  // namespace sidecar
