// Where a request's outputs go in its client's arena: packed in order, each at kTensorAlignment,
// inside the region the request reserved. The sidecar's answers, its cache hits and a client's own
// cache hits all place outputs this way.
#pragma once

#include <cstdint>

#include "sidecar/shared/descriptors.hpp"

namespace sidecar {

struct OutputRegion {
  std::uint64_t offset = 0;  // from the start of the arena
  std::uint64_t capacity = 0;

  // Bytes `count` outputs of these sizes take once packed (saturates instead of wrapping).
  static std::uint64_t packed_bytes(const std::uint64_t* sizes, std::uint32_t count) noexcept {
    std::uint64_t needed = 0;
    for (std::uint32_t i = 0; i < count; ++i) {
      const std::uint64_t start = align_up(needed, kTensorAlignment);
      if (start < needed || sizes[i] > ~0ull - start) return ~0ull;
      needed = start + sizes[i];
    }
    return needed;
  }

  // True when [at, at + bytes) lies inside the region.
  bool contains(std::uint64_t at, std::uint64_t bytes) const noexcept {
    return at >= offset && bytes <= capacity && at - offset <= capacity - bytes;
  }

  // Arena offsets for the outputs, or false when they do not fit in the region.
  bool place(const std::uint64_t* sizes, std::uint32_t count, std::uint64_t* offsets) const noexcept {
    if (packed_bytes(sizes, count) > capacity) return false;
    std::uint64_t cursor = 0;
    for (std::uint32_t i = 0; i < count; ++i) {
      cursor = align_up(cursor, kTensorAlignment);
      offsets[i] = offset + cursor;
      cursor += sizes[i];
    }
    return true;
  }
};

}  // namespace sidecar
