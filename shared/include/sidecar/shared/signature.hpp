// Facts about input and output shapes that both sides rely on: what equal shapes are, how a shape
// is written for people, which requests may share a batched forward, and how much room a request's
// outputs need. The sidecar checks requests with these; the client sizes its output regions with
// them, so the two cannot disagree.
#pragma once

#include <algorithm>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "sidecar/shared/descriptors.hpp"
#include "sidecar/shared/output_region.hpp"

namespace sidecar {

// Input shapes of one call: one TensorShape per model input.
using InputSignature = std::vector<TensorShape>;

// Same dtype, rank and used dims; reserved fields and dims past the rank do not count.
inline bool same_shape(const TensorShape& a, const TensorShape& b) noexcept {
  if (a.dtype != b.dtype || a.rank != b.rank || a.rank > kMaxRank) return false;
  return std::equal(a.dims, a.dims + a.rank, b.dims);
}

// "[1, 3, 224, 224] float32"
inline std::string describe_shape(const TensorShape& shape) {
  std::string text = "[";
  const std::uint32_t rank = shape.rank <= kMaxRank ? shape.rank : kMaxRank;
  for (std::uint32_t i = 0; i < rank; ++i) {
    if (i) text += ", ";
    text += std::to_string(shape.dims[i]);
  }
  text += "] ";
  text += is_known_dtype(shape.dtype) ? std::string(dtype_name(static_cast<DType>(shape.dtype)))
                                      : "dtype#" + std::to_string(shape.dtype);
  return text;
}

// "[1, 3, 224, 224] float32, [1, 8] int64"
inline std::string describe_signature(std::span<const TensorShape> signature) {
  std::string text;
  for (std::size_t i = 0; i < signature.size(); ++i) {
    if (i) text += ", ";
    text += describe_shape(signature[i]);
  }
  return text;
}

// A declared signature takes batches when every input has a leading dim of 1: requests of the
// same shapes with 1..max_batch rows then share one forward, their rows concatenated along dim 0.
inline bool is_batchable(std::span<const TensorShape> signature) noexcept {
  return !signature.empty() && std::all_of(signature.begin(), signature.end(), [](const TensorShape& shape) {
    return shape.rank >= 1 && shape.rank <= kMaxRank && shape.dims[0] == 1;
  });
}

// Rows of a request whose inputs equal a batchable `signature` but for a shared leading dim of
// 1..max_batch; 0 when they do not.
inline std::uint32_t rows_under(std::span<const TensorShape> signature, std::span<const TensorShape> inputs,
                                std::uint32_t max_batch) noexcept {
  if (!is_batchable(signature) || inputs.size() != signature.size() || inputs[0].rank < 1) return 0;
  const std::int64_t rows = inputs[0].dims[0];
  if (rows < 1 || rows > static_cast<std::int64_t>(max_batch)) return 0;
  for (std::size_t i = 0; i < signature.size(); ++i) {
    const TensorShape& want = signature[i];
    const TensorShape& got = inputs[i];
    if (got.dtype != want.dtype || got.rank != want.rank || got.dims[0] != rows ||
        !std::equal(want.dims + 1, want.dims + want.rank, got.dims + 1)) {
      return 0;
    }
  }
  return static_cast<std::uint32_t>(rows);
}

// Two requests can share a forward: same input count, and inputs equal but for the leading dim.
inline bool same_trailing_shapes(std::span<const TensorShape> a, std::span<const TensorShape> b) noexcept {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const TensorShape& x = a[i];
    const TensorShape& y = b[i];
    if (x.dtype != y.dtype || x.rank != y.rank || x.rank < 1 || x.rank > kMaxRank ||
        !std::equal(x.dims + 1, x.dims + x.rank, y.dims + 1)) {
      return false;
    }
  }
  return true;
}

// The bytes a request's outputs take once packed in its output region, from the output shapes the
// sidecar published for a declared signature: exactly those for a request of exactly that
// signature, or scaled to the request's rows for a batchable one. 0 when the signature does not
// describe this request.
inline std::uint64_t expected_output_bytes(std::span<const TensorShape> signature_inputs,
                                           std::span<const TensorShape> signature_outputs,
                                           std::span<const TensorShape> request_inputs,
                                           std::uint32_t max_batch) noexcept {
  if (request_inputs.size() != signature_inputs.size() || signature_outputs.size() > kMaxTensors) return 0;
  bool exact = true;
  for (std::size_t i = 0; i < request_inputs.size(); ++i) exact = exact && same_shape(signature_inputs[i], request_inputs[i]);
  const std::uint32_t rows = exact ? 1 : rows_under(signature_inputs, request_inputs, max_batch);
  if (rows == 0) return 0;
  std::uint64_t sizes[kMaxTensors];
  for (std::size_t o = 0; o < signature_outputs.size(); ++o) {
    const TensorShape& shape = signature_outputs[o];
    std::uint64_t size = dtype_size(static_cast<DType>(shape.dtype));
    for (std::uint32_t d = 0; d < shape.rank && d < kMaxRank; ++d) {
      // A batched request's outputs have its rows along dim 0, as the batch split gives them.
      size *= static_cast<std::uint64_t>(d == 0 && !exact ? rows : shape.dims[d]);
    }
    sizes[o] = size;
  }
  return OutputRegion::packed_bytes(sizes, static_cast<std::uint32_t>(signature_outputs.size()));
}

}  // namespace sidecar
