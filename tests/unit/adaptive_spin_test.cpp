// The spin policy both sides wait by, fed synthetic wait lengths: no clock, no threads.
#include <gtest/gtest.h>

#include "sidecar/shared/adaptive_spin.hpp"

namespace sidecar {
namespace {

constexpr std::uint64_t kMicrosecond = 1'000;
constexpr std::uint64_t kBudget = 50 * kMicrosecond;

// Runs `waits` waits of `waited_ns` each; returns how long the last one was told to spin.
std::uint64_t wait_repeatedly(AdaptiveSpin& spin, std::uint64_t waited_ns, int waits) {
  std::uint64_t spun = 0;
  for (int i = 0; i < waits; ++i) {
    spun = spin.spin_ns();
    spin.record(waited_ns);
  }
  return spun;
}

TEST(AdaptiveSpin, NoBudgetNeverSpins) {
  AdaptiveSpin spin(0);
  EXPECT_EQ(wait_repeatedly(spin, 1 * kMicrosecond, 100), 0u);
  EXPECT_EQ(spin.spin_ns(), 0u);
}

TEST(AdaptiveSpin, AFreshWaiterSpinsTheShortestSpinWithinTheBudget) {
  AdaptiveSpin generous(1'000'000 * kMicrosecond);
  EXPECT_EQ(generous.spin_ns(), AdaptiveSpin::kShortestSpinNs);
  AdaptiveSpin small(5 * kMicrosecond);
  EXPECT_EQ(small.spin_ns(), 5 * kMicrosecond);
}

TEST(AdaptiveSpin, ABusyPeerKeepsTheWaiterSpinning) {
  AdaptiveSpin spin(kBudget);
  EXPECT_EQ(wait_repeatedly(spin, 1 * kMicrosecond, 1000), AdaptiveSpin::kShortestSpinNs);
}

TEST(AdaptiveSpin, SpinsAFewTimesTheTypicalWaitUpToTheBudget) {
  AdaptiveSpin spin(1'000'000 * kMicrosecond);
  wait_repeatedly(spin, 100 * kMicrosecond, 200);
  const std::uint64_t spun = spin.spin_ns();
  EXPECT_GT(spun, 100 * kMicrosecond);
  EXPECT_LE(spun, AdaptiveSpin::kHeadroom * 100 * kMicrosecond);

  AdaptiveSpin capped(kBudget);
  wait_repeatedly(capped, 40 * kMicrosecond, 200);
  EXPECT_EQ(capped.spin_ns(), kBudget);
}

TEST(AdaptiveSpin, APacedPeerSlowerThanTheBudgetStopsTheSpinning) {
  AdaptiveSpin spin(kBudget);
  // A client that sends every millisecond: every wait outlasts the budget.
  for (std::uint32_t i = 0; i < AdaptiveSpin::kLongWaitsBeforeSleepingAtOnce; ++i) {
    EXPECT_NE(spin.spin_ns(), 0u) << "wait " << i;
    spin.record(1000 * kMicrosecond);
  }
  EXPECT_EQ(spin.spin_ns(), 0u);
}

TEST(AdaptiveSpin, OneLongWaitAmongShortOnesDoesNotStopTheSpinning) {
  AdaptiveSpin spin(kBudget);
  wait_repeatedly(spin, 1 * kMicrosecond, 50);
  spin.spin_ns();
  spin.record(1000 * kMicrosecond);
  EXPECT_NE(spin.spin_ns(), 0u);
}

TEST(AdaptiveSpin, AShortWaitResumesTheSpinning) {
  AdaptiveSpin spin(kBudget);
  wait_repeatedly(spin, 1000 * kMicrosecond, 10);
  ASSERT_EQ(spin.spin_ns(), 0u);
  spin.record(2 * kMicrosecond);
  EXPECT_EQ(spin.spin_ns(), AdaptiveSpin::kShortestSpinNs);
}

// Sleeping at once, the waiter still spins a whole budget now and then, ever more rarely while
// waits stay long, so the cost of looking stays small.
TEST(AdaptiveSpin, ProbesGrowRarerWhileWaitsStayLong) {
  AdaptiveSpin spin(kBudget);
  std::vector<int> probes;
  for (int wait = 0; wait < 4000; ++wait) {
    const std::uint64_t spun = spin.spin_ns();
    if (wait >= static_cast<int>(AdaptiveSpin::kLongWaitsBeforeSleepingAtOnce) && spun != 0) {
      EXPECT_EQ(spun, kBudget);
      probes.push_back(wait);
    }
    spin.record(1000 * kMicrosecond);
  }
  ASSERT_GE(probes.size(), 4u);
  EXPECT_EQ(probes[1] - probes[0], 2 * static_cast<int>(AdaptiveSpin::kFirstProbeAfter));
  EXPECT_EQ(probes[2] - probes[1], 4 * static_cast<int>(AdaptiveSpin::kFirstProbeAfter));
  EXPECT_LE(probes.size(), 10u);
  for (std::size_t i = 1; i < probes.size(); ++i) {
    EXPECT_LE(probes[i] - probes[i - 1], static_cast<int>(AdaptiveSpin::kLastProbeAfter));
  }
}

// A waiter that only learns how long a wait lasted when it spun through it (a client, asleep, sees
// its wake-up, not the answer) finds short waits again through a probe.
TEST(AdaptiveSpin, AProbeThatFindsShortWaitsResumesTheSpinning) {
  AdaptiveSpin spin(kBudget);
  wait_repeatedly(spin, 1000 * kMicrosecond, AdaptiveSpin::kLongWaitsBeforeSleepingAtOnce);
  int waits = 0;
  // Asleep, every wait looks long (the wake-up outlasts the budget); spinning, it is short.
  while (true) {
    const std::uint64_t spun = spin.spin_ns();
    ++waits;
    if (spun != 0) {
      spin.record(1 * kMicrosecond);
      break;
    }
    spin.record(1000 * kMicrosecond);
    ASSERT_LT(waits, 1000);
  }
  EXPECT_EQ(waits, static_cast<int>(AdaptiveSpin::kFirstProbeAfter));
  EXPECT_EQ(spin.spin_ns(), AdaptiveSpin::kShortestSpinNs);
}

}  // namespace
}  // namespace sidecar
