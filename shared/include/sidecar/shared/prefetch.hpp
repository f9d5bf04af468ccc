// Asking for cache lines before they are needed. Between two processes on two cores every line the
// other side wrote last costs a crossing; lines whose address is known early are asked for in
// parallel with the ones that must come first (a descriptor before the tensors it points to), and
// lines about to be written are taken over while other work goes on.
#pragma once

#include <cstddef>
#include <cstdint>

#include "sidecar/shared/spsc_ring.hpp"

namespace sidecar {

// Bytes at an offset in a channel's arena: where a side expects the next lines it will touch.
struct ArenaSpan {
  std::uint64_t offset = 0;
  std::uint64_t bytes = 0;
};

// Lines beyond this are left to the hardware's own stream prefetcher.
inline constexpr std::size_t kMaxPrefetchBytes = 1024;

inline void prefetch_for_read(const void* begin, std::size_t bytes) noexcept {
  const auto* at = static_cast<const std::uint8_t*>(begin);
  for (std::size_t offset = 0; offset < bytes && offset < kMaxPrefetchBytes; offset += kCacheLine) {
    __builtin_prefetch(at + offset, 0, 3);
  }
}

inline void prefetch_for_write(void* begin, std::size_t bytes) noexcept {
  auto* at = static_cast<std::uint8_t*>(begin);
  for (std::size_t offset = 0; offset < bytes && offset < kMaxPrefetchBytes; offset += kCacheLine) {
#if defined(__x86_64__)
    // PREFETCHW: the line in a writable state. GCC emits it only for -mprfchw; every x86-64 this
    // runs on has it (a no-op on Intel before Broadwell).
    asm volatile("prefetchw %0" : : "m"(*(at + offset)));
#else
    __builtin_prefetch(at + offset, 1, 3);
#endif
  }
}

}  // namespace sidecar
