// Pacing a closed-loop client to a rate, so that a row can show a service that is not saturated:
// request k starts at its slot (k / rate after the first) or as soon as the answer before it came,
// whichever is later. Latency is still taken from send to answer, so a late answer delays the next
// request but never counts the wait for a slot.
#pragma once

#include <cerrno>
#include <cstdint>
#include <ctime>

#include "sidecar/shared/clock.hpp"

namespace sidecar::bench {

class Pacer {
 public:
  // `requests_per_s` 0: no pacing, every request starts as soon as the last answer came.
  explicit Pacer(double requests_per_s)
      : interval_ns_(requests_per_s > 0 ? static_cast<std::uint64_t>(1e9 / requests_per_s) : 0) {}

  // Sleeps until the next request's slot, if it has not passed.
  void wait_for_slot() {
    if (interval_ns_ == 0) return;
    if (next_slot_ns_ == 0) next_slot_ns_ = monotonic_ns();
    const timespec slot = timespec_from_ns(next_slot_ns_);
    while (::clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &slot, nullptr) == EINTR) {
    }
    next_slot_ns_ += interval_ns_;
  }

 private:
  std::uint64_t interval_ns_;
  std::uint64_t next_slot_ns_ = 0;
};

}  // namespace sidecar::bench
