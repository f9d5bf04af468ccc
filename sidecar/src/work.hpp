// What the leader takes from the rings and a worker runs: the private copies a request is handled
// through, from admission to its answer.
#pragma once

#include <cstdint>
#include <vector>

#include "channel_table.hpp"
#include "metrics_recorder.hpp"
#include "sidecar/shared/cache_reader.hpp"
#include "sidecar/shared/descriptors.hpp"

namespace sidecar {

// Private copies of a call's outputs, for the cache.
struct CapturedOutputs {
  std::vector<std::uint8_t> bytes;
  TensorBytes tensors[kMaxTensors];
  std::uint32_t count = 0;
  std::uint64_t limit = 0;  // outputs larger in all are not captured: their entry would be over the cap
  bool captured = false;
};

// One request taken from a ring.
struct TakenRequest {
  ChannelSlot* slot = nullptr;
  RequestDescriptor request;  // a private copy: the client cannot change it under us
  std::uint64_t service_order = 0;
  std::uint64_t taken_ns = 0;  // monotonic; 0 when not timed (its client was not sleeping)
  // For the metrics: when admission looked at it, when the forward that answered it ended, how long
  // that forward ran (0: none ran), and the signature it matched.
  std::uint64_t admitted_ns = 0;
  std::uint64_t forward_end_ns = 0;
  std::uint64_t forward_ns = 0;
  std::uint32_t signature_row = kUnmatchedSignature;
  ResponseDescriptor response;
  // For the cache: the key and generation of its inputs, computed before the forward.
  bool store_result = false;
  CacheKey key;
  std::uint64_t generation = 0;
  TensorBytes staged[kMaxTensors];  // its inputs in the private copy (a batch's rows, or its own)
  TensorBytes outputs[kMaxTensors];
  std::uint32_t output_count = 0;
};

struct LoadedModel;

struct Work {
  const LoadedModel* model = nullptr;  // what this worker was warmed on and runs
  // What the leader took: one request, or several compatible ones to run as one batch.
  std::vector<TakenRequest> taken;
  std::uint32_t batch_rows = 0;
  // A request whose result will be cached, and every batch, runs on a private copy of its inputs,
  // so that what is stored is exactly what the model saw: a client can rewrite its arena at any
  // moment. Reused from request to request.
  std::vector<std::uint8_t> staged_bytes;
  CapturedOutputs outputs;
  MetricsRecorder metrics;  // the worker's shard
};

}  // namespace sidecar
