// Facts about input and output shapes that both sides rely on: what equal shapes are, which
// shapes an accepted signature (with ranges of sizes) takes, how both are written for people, which
// requests may share a batched forward, and how much room a request's outputs need.
// The sidecar checks requests with these; the client sizes its output regions with them, so the
// two cannot disagree.
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

// Input by input, same_shape.
inline bool same_shapes(std::span<const TensorShape> a, std::span<const TensorShape> b) noexcept {
  return std::equal(a.begin(), a.end(), b.begin(), b.end(), same_shape);
}

// One input of an accepted signature: a dtype, a rank, and for each dim the sizes accepted,
// smallest[d]..largest[d]. A dim written `?` takes any size: its largest is kAnySize. A fixed shape
// (what --warmup-shape declares) has smallest == largest in every dim.
inline constexpr std::int64_t kAnySize = -1;

struct ShapeRange {
  std::uint8_t dtype;  // a DType value
  std::uint8_t rank;   // <= kMaxRank
  std::uint16_t reserved0;
  std::uint32_t reserved1;
  std::int64_t smallest[kMaxRank];
  std::int64_t largest[kMaxRank];  // kAnySize: no bound
};
static_assert(sizeof(ShapeRange) == 136 && alignof(ShapeRange) == 8);

// Input ranges of one accepted call: one ShapeRange per model input.
using AcceptedSignature = std::vector<ShapeRange>;

inline ShapeRange exactly(const TensorShape& shape) noexcept {
  ShapeRange range{};
  range.dtype = shape.dtype;
  range.rank = shape.rank;
  for (std::uint32_t d = 0; d < shape.rank && d < kMaxRank; ++d) range.smallest[d] = range.largest[d] = shape.dims[d];
  return range;
}

inline AcceptedSignature exactly(std::span<const TensorShape> signature) {
  AcceptedSignature accepted;
  for (const TensorShape& shape : signature) accepted.push_back(exactly(shape));
  return accepted;
}

inline bool dim_within(const ShapeRange& range, std::uint32_t d, std::int64_t size) noexcept {
  return size >= range.smallest[d] && (range.largest[d] == kAnySize || size <= range.largest[d]);
}

inline bool within(const ShapeRange& range, const TensorShape& shape) noexcept {
  if (shape.dtype != range.dtype || shape.rank != range.rank || shape.rank > kMaxRank) return false;
  for (std::uint32_t d = 0; d < shape.rank; ++d) {
    if (!dim_within(range, d, shape.dims[d])) return false;
  }
  return true;
}

inline bool within(std::span<const ShapeRange> accepted, std::span<const TensorShape> inputs) noexcept {
  if (accepted.size() != inputs.size()) return false;
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    if (!within(accepted[i], inputs[i])) return false;
  }
  return true;
}

// Every dim has a largest size: the signature's largest request exists.
inline bool bounded(std::span<const ShapeRange> accepted) noexcept {
  for (const ShapeRange& range : accepted) {
    for (std::uint32_t d = 0; d < range.rank && d < kMaxRank; ++d) {
      if (range.largest[d] == kAnySize) return false;
    }
  }
  return true;
}

// The largest request a bounded signature accepts.
inline InputSignature largest_request(std::span<const ShapeRange> accepted) {
  InputSignature largest;
  for (const ShapeRange& range : accepted) {
    TensorShape shape{};
    shape.dtype = range.dtype;
    shape.rank = range.rank;
    for (std::uint32_t d = 0; d < range.rank && d < kMaxRank; ++d) shape.dims[d] = range.largest[d];
    largest.push_back(shape);
  }
  return largest;
}

// "[1, 1..512] int64"; "?" for a dim of any size.
inline std::string describe_range(const ShapeRange& range) {
  std::string text = "[";
  const std::uint32_t rank = range.rank <= kMaxRank ? range.rank : kMaxRank;
  for (std::uint32_t d = 0; d < rank; ++d) {
    if (d) text += ", ";
    if (range.smallest[d] == 0 && range.largest[d] == kAnySize) {
      text += "?";
    } else if (range.smallest[d] == range.largest[d]) {
      text += std::to_string(range.smallest[d]);
    } else {
      text += std::to_string(range.smallest[d]) + "..";
      if (range.largest[d] != kAnySize) text += std::to_string(range.largest[d]);
    }
  }
  text += "] ";
  text += dtype_text(range.dtype);
  return text;
}

