// Whether a request may run, decided on the sidecar's private copy of its descriptor alone: pure
// checks, no shared memory, so they can be tested and fuzzed by themselves. The caller still reads
// the request's cancel word (in the client's arena) and looks the cache up.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "sidecar/shared/descriptors.hpp"
#include "sidecar/shared/metrics_layout.hpp"
#include "sidecar/shared/signature.hpp"

namespace sidecar {

struct AdmissionRules {
  std::size_t input_count = 0;               // forward()'s
  std::vector<AcceptedSignature> accepted;   // what requests may carry; empty: any shape
  std::vector<AcceptedSignature> batchable;  // the accepted ones that take batches, when max_batch > 1
  std::vector<InputSignature> warmup;        // the declared warm-up shapes, each within an accepted one
  std::uint32_t max_batch = 1;

  // `accepted` empty: the warm-up shapes are the accepted signatures, as fixed shapes.
  static AdmissionRules from(std::size_t input_count, std::vector<AcceptedSignature> accepted,
                             std::vector<InputSignature> warmup, std::uint32_t max_batch);
  // Every shape a worker must be warm for: the warm-up shapes, the largest request of each accepted
  // signature that has one (its outputs bound every request's: arena_fit.hpp), then each of those
  // that can be batched at 2..max_batch rows. No shape twice.
  std::vector<InputSignature> warmup_plan() const;
};

// Rows of a request that could join a batch (1..max_batch), or 0 when it cannot be batched.
std::uint32_t batch_rows_of(const RequestDescriptor& request, const AdmissionRules& rules);

struct AdmissionVerdict {
  enum class Kind {
    kRun,         // run it (after its cancel word and the cache)
    kFlushCache,  // a control request: empty the cache
    kPing,        // a control request: answer at once, without the model
    kRefuse,      // answer `status` with `message` without running anything
  };
  Kind kind = Kind::kRun;
  Status status = Status::kOk;
  std::string message;
  // Which accepted signature the request matched (its base shape, for batchable rows), for the
  // per-signature metrics; kUnmatchedSignature when none is declared or it was refused.
  std::uint32_t signature_row = kUnmatchedSignature;
};

// Checks, in order: known flags, a flush, the structure (descriptor_check.hpp) against the arena's
// size as the sidecar made it, the cancel word's place, the deadline against `now_ns`, the input
// count and the accepted signatures (or batchable rows).
AdmissionVerdict admit_request(const RequestDescriptor& request, std::uint64_t arena_bytes,
                               const AdmissionRules& rules, std::uint64_t now_ns);

}  // namespace sidecar
