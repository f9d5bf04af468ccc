// Who takes requests from the rings, and when: leader/follower over the worker threads.
//
// One worker at a time (the leader) polls the request rings, round-robin over the active channels
// so that a busy client cannot starve the others, spinning before it sleeps (see LeaderWake) for
// as long as requests have lately come within (AdaptiveSpin), at most --spin-us. When it takes a request it hands leadership to the next worker and runs the request
// itself: no hand-off between threads on the hot path, and only one thread spinning, which matters
// on two cores where the client spins too. With --max-batch, the leader keeps taking compatible
// requests for up to --max-queue-delay-us and runs them as one forward.
#pragma once

#include <atomic>
#include <cstdint>
#include <condition_variable>
#include <mutex>

#include "admission.hpp"
#include "channel_table.hpp"
#include "execution.hpp"
#include "leader_wake.hpp"
#include "loaded_model.hpp"
#include "sidecar/shared/adaptive_spin.hpp"
#include "work.hpp"

namespace sidecar {

// Which worker leads: one at a time, the others wait. Not a plain mutex: a worker of a retired pool
// (a reload) waiting to lead must return at once, even while a worker of the new pool leads an idle
// sidecar and so never lets go. Handing leadership on is on every request's path: with no worker
// waiting it is one store, and a compare-and-swap takes it back; a worker that must wait does so on
// a condition variable, and costs its releaser one futex wake.
class Leadership {
 public:
  // Blocks until this worker leads (true) or `give_up()` holds (false). `give_up` is read under the
  // lock: whoever changes what it reads calls wake_all() afterwards.
  template <typename GiveUp>
  bool acquire(GiveUp&& give_up) {
    if (try_take()) return true;
    std::unique_lock lock(mutex_);
    // Counted before the last look (both sequentially consistent): a release either sees this
    // waiter and wakes it under the lock, or came before the look, which then takes over.
    waiting_.fetch_add(1, std::memory_order_seq_cst);
    while (!try_take()) {
      if (give_up()) {
        waiting_.fetch_sub(1, std::memory_order_relaxed);
        return false;
      }
      free_.wait(lock);
    }
    waiting_.fetch_sub(1, std::memory_order_relaxed);
    return true;
  }
  void release() {
    taken_.store(false, std::memory_order_seq_cst);
    if (waiting_.load(std::memory_order_seq_cst) != 0) {
      { std::lock_guard lock(mutex_); }
      free_.notify_one();
    }
  }
  void wake_all() {
    { std::lock_guard lock(mutex_); }
    free_.notify_all();
  }

 private:
  bool try_take() noexcept {
    bool expected = false;
    return taken_.compare_exchange_strong(expected, true, std::memory_order_seq_cst);
  }

  std::mutex mutex_;
  std::condition_variable free_;
  std::atomic<bool> taken_{false};
  std::atomic<int> waiting_{0};
};

struct SchedulerSettings {
  int intra_op_threads = 1;
  std::uint64_t spin_ns = 0;
  std::uint64_t max_queue_delay_ns = 0;
  std::uint64_t wake_ahead_ns = 0;
};

class Scheduler {
 public:
  Scheduler(const SchedulerSettings& settings, ChannelTable& table, LeaderWake& wake, StatusPage& status,
            Executor& executor);

  // One worker's loop: lead or follow, run what it took on `model` (which this thread was warmed
  // on), until stop() or until its pool is retired. Workers of a new pool (a reload) serve beside
  // the old one's until those are retired.
  void serve(const LoadedModel& model, MetricsRecorder metrics, std::uint64_t pool);
  // Workers of pools before `pool` return from serve() once they finish what they run. Any thread.
  void retire_pools_before(std::uint64_t pool);
  // Workers return from serve() once they finish what they run. Any thread.
  void stop();
  // After every worker returned: answers what is still queued with "shutting down".
  void answer_queued_with_shutdown();

 private:
  bool lead_and_take(Work& work, std::uint64_t pool);
  bool retired(std::uint64_t pool) const noexcept {
    return stopping_.load(std::memory_order_acquire) || pool < first_serving_pool_.load(std::memory_order_acquire);
  }
  void gather_batch(Work& work);
  bool poll_once(Work& work, const RequestDescriptor* batch_with);
  bool can_take_from(ChannelSlot& slot);
  void prefetch_likely_lines(ChannelSlot& slot) noexcept;
  void prefetch_output_lines(ChannelSlot& slot, const RequestDescriptor& request) noexcept;
  // Wakes a sleeping client as its request is taken, when its last one was answered quickly; times
  // the request for the next decision.
  void wake_ahead(ChannelSlot& slot, TakenRequest& taken) noexcept;
  // True when it woke the client.
  bool wake_ahead_if_quick(ChannelSlot& slot) noexcept;
  bool any_request_waiting();
  // A request waits that could join the batch led by `first`, which has `batch_rows` rows so far.
  bool batchable_request_waiting(const AdmissionRules& rules, const RequestDescriptor& first,
                                 std::uint32_t batch_rows);
  // Rows `candidate` would add to the batch led by `first`, or 0 when it cannot join it.
  std::uint32_t rows_joining(const AdmissionRules& rules, const RequestDescriptor& candidate,
                             const RequestDescriptor& first, std::uint32_t batch_rows) const;
  bool spinning_fits() const noexcept;
  // Tells the spin policy how long after the leader began waiting `request` came.
  void record_arrival(const RequestDescriptor& request, std::uint64_t wait_began_ns) noexcept;
  // Sleeps until a client wakes the leader, `timeout_ns` passes, or (checked after announcing the
  // sleep) `worth_waking()` already holds. False when it slept and no client woke it.
  template <typename WorthWaking>
  bool sleep_until(WorthWaking&& worth_waking, std::uint64_t timeout_ns);

  SchedulerSettings settings_;
  ChannelTable& table_;
  LeaderWake& wake_;
  StatusPage& status_;
  Executor& executor_;

  Leadership leadership_;
  std::uint32_t poll_cursor_ = 0;         // the leader's
  std::uint64_t next_service_order_ = 1;  // the leader's
  AdaptiveSpin spin_policy_;              // the leader's
  std::atomic<bool> stopping_{false};
  std::atomic<std::uint64_t> first_serving_pool_{0};
  std::atomic<int> executing_{0};  // workers running a request
  int usable_cpus_ = 1;
  int cpus_kept_for_clients_ = 0;
};

}  // namespace sidecar
