// How long a waiter spins before it sleeps, learned from how long its recent waits lasted, as an
// adaptive mutex learns how long to spin for its lock. Both sides wait this way: the sidecar's
// leader for the next request, a client for its answer.
//
// Spinning buys latency with CPU. It pays while what is awaited comes within the budget; a waiter
// whose requests come a millisecond apart would otherwise spin its whole budget for each of them
// and then sleep anyway. So: spin for a few times the typical short wait (never more than the
// budget), and not at all once several waits in a row outlasted the budget. A busy peer keeps
// the spinning latency; a slow one costs what a sleeping waiter costs.
//
// Pure bookkeeping, no clock: the waiter says how long each wait lasted.
//
//   AdaptiveSpin spin(budget_ns);
//   const std::uint64_t spin_for = spin.spin_ns();   // spin this long, then sleep
//   ...                                              // the awaited thing came after `waited_ns`
//   spin.record(waited_ns);
#pragma once

#include <algorithm>
#include <cstdint>

namespace sidecar {

class AdaptiveSpin {
 public:
  // Waits that outlast this many in a row stop the spinning.
  static constexpr std::uint32_t kLongWaitsBeforeSleepingAtOnce = 3;
  // The shortest spin, whatever the typical wait: a busy peer's pauses between requests (an
  // interrupt, a page fault, a little work of its own) must not cost it a wake-up each.
  static constexpr std::uint64_t kShortestSpinNs = 20'000;
  // How far past the typical wait a spin goes: the waits of a busy peer vary.
  static constexpr std::uint64_t kHeadroom = 4;
  // Sleeping at once, the waiter spins its whole budget once in a while to see whether waits have
  // become short again (a waiter that cannot time its waits exactly, a client, learns only this
  // way); each probe that finds them still long doubles the interval.
  static constexpr std::uint32_t kFirstProbeAfter = 16;
  static constexpr std::uint32_t kLastProbeAfter = 1024;

  explicit AdaptiveSpin(std::uint64_t budget_ns = 0) noexcept : budget_ns_(budget_ns) {}

  std::uint64_t budget_ns() const noexcept { return budget_ns_; }

  // How long the wait that starts now spins before it sleeps (0: sleep at once). Called once per
  // wait: it counts the waits between probes.
  std::uint64_t spin_ns() noexcept {
    if (budget_ns_ == 0) return 0;
    if (long_waits_in_a_row_ < kLongWaitsBeforeSleepingAtOnce) {
      return std::min(budget_ns_, std::max(kShortestSpinNs, kHeadroom * typical_short_wait_ns_));
    }
    if (waits_until_probe_ > 1) {
      --waits_until_probe_;
      return 0;
    }
    probing_ = true;
    waits_until_probe_ = probe_after_;
    return budget_ns_;
  }

  // The wait that began at the last spin_ns() ended: what it waited for came `waited_ns` after it
  // began (came, not was noticed: a waiter that slept counts the time to its wake-up only when
  // it cannot know better).
  void record(std::uint64_t waited_ns) noexcept {
    if (budget_ns_ == 0) return;
    if (waited_ns > budget_ns_) {
      if (long_waits_in_a_row_ < kLongWaitsBeforeSleepingAtOnce) {
        if (++long_waits_in_a_row_ == kLongWaitsBeforeSleepingAtOnce) waits_until_probe_ = probe_after_;
      } else if (probing_) {
        probe_after_ = std::min(2 * probe_after_, kLastProbeAfter);
        waits_until_probe_ = probe_after_;
      }
      probing_ = false;
      return;
    }
    long_waits_in_a_row_ = 0;
    probing_ = false;
    probe_after_ = kFirstProbeAfter;
    // A moving average over about the last eight short waits.
    typical_short_wait_ns_ = typical_short_wait_ns_ - typical_short_wait_ns_ / 8 + waited_ns / 8;
  }

 private:
  std::uint64_t budget_ns_;
  std::uint64_t typical_short_wait_ns_ = 0;
  std::uint32_t long_waits_in_a_row_ = 0;
  std::uint32_t probe_after_ = kFirstProbeAfter;
  std::uint32_t waits_until_probe_ = kFirstProbeAfter;
  bool probing_ = false;
};

}  // namespace sidecar
