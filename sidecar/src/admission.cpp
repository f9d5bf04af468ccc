#include "admission.hpp"

#include <algorithm>
#include <span>

#include "sidecar/shared/descriptor_check.hpp"

namespace sidecar {
namespace {

std::span<const TensorShape> shapes_of(const RequestDescriptor& request, TensorShape* storage) {
  const std::uint32_t count = std::min<std::uint32_t>(request.input_count, kMaxTensors);
  for (std::uint32_t i = 0; i < count; ++i) storage[i] = request.inputs[i].shape;
  return {storage, count};
}

std::uint32_t metrics_row(std::size_t accepted_index) {
  return accepted_index < kMaxSignatures ? static_cast<std::uint32_t>(accepted_index) : kUnmatchedSignature;
}

// Empty when the inputs match one of the accepted signatures (or none are declared); sets `row` to
// the match's metrics row.
std::string match_signature(const RequestDescriptor& request, const std::vector<AcceptedSignature>& accepted,
                            std::uint32_t& row) {
  if (accepted.empty()) return {};
  TensorShape storage[kMaxTensors];
  const std::span<const TensorShape> inputs = shapes_of(request, storage);
  for (std::size_t i = 0; i < accepted.size(); ++i) {
    if (within(accepted[i], inputs)) {
      row = metrics_row(i);
      return {};
    }
  }
  if (accepted.size() == 1 && accepted[0].size() == 1 && !inputs.empty()) {
    return "input 0: expected " + describe_range(accepted[0][0]) + ", got " + describe_shape(inputs[0]);
  }
  return "inputs (" + describe_signature(inputs) + ") match no accepted signature; expected " +
         describe_alternatives(accepted);
}

AdmissionVerdict refuse(Status status, std::string message) {
  return AdmissionVerdict{AdmissionVerdict::Kind::kRefuse, status, std::move(message)};
}

}  // namespace

AdmissionRules AdmissionRules::from(std::size_t input_count, std::vector<AcceptedSignature> accepted,
                                    std::vector<InputSignature> warmup, std::uint32_t max_batch) {
  AdmissionRules rules;
  rules.input_count = input_count;
  rules.max_batch = max_batch;
  if (accepted.empty()) {
    for (const InputSignature& shape : warmup) accepted.push_back(exactly(shape));
  }
  if (max_batch > 1) {
    for (const AcceptedSignature& signature : accepted) {
      if (is_batchable(signature)) rules.batchable.push_back(signature);
    }
  }
  rules.accepted = std::move(accepted);
  rules.warmup = std::move(warmup);
  return rules;
}

std::vector<InputSignature> AdmissionRules::warmup_plan() const {
  std::vector<InputSignature> plan;
  const auto add = [&](InputSignature shape) {
    const bool listed =
        std::any_of(plan.begin(), plan.end(), [&](const InputSignature& other) { return same_shapes(other, shape); });
    if (!listed) plan.push_back(std::move(shape));
  };
  for (const InputSignature& shape : warmup) add(shape);
  for (const AcceptedSignature& signature : accepted) {
    if (bounded(signature)) add(largest_request(signature));
  }
  const std::size_t unbatched = plan.size();
  for (std::size_t s = 0; s < unbatched; ++s) {
    const InputSignature shape = plan[s];
    const bool batchable = std::any_of(this->batchable.begin(), this->batchable.end(),
                                       [&](const AcceptedSignature& signature) { return within(signature, shape); });
    if (!batchable) continue;
    for (std::uint32_t rows = 2; rows <= max_batch; ++rows) {
      InputSignature batched = shape;
      for (TensorShape& input : batched) input.dims[0] = rows;
      add(std::move(batched));
    }
  }
  return plan;
}

std::uint32_t batch_rows_of(const RequestDescriptor& request, const AdmissionRules& rules) {
  if (rules.max_batch <= 1 || (request.flags & (kRequestFlagFlushCache | kRequestFlagPing))) return 0;
  if (request.input_count == 0 || request.input_count > kMaxTensors) return 0;
  TensorShape storage[kMaxTensors];
  const std::span<const TensorShape> inputs = shapes_of(request, storage);
  for (const AcceptedSignature& signature : rules.batchable) {
    if (const std::uint32_t rows = rows_under(signature, inputs, rules.max_batch); rows != 0) return rows;
  }
  return 0;
}

AdmissionVerdict admit_request(const RequestDescriptor& request, std::uint64_t arena_bytes, const AdmissionRules& rules,
                               std::uint64_t now_ns) {
  if (request.flags & ~kRequestFlagsKnown) {
    return refuse(Status::kInvalidRequest,
                  "unknown request flags " + std::to_string(request.flags & ~kRequestFlagsKnown) +
                      " (this sidecar speaks protocol version " + std::to_string(kProtocolVersion) + ")");
  }
  if (request.flags & kRequestFlagFlushCache)
    return AdmissionVerdict{AdmissionVerdict::Kind::kFlushCache, Status::kOk, {}};
  if (request.flags & kRequestFlagPing) return AdmissionVerdict{AdmissionVerdict::Kind::kPing, Status::kOk, {}};
  if (std::string problem = check_request(request, arena_bytes); !problem.empty()) {
    return refuse(Status::kInvalidRequest, std::move(problem));
  }
  // The cancel word is the client's, in its own arena: only its place is checked here.
  if ((request.flags & kRequestFlagCancellable) &&
      (arena_bytes < 8 || request.cancel_offset % 8 != 0 || request.cancel_offset > arena_bytes - 8)) {
    return refuse(Status::kInvalidRequest, "cancel word at offset " + std::to_string(request.cancel_offset) +
                                               " is outside the channel's arena or not 8-byte aligned");
  }
  if (request.deadline_ns != 0 && now_ns > request.deadline_ns) {
    return refuse(Status::kDeadlineExceeded, "the deadline passed before the request ran");
  }
  if (request.input_count != rules.input_count) {
    return refuse(Status::kInvalidRequest, "the model takes " + std::to_string(rules.input_count) +
                                               " input tensor(s), the request has " +
                                               std::to_string(request.input_count));
  }
  AdmissionVerdict verdict;
  if (batch_rows_of(request, rules) == 0) {
    if (std::string problem = match_signature(request, rules.accepted, verdict.signature_row); !problem.empty()) {
      return refuse(Status::kInvalidRequest, std::move(problem));
    }
  } else {
    // Rows of a batchable signature: counted under that signature, whose leading dim is 1.
    TensorShape storage[kMaxTensors];
    const std::span<const TensorShape> inputs = shapes_of(request, storage);
    for (std::size_t i = 0; i < rules.accepted.size(); ++i) {
      if (rows_under(rules.accepted[i], inputs, rules.max_batch) != 0) {
        verdict.signature_row = metrics_row(i);
        break;
      }
    }
  }
  return verdict;
}

}  // namespace sidecar