inline std::string describe_accepted(std::span<const ShapeRange> accepted) {
  std::string text;
  for (std::size_t i = 0; i < accepted.size(); ++i) {
    if (i) text += ", ";
    text += describe_range(accepted[i]);
  }
  return text;
}

// "[1, 3, 224, 224] float32": a fixed shape is a range of one size in every dim.
inline std::string describe_shape(const TensorShape& shape) { return describe_range(exactly(shape)); }

// "[1, 3, 224, 224] float32, [1, 8] int64"
inline std::string describe_signature(std::span<const TensorShape> signature) {
  return describe_accepted(exactly(signature));
}

// "([1, 1..512] int64) or ([1, 8] float32)": the signatures a sidecar accepts, for a refusal.
inline std::string describe_alternatives(std::span<const AcceptedSignature> accepted) {
  std::string text;
  for (std::size_t i = 0; i < accepted.size(); ++i) {
    if (i) text += " or ";
    text += "(" + describe_accepted(accepted[i]) + ")";
  }
  return text;
}

// An accepted signature takes batches when every input's leading dim is exactly 1: requests of
// the same shapes with 1..max_batch rows then share one forward, their rows concatenated along
// dim 0. Only requests of equal shapes share a forward (same_trailing_shapes).
inline bool is_batchable(std::span<const ShapeRange> accepted) noexcept {
  return !accepted.empty() && std::all_of(accepted.begin(), accepted.end(), [](const ShapeRange& range) {
    return range.rank >= 1 && range.rank <= kMaxRank && range.smallest[0] == 1 && range.largest[0] == 1;
  });
}

// Rows of a request whose inputs fall within a batchable `accepted` signature but for a shared
// leading dim of 1..max_batch; 0 when they do not.
inline std::uint32_t rows_under(std::span<const ShapeRange> accepted, std::span<const TensorShape> inputs,
                                std::uint32_t max_batch) noexcept {
  if (!is_batchable(accepted) || inputs.size() != accepted.size() || inputs[0].rank < 1) return 0;
  const std::int64_t rows = inputs[0].dims[0];
  if (rows < 1 || rows > static_cast<std::int64_t>(max_batch)) return 0;
  for (std::size_t i = 0; i < accepted.size(); ++i) {
    const ShapeRange& want = accepted[i];
    const TensorShape& got = inputs[i];
    if (got.dtype != want.dtype || got.rank != want.rank || got.dims[0] != rows) return 0;
    for (std::uint32_t d = 1; d < got.rank; ++d) {
      if (!dim_within(want, d, got.dims[d])) return 0;
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

// The most bytes a request's outputs can take once packed in its output region, from the output
// shapes the sidecar published for an accepted signature: those the model gave on the signature's
// largest request (for a fixed signature, its only one), scaled to the request's rows for a
// batched one. A bound, not a promise: the sidecar checks every forward's outputs against the room
// the client reserved and answers kOutputTooLarge with the bytes needed rather than write past it.
// 0 when the signature does not take this request.
inline std::uint64_t expected_output_bytes(std::span<const ShapeRange> accepted,
                                           std::span<const TensorShape> outputs_at_largest,
                                           std::span<const TensorShape> request_inputs,
                                           std::uint32_t max_batch) noexcept {
  if (outputs_at_largest.size() > kMaxTensors) return 0;
  const bool whole = within(accepted, request_inputs);
  const std::uint32_t rows = whole ? 1 : rows_under(accepted, request_inputs, max_batch);
  if (rows == 0) return 0;
  std::uint64_t sizes[kMaxTensors];
  for (std::size_t o = 0; o < outputs_at_largest.size(); ++o) {
    const TensorShape& shape = outputs_at_largest[o];
    std::uint64_t size = dtype_size(static_cast<DType>(shape.dtype));
    for (std::uint32_t d = 0; d < shape.rank && d < kMaxRank; ++d) {
      // A batched request's outputs have its rows along dim 0, as the batch split gives them.
      size *= static_cast<std::uint64_t>(d == 0 && !whole ? rows : shape.dims[d]);
    }
    sizes[o] = size;
  }
  return OutputRegion::packed_bytes(sizes, static_cast<std::uint32_t>(outputs_at_largest.size()));
}

}  // namespace sidecar
