// Element types that cross the process boundary. The numeric values are part of the shared-memory
// layout (they are stored in descriptors), so they never change; new types get new numbers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace sidecar {

enum class DType : std::uint8_t {
  kFloat32 = 1,
  kFloat64 = 2,
  kFloat16 = 3,
  kBFloat16 = 4,
  kInt64 = 5,
  kInt32 = 6,
  kInt16 = 7,
  kInt8 = 8,
  kUInt8 = 9,
  kBool = 10,
};

// 0 for a value that is not a known dtype: callers treat that as "reject".
constexpr std::size_t dtype_size(DType dtype) noexcept {
  switch (dtype) {
    case DType::kFloat64:
    case DType::kInt64: return 8;
    case DType::kFloat32:
    case DType::kInt32: return 4;
    case DType::kFloat16:
    case DType::kBFloat16:
    case DType::kInt16: return 2;
    case DType::kInt8:
    case DType::kUInt8:
    case DType::kBool: return 1;
  }
  return 0;
}

constexpr bool is_known_dtype(std::uint8_t raw) noexcept { return dtype_size(static_cast<DType>(raw)) != 0; }

constexpr std::string_view dtype_name(DType dtype) noexcept {
  switch (dtype) {
    case DType::kFloat32: return "float32";
    case DType::kFloat64: return "float64";
    case DType::kFloat16: return "float16";
    case DType::kBFloat16: return "bfloat16";
    case DType::kInt64: return "int64";
    case DType::kInt32: return "int32";
    case DType::kInt16: return "int16";
    case DType::kInt8: return "int8";
    case DType::kUInt8: return "uint8";
    case DType::kBool: return "bool";
  }
  return "unknown";
}

// The dtype's name, or "dtype#N" for a byte no DType has (a client's, or a newer peer's).
inline std::string dtype_text(std::uint8_t raw) {
  return is_known_dtype(raw) ? std::string(dtype_name(static_cast<DType>(raw))) : "dtype#" + std::to_string(raw);
}

inline std::optional<DType> dtype_from_name(std::string_view name) noexcept {
  for (std::uint8_t raw = 1; raw <= 10; ++raw) {
    const auto dtype = static_cast<DType>(raw);
    if (dtype_name(dtype) == name) return dtype;
  }
  if (name == "float") return DType::kFloat32;
  if (name == "double") return DType::kFloat64;
  if (name == "long") return DType::kInt64;
  if (name == "int") return DType::kInt32;
  return std::nullopt;
}

}  // namespace sidecar
