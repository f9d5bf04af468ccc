// Structural checks on descriptors: what any descriptor must satisfy before a byte of it is used,
// whatever the model. The sidecar runs them on its private copy of every request; the client runs
// them on responses. Each returns an empty string when the descriptor is sound, else the reason.
#pragma once

#include <cstdint>
#include <string>

#include "sidecar/shared/descriptors.hpp"
#include "sidecar/shared/signature.hpp"

namespace sidecar {

// Element count and byte size of a shape, or false when a dim is negative or the size overflows.
inline bool shape_byte_size(const TensorShape& shape, std::uint64_t& bytes) noexcept {
  const std::size_t element = dtype_size(static_cast<DType>(shape.dtype));
  if (element == 0 || shape.rank > kMaxRank) return false;
  std::uint64_t total = element;
  for (std::uint32_t i = 0; i < shape.rank; ++i) {
    if (shape.dims[i] < 0) return false;
    if (__builtin_mul_overflow(total, static_cast<std::uint64_t>(shape.dims[i]), &total)) return false;
  }
  bytes = total;
  return true;
}

// A tensor that claims to live in an arena of `arena_bytes`: known dtype, rank <= 8, dims >= 0,
// byte count equal to the shape's, aligned offset, and [offset, offset + bytes) inside the arena.
inline std::string check_tensor(const TensorDescriptor& tensor, std::uint64_t arena_bytes) {
  if (!is_known_dtype(tensor.shape.dtype)) {
    return "unknown dtype code " + std::to_string(tensor.shape.dtype);
  }
  if (tensor.shape.rank > kMaxRank) {
    return "rank " + std::to_string(tensor.shape.rank) + " exceeds the maximum of " + std::to_string(kMaxRank);
  }
  std::uint64_t expected = 0;
  if (!shape_byte_size(tensor.shape, expected)) {
    return "shape " + describe_shape(tensor.shape) + " has a negative dimension or overflows";
  }
  if (tensor.bytes != expected) {
    return "byte count " + std::to_string(tensor.bytes) + " does not match shape " + describe_shape(tensor.shape) +
           ", which needs " + std::to_string(expected);
  }
  if (tensor.offset % kTensorAlignment != 0) {
    return "offset " + std::to_string(tensor.offset) + " is not " + std::to_string(kTensorAlignment) + "-byte aligned";
  }
  if (tensor.offset > arena_bytes || tensor.bytes > arena_bytes - tensor.offset) {
    return "bytes [" + std::to_string(tensor.offset) + ", +" + std::to_string(tensor.bytes) +
           ") lie outside the channel's arena of " + std::to_string(arena_bytes) + " bytes";
  }
  return {};
}

inline std::string check_request(const RequestDescriptor& request, std::uint64_t arena_bytes) {
  if (request.input_count == 0 || request.input_count > kMaxTensors) {
    return "input count " + std::to_string(request.input_count) + " is not in 1.." + std::to_string(kMaxTensors);
  }
  for (std::uint32_t i = 0; i < request.input_count; ++i) {
    std::string problem = check_tensor(request.inputs[i], arena_bytes);
    if (!problem.empty()) return "input " + std::to_string(i) + ": " + problem;
  }
  if (request.output_offset % kTensorAlignment != 0 || request.output_offset > arena_bytes ||
      request.output_capacity > arena_bytes - request.output_offset) {
    return "output region [" + std::to_string(request.output_offset) + ", +" + std::to_string(request.output_capacity) +
           ") is unaligned or outside the channel's arena of " + std::to_string(arena_bytes) + " bytes";
  }
  return {};
}

}  // namespace sidecar
