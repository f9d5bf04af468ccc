// Time and polite spinning, the same on both sides.
#pragma once

#include <cstdint>
#include <ctime>

namespace sidecar {

inline std::uint64_t monotonic_ns() noexcept {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000u + static_cast<std::uint64_t>(ts.tv_nsec);
}

inline timespec timespec_from_ns(std::uint64_t nanoseconds) noexcept {
  return timespec{static_cast<time_t>(nanoseconds / 1'000'000'000u), static_cast<long>(nanoseconds % 1'000'000'000u)};
}

// A spinning loop reads the clock once per this many looks at its ring: reading it costs more than
// a look, and a look more often notices sooner.
inline constexpr std::uint32_t kLooksPerClockRead = 16;

inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

}  // namespace sidecar
