// NumPy .npy files in and out of sidecar tensors, for sidecarctl and tests. No NumPy needed.
//
//   sidecar::Tensor input = sidecar::npy::read_npy("input.npy");   // np.save("input.npy", a)
//   sidecar::npy::write_npy("output.npy", outputs[0].view());      // np.load("output.npy")
//
// Reads format versions 1.0, 2.0 and 3.0; writes 1.0, or 2.0 when the header does not fit 1.0's
// 16-bit length, byte for byte what np.save writes. Only C-order, little-endian (or byte-order-free)
// arrays of the dtypes in dtype_for_descr: that is what a tensor in shared memory is, so anything
// else is refused with a message saying how to convert it rather than converted silently.
//
// Failures throw std::runtime_error whose message starts with the file name.
#pragma once

#include <cstddef>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "sidecar/tensor.hpp"

namespace sidecar::npy {

// The dtype a NumPy type string such as "<f4" or "|u1" stands for; nullopt when unsupported
// (including big-endian strings).
std::optional<DType> dtype_for_descr(std::string_view descr);

// The type string np.save writes for `dtype` ("<f4", "|b1"...); throws std::runtime_error for a
// dtype NumPy has no type string for (bfloat16).
std::string descr_for(DType dtype);

// Reads the .npy file at `path`.
Tensor read_npy(const std::string& path);

// Parses the bytes of a .npy file; `source` names them in error messages.
Tensor parse_npy(std::span<const std::byte> bytes, const std::string& source);

// Writes `tensor` to `path` (replacing it) as a .npy file.
void write_npy(const std::string& path, const TensorView& tensor);

// The bytes write_npy writes.
std::vector<std::byte> encode_npy(const TensorView& tensor);

}  // namespace sidecar::npy
