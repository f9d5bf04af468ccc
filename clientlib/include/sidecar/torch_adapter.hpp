// Optional, header-only: to and from torch::Tensor for clients that already link LibTorch. The
// client library itself never includes this.
//
//   auto outputs = client.infer(sidecar::torch_adapter::view_of(input), timeout);
//   torch::Tensor logits = sidecar::torch_adapter::to_torch(outputs.value()[0]);
#pragma once

#include <torch/torch.h>

#include <stdexcept>

#include "sidecar/tensor.hpp"

namespace sidecar::torch_adapter {

inline c10::ScalarType scalar_type(DType dtype) {
  switch (dtype) {
    case DType::kFloat32: return c10::kFloat;
    case DType::kFloat64: return c10::kDouble;
    case DType::kFloat16: return c10::kHalf;
    case DType::kBFloat16: return c10::kBFloat16;
    case DType::kInt64: return c10::kLong;
    case DType::kInt32: return c10::kInt;
    case DType::kInt16: return c10::kShort;
    case DType::kInt8: return c10::kChar;
    case DType::kUInt8: return c10::kByte;
    case DType::kBool: return c10::kBool;
  }
  throw std::invalid_argument("unknown sidecar dtype");
}

inline DType dtype_for(c10::ScalarType type) {
  switch (type) {
    case c10::kFloat: return DType::kFloat32;
    case c10::kDouble: return DType::kFloat64;
    case c10::kHalf: return DType::kFloat16;
    case c10::kBFloat16: return DType::kBFloat16;
    case c10::kLong: return DType::kInt64;
    case c10::kInt: return DType::kInt32;
    case c10::kShort: return DType::kInt16;
    case c10::kChar: return DType::kInt8;
    case c10::kByte: return DType::kUInt8;
    case c10::kBool: return DType::kBool;
    default: throw std::invalid_argument(std::string("no sidecar dtype for ") + c10::toString(type));
  }
}

// A view of a contiguous CPU tensor; the tensor must outlive the view.
inline TensorView view_of(const torch::Tensor& tensor) {
  if (!tensor.is_contiguous() || !tensor.device().is_cpu()) {
    throw std::invalid_argument("view_of needs a contiguous CPU tensor: call .contiguous().cpu() first");
  }
  return TensorView{dtype_for(tensor.scalar_type()),
                    std::span<const std::int64_t>(tensor.sizes().data(), tensor.sizes().size()), tensor.data_ptr(),
                    tensor.nbytes()};
}

// A torch::Tensor that owns a copy of the view's bytes.
inline torch::Tensor to_torch(const TensorView& view) {
  const std::vector<std::int64_t> dims(view.shape.begin(), view.shape.end());
  return torch::from_blob(const_cast<void*>(view.data), dims, torch::TensorOptions().dtype(scalar_type(view.dtype)))
      .clone();
}

inline torch::Tensor to_torch(const Tensor& tensor) { return to_torch(tensor.view()); }

}  // namespace sidecar::torch_adapter
