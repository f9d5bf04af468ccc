// The input shapes the workers were warmed up on, to tell a forward on any other shape: its first
// call on each worker is a cold one (TorchScript specializes its graph per shape and thread), which
// operators see counted in the metrics.
#pragma once

#include <algorithm>
#include <cstdint>
#include <span>
#include <unordered_map>
#include <vector>

#include "sidecar/shared/signature.hpp"

namespace sidecar {

class WarmedShapes {
 public:
  WarmedShapes() = default;
  explicit WarmedShapes(const std::vector<InputSignature>& plan) {
    for (const InputSignature& shapes : plan) {
      by_hash_.emplace(hash(shapes), plan_.size());
      plan_.push_back(shapes);
    }
  }

  // The plan, in its order: what each worker warms up on.
  const std::vector<InputSignature>& plan() const noexcept { return plan_; }

  // Called on every forward: compares only against the warmed shapes of the same hash.
  bool contains(std::span<const TensorShape> shapes) const {
    const auto [first, last] = by_hash_.equal_range(hash(shapes));
    return std::any_of(first, last, [&](const auto& entry) { return same_shapes(plan_[entry.second], shapes); });
  }

 private:
  // FNV-1a over what same_shape compares: a miss here is a definite miss, a hit is confirmed.
  static std::uint64_t hash(std::span<const TensorShape> shapes) noexcept {
    std::uint64_t value = 0xcbf29ce484222325ull;
    const auto mix = [&](std::uint64_t word) {
      value ^= word;
      value *= 0x100000001b3ull;
    };
    for (const TensorShape& shape : shapes) {
      mix(shape.dtype);
      mix(shape.rank);
      for (std::uint32_t d = 0; d < shape.rank && d < kMaxRank; ++d) mix(static_cast<std::uint64_t>(shape.dims[d]));
    }
    return value;
  }

  std::vector<InputSignature> plan_;
  std::unordered_multimap<std::uint64_t, std::size_t> by_hash_;  // hash -> index in plan_
};

}  // namespace sidecar
