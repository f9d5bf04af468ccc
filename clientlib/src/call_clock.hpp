// A call's deadline and its one reading of the clock. Private to clientlib/src.
#pragma once

#include <chrono>
#include <cstdint>

#include "sidecar/shared/clock.hpp"

namespace sidecar::detail {

// CLOCK_MONOTONIC nanoseconds `timeout` after `now_ns`; a huge timeout saturates instead of wrapping.
inline std::uint64_t deadline_after(std::uint64_t now_ns, std::chrono::nanoseconds timeout) {
  if (timeout.count() <= 0) return now_ns;
  const auto nanos = static_cast<std::uint64_t>(timeout.count());
  return nanos > ~0ull - now_ns ? ~0ull : now_ns + nanos;
}
inline std::uint64_t deadline_after(std::chrono::nanoseconds timeout) { return deadline_after(monotonic_ns(), timeout); }

// Reading the clock costs about as much as a cache line crossing between cores: a call reads it
// once and passes the reading on (the liveness check, the deadline, the request's post time, the
// start of the wait for its answer).
struct CallClock {
  std::uint64_t now_ns;
  std::uint64_t deadline_ns;
  static CallClock after(std::chrono::nanoseconds timeout) {
    const std::uint64_t now = monotonic_ns();
    return {now, deadline_after(now, timeout)};
  }
};

}  // namespace sidecar::detail
