// Tensors as the client library sees them: a dtype, a shape and bytes. No LibTorch.
//
//   std::vector<float> pixels(1 * 3 * 224 * 224);
//   sidecar::TensorView input = sidecar::TensorView::of(pixels, {1, 3, 224, 224});
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "sidecar/export.h"
#include "sidecar/shared/dtype.hpp"

namespace sidecar {

template <typename T>
constexpr DType dtype_of() {
  if constexpr (std::is_same_v<T, float>)
    return DType::kFloat32;
  else if constexpr (std::is_same_v<T, double>)
    return DType::kFloat64;
  else if constexpr (std::is_same_v<T, std::int64_t>)
    return DType::kInt64;
  else if constexpr (std::is_same_v<T, std::int32_t>)
    return DType::kInt32;
  else if constexpr (std::is_same_v<T, std::int16_t>)
    return DType::kInt16;
  else if constexpr (std::is_same_v<T, std::int8_t>)
    return DType::kInt8;
  else if constexpr (std::is_same_v<T, std::uint8_t>)
    return DType::kUInt8;
  else if constexpr (std::is_same_v<T, bool>)
    return DType::kBool;
  else
    static_assert(!sizeof(T), "no sidecar dtype for this type");
}

// A non-owning tensor: the caller keeps `shape` and `data` alive.
struct TensorView {
  DType dtype = DType::kFloat32;
  std::span<const std::int64_t> shape;
  const void* data = nullptr;
  std::size_t bytes = 0;

  template <typename T>
  static TensorView of(std::span<const T> values, std::span<const std::int64_t> shape) {
    return TensorView{dtype_of<T>(), shape, values.data(), values.size_bytes()};
  }
  template <typename T>
  static TensorView of(const std::vector<T>& values, std::span<const std::int64_t> shape) {
    return of(std::span<const T>(values), shape);
  }

  std::uint64_t element_count() const noexcept {
    std::uint64_t count = 1;
    for (std::int64_t dim : shape) count *= static_cast<std::uint64_t>(dim);
    return count;
  }
  template <typename T>
  std::span<const T> values() const noexcept {
    return {static_cast<const T*>(data), bytes / sizeof(T)};
  }
};

// An owning tensor, for results that must outlive the next call.
struct Tensor {
  DType dtype = DType::kFloat32;
  std::vector<std::int64_t> shape;
  std::vector<std::byte> data;

  static Tensor copy_of(const TensorView& view) {
    Tensor tensor;
    tensor.dtype = view.dtype;
    tensor.shape.assign(view.shape.begin(), view.shape.end());
    tensor.data.resize(view.bytes);
    if (view.bytes) std::memcpy(tensor.data.data(), view.data, view.bytes);
    return tensor;
  }
  TensorView view() const noexcept { return TensorView{dtype, shape, data.data(), data.size()}; }
  template <typename T>
  std::span<const T> values() const noexcept {
    return {reinterpret_cast<const T*>(data.data()), data.size() / sizeof(T)};
  }
};

// "[1, 3, 224, 224] float32"
SIDECAR_API std::string describe(DType dtype, std::span<const std::int64_t> shape);

}  // namespace sidecar
