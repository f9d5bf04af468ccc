// The sidecar's per-request bookkeeping that is reused rather than rebuilt for every request (the
// leadership hand-off, the taken requests' storage): what reuse must never carry over, and the
// exclusion the hand-off's fast path must keep.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

#include "scheduler.hpp"
#include "work.hpp"

namespace sidecar {
namespace {

TEST(Leadership, OneWorkerLeadsAtATimeWhetherItWaitedOrNot) {
  Leadership leadership;
  constexpr int kWorkers = 4;
  constexpr int kTurns = 20000;
  std::atomic<int> leading{0};
  std::atomic<int> most_leading{0};
  long turns_taken = 0;  // written only by the leader: a lost exclusion loses increments
  std::vector<std::thread> workers;
  for (int w = 0; w < kWorkers; ++w) {
    workers.emplace_back([&] {
      for (int turn = 0; turn < kTurns; ++turn) {
        ASSERT_TRUE(leadership.acquire([] { return false; }));
        const int now_leading = leading.fetch_add(1) + 1;
        int most = most_leading.load();
        while (now_leading > most && !most_leading.compare_exchange_weak(most, now_leading)) {
        }
        ++turns_taken;
        leading.fetch_sub(1);
        leadership.release();
        if (turn % 64 == 0) std::this_thread::yield();  // so that some acquire() calls do wait
      }
    });
  }
  for (std::thread& worker : workers) worker.join();
  EXPECT_EQ(most_leading.load(), 1);
  EXPECT_EQ(turns_taken, static_cast<long>(kWorkers) * kTurns);
}

TEST(Leadership, AWaitingWorkerReturnsWhenItsPoolIsRetired) {
  Leadership leadership;
  ASSERT_TRUE(leadership.acquire([] { return false; }));  // an idle leader that never lets go
  std::atomic<bool> retired{false};
  std::atomic<int> outcome{-1};
  std::thread waiter([&] { outcome = leadership.acquire([&] { return retired.load(); }) ? 1 : 0; });
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ(outcome.load(), -1);
  retired = true;
  leadership.wake_all();
  waiter.join();
  EXPECT_EQ(outcome.load(), 0);
  leadership.release();
  EXPECT_TRUE(leadership.acquire([] { return true; }));  // free: taken even by a retiring worker
}

TEST(TakenRequests, AReusedEntryStartsWithFreshBookkeeping) {
  TakenRequests taken;
  taken.reserve(2);
  ChannelSlot slot;
  TakenRequest& first = taken.add();
  first.slot = &slot;
  first.service_order = 7;
  first.taken_ns = 11;
  first.admitted_ns = 12;
  first.forward_end_ns = 13;
  first.forward_ns = 14;
  first.signature_row = 2;
  first.store_result = true;
  first.generation = 3;
  first.output_count = 4;
  TakenRequest& second = taken.add();
  second.store_result = true;
  EXPECT_EQ(taken.size(), 2u);
  taken.pop_back();
  taken.clear();
  EXPECT_EQ(taken.size(), 0u);

  const TakenRequestState fresh;
  for (int round = 0; round < 2; ++round) {
    TakenRequest& again = taken.add();
    EXPECT_EQ(again.slot, fresh.slot);
    EXPECT_EQ(again.service_order, fresh.service_order);
    EXPECT_EQ(again.taken_ns, fresh.taken_ns);
    EXPECT_EQ(again.admitted_ns, fresh.admitted_ns);
    EXPECT_EQ(again.forward_end_ns, fresh.forward_end_ns);
    EXPECT_EQ(again.forward_ns, fresh.forward_ns);
    EXPECT_EQ(again.signature_row, fresh.signature_row);
    EXPECT_EQ(again.store_result, fresh.store_result);
    EXPECT_EQ(again.generation, fresh.generation);
    EXPECT_EQ(again.output_count, fresh.output_count);
  }
  EXPECT_EQ(taken.size(), 2u);
  EXPECT_EQ(&taken[0], &first);  // the same storage, not a new entry
}

}  // namespace
}  // namespace sidecar
