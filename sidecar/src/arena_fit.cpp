#include "arena_fit.hpp"

#include <algorithm>
#include <vector>

#include "shape_text.hpp"
#include "sidecar/shared/descriptor_check.hpp"
#include "sidecar/shared/output_region.hpp"

namespace sidecar {
namespace {

std::uint64_t bytes_of(const TensorShape& shape) {
  std::uint64_t bytes = 0;
  return shape_byte_size(shape, bytes) ? bytes : ~0ull;
}

std::uint64_t saturating_add(std::uint64_t a, std::uint64_t b) { return a > ~0ull - b ? ~0ull : a + b; }

std::uint64_t aligned(std::uint64_t bytes, std::uint64_t alignment) {
  return bytes > ~0ull - alignment ? ~0ull : align_up(bytes, alignment);
}

}  // namespace

std::uint64_t arena_bytes_for_request(std::span<const TensorShape> inputs, std::span<const TensorShape> outputs) {
  std::uint64_t needed = kTensorAlignment;  // the cancel word's line
  for (const TensorShape& input : inputs) needed = aligned(saturating_add(needed, bytes_of(input)), kTensorAlignment);
  std::uint64_t sizes[kMaxTensors];
  const std::uint32_t count = static_cast<std::uint32_t>(std::min<std::size_t>(outputs.size(), kMaxTensors));
  for (std::uint32_t i = 0; i < count; ++i) sizes[i] = bytes_of(outputs[i]);
  return aligned(saturating_add(needed, OutputRegion::packed_bytes(sizes, count)), kTensorAlignment);
}

std::vector<OutputBound> output_bounds(const AdmissionRules& rules, std::span<const WarmupResult> warmed) {
  std::vector<OutputBound> bounds;
  for (const AcceptedSignature& accepted : rules.accepted) {
    OutputBound bound;
    bound.accepted = accepted;
    if (bounded(accepted)) {
      const InputSignature largest = largest_request(accepted);
      for (const WarmupResult& result : warmed) {
        if (same_shapes(result.inputs, largest)) {
          bound.outputs = result.outputs;
          bound.known = true;
          break;
        }
      }
    }
    bounds.push_back(std::move(bound));
  }
  return bounds;
}

Done check_requests_fit_arena(std::span<const OutputBound> bounds, std::uint32_t max_batch, std::uint64_t arena_bytes) {
  for (const OutputBound& bound : bounds) {
    if (!bound.known) continue;
    std::vector<TensorShape> inputs = largest_request(bound.accepted);
    std::vector<TensorShape> outputs = bound.outputs;
    // The largest request of a batchable signature has max_batch rows, and so have its outputs
    // (the client reserves room for them the same way: signature.hpp's expected_output_bytes).
    const bool batched = max_batch > 1 && is_batchable(bound.accepted);
    if (batched) {
      for (TensorShape& shape : inputs) shape.dims[0] = max_batch;
      for (TensorShape& shape : outputs) {
        if (shape.rank >= 1) shape.dims[0] = max_batch;
      }
    }
    const std::uint64_t needed = arena_bytes_for_request(inputs, outputs);
    if (needed <= arena_bytes) continue;
    const std::uint64_t suggested = aligned(needed, kArenaAlignment);
    return {ErrorCode::kOutputTooLarge,
            "outputs of " + shape_flag_text(inputs) + " need " + std::to_string(needed) +
                " bytes of arena with their inputs, --arena-bytes is " + std::to_string(arena_bytes) +
                "; use --arena-bytes >= " + std::to_string(suggested) + (batched ? " (or a smaller --max-batch)" : "")};
  }
  return {};
}

}  // namespace sidecar
