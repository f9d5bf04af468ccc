#include "scheduler.hpp"

#include <algorithm>
#include <chrono>
#include <thread>

#include "options.hpp"
#include "rate_limited_log.hpp"
#include "sidecar/shared/clock.hpp"
#include "sidecar/shared/prefetch.hpp"

namespace sidecar {
namespace {

// The longest an idle leader sleeps before it looks again by itself: only a backstop, since every
// reason to look has an eventfd.
constexpr std::uint64_t kIdleSleepLimitNs = 100'000'000;

RateLimitedWarning ring_fault_warning;

}  // namespace

Scheduler::Scheduler(const SchedulerSettings& settings, ChannelTable& table, LeaderWake& wake, StatusPage& status,
                     Executor& executor)
    : settings_(settings), table_(table), wake_(wake), status_(status), executor_(executor), spin_policy_(settings.spin_ns) {
  usable_cpus_ = usable_cpu_count();
  // Sharing every CPU of the host with its clients, the sidecar keeps one for them (they spin
  // too); pinned apart from them, it may use all of its own.
  const auto online = static_cast<int>(std::thread::hardware_concurrency());
  cpus_kept_for_clients_ = usable_cpus_ >= online ? 1 : 0;
}

void Scheduler::serve(const LoadedModel& model, MetricsRecorder metrics, std::uint64_t pool) {
  Work work;
  work.model = &model;
  work.metrics = metrics;
  work.taken.reserve(std::max<std::uint32_t>(model.rules.max_batch, 1));
  while (leadership_.acquire([&] { return retired(pool); })) {
    const bool took = lead_and_take(work, pool);
    if (took) executing_.fetch_add(1, std::memory_order_relaxed);
    leadership_.release();  // a follower becomes the leader while this worker runs the request
    if (!took) break;
    executor_.execute(work);
    executing_.fetch_sub(1, std::memory_order_relaxed);
  }
}

void Scheduler::retire_pools_before(std::uint64_t pool) {
  first_serving_pool_.store(pool, std::memory_order_release);
  wake_.kick();               // the leader, asleep
  leadership_.wake_all();     // the workers waiting to lead
}

void Scheduler::stop() {
  stopping_.store(true, std::memory_order_release);
  wake_.kick();
  leadership_.wake_all();
}

// A spinning leader must not take a core from a worker that runs a forward, nor from a spinning
// client: when the cores are all spoken for, the leader sleeps at once instead (docs/latency.md
// has the measurement behind this).
bool Scheduler::spinning_fits() const noexcept {
  const int busy = executing_.load(std::memory_order_relaxed) * settings_.intra_op_threads;
  return busy + 1 + cpus_kept_for_clients_ <= usable_cpus_;
}

template <typename WorthWaking>
bool Scheduler::sleep_until(WorthWaking&& worth_waking, std::uint64_t timeout_ns) {
  // Announce the sleep, then look once more: a client that published before reading the flag is
  // seen here; one that reads it afterwards writes its eventfd. The fence pairs with the client's
  // between its publish and its read of the flag.
  status_.leader_sleeping.store(1, std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (stopping_.load(std::memory_order_acquire) || worth_waking()) {
    status_.leader_sleeping.store(0, std::memory_order_relaxed);
    return true;
  }
  const std::span<const std::uint32_t> woken = wake_.sleep(timeout_ns);
  status_.leader_sleeping.store(0, std::memory_order_relaxed);
  // Before anything else: the clients that woke us have posted a request, and the sooner their own
  // wake-up starts, the more of it the forward hides.
  for (const std::uint32_t index : woken) {
    ChannelSlot* slot = table_.active_slot(index);
    if (slot != nullptr && !slot->poisoned && !slot->reclaim_requested.load(std::memory_order_relaxed) &&
        settings_.wake_ahead_ns != 0 && wake_ahead_if_quick(*slot)) {
      slot->woken_before_take = true;
    }
  }
  return !woken.empty();
}

bool Scheduler::lead_and_take(Work& work, std::uint64_t pool) {
  work.taken.clear();
  work.batch_rows = 0;
  const std::uint64_t wait_began_ns = monotonic_ns();
  const std::uint64_t spin_ns = spin_policy_.spin_ns();
  std::uint64_t spin_until = wait_began_ns + spin_ns;
  std::uint32_t looks_since_clock = 0;
  while (!retired(pool)) {
    table_.reclaim_ready();
    if (poll_once(work, nullptr)) {
      record_arrival(work.taken.front().request, wait_began_ns);
      gather_batch(work);
      return true;
    }
    if (spin_ns != 0 && looks_since_clock++ != 0) {
      if (looks_since_clock == kLooksPerClockRead) looks_since_clock = 0;
      cpu_relax();
      continue;
    }
    if (spin_ns != 0 && monotonic_ns() < spin_until && spinning_fits()) {
      cpu_relax();
      continue;
    }
    // Spin again only after a client woke us: the backstop's periodic look finds nothing to spin for.
    const bool woken = sleep_until(
        [&] { return table_.reclaim_possible() || any_request_waiting() || retired(pool); }, kIdleSleepLimitNs);
    work.metrics.count_idle_look();
    if (woken) spin_until = monotonic_ns() + spin_ns;
    looks_since_clock = 0;
  }
  return false;
}

// The client's own stamp says when the request came, also to a leader that slept through it, which
// can then tell a request that came soon after it began waiting from one that came late. Only the
// spin policy reads it, which stays within --spin-us whatever a client writes there.
void Scheduler::record_arrival(const RequestDescriptor& request, std::uint64_t wait_began_ns) noexcept {
  if (request.posted_ns == 0) return;  // a client that does not say
  spin_policy_.record(request.posted_ns > wait_began_ns ? request.posted_ns - wait_began_ns : 0);
}

// The leader has taken a request. If it can be batched, the leader keeps taking compatible
// requests, round-robin over the channels, until the batch has max_batch rows or
// max_queue_delay_us has passed since the first was taken; then it runs them as one forward.
void Scheduler::gather_batch(Work& work) {
  const AdmissionRules& rules = work.model->rules;
  const std::uint32_t first_rows = batch_rows_of(work.taken[0].request, rules);
  if (first_rows == 0) return;
  work.batch_rows = first_rows;
  // A copy: poll_once appends to work.taken, which may move its elements.
  const RequestDescriptor first = work.taken[0].request;
  const std::uint64_t until = monotonic_ns() + settings_.max_queue_delay_ns;
  while (work.batch_rows < rules.max_batch && !stopping_.load(std::memory_order_acquire)) {
    if (poll_once(work, &first)) continue;
    const std::uint64_t now = monotonic_ns();
    if (now >= until) break;
    if (spinning_fits()) {
      cpu_relax();
      continue;
    }
    // No core to spare (a forward runs beside us): wait for the next request asleep, not spinning,
    // or the gathering itself would slow the batch that is running. Requests that cannot join the
    // batch do not count: waking for them would spin.
    sleep_until([&] { return batchable_request_waiting(rules, first, work.batch_rows); }, until - now);
  }
}

// Takes the request at the front of the next channel (round-robin) into work.taken. With
// `batch_with`, only a request that can join that batch (and fits in it); others stay queued.
bool Scheduler::poll_once(Work& work, const RequestDescriptor* batch_with) {
  // Round-robin from the channel after the last one served, so a busy channel cannot starve others.
  return table_.visit_active_from(poll_cursor_, [&](ChannelSlot& slot) {
    if (!can_take_from(slot)) return false;
    prefetch_likely_lines(slot);
    TakenRequest& taken = work.taken.add();
    // A private copy of the used part: from here on the client cannot change what we check.
    copy_request_out(taken.request, *slot.requests.front());
    prefetch_output_lines(slot, taken.request);
    if (batch_with != nullptr) {
      const std::uint32_t rows = rows_joining(work.model->rules, taken.request, *batch_with, work.batch_rows);
      if (rows == 0) {
        work.taken.pop_back();
        return false;
      }
      work.batch_rows += rows;
    }
    slot.requests.pop();
    slot.in_flight.fetch_add(1, std::memory_order_acq_rel);
    taken.slot = &slot;
    taken.service_order = next_service_order_++;
    poll_cursor_ = slot.index + 1;
    wake_ahead(slot, taken);
    return true;
  });
}

// A request has shown (its descriptor's first line, with the fill count, is here; the rest is on
// its way). Asked for beside the rest rather than after it: its inputs where the channel's last
// request had them (read as soon as the descriptor is), and the response cell, to be written.
void Scheduler::prefetch_likely_lines(ChannelSlot& slot) noexcept {
  prefetch_for_read(slot.arena + slot.last_inputs.offset, slot.last_inputs.bytes);
  const std::uint64_t next_response = slot.responses_posted.load(std::memory_order_relaxed);
  ResponseRing::Cell& cell = slot.shared->responses.cells[next_response % kRingCapacity];
  prefetch_for_write(&cell, sizeof cell.fills + response_bytes_used(1));
}

// The lines the answer will be written to, taken over while the request is checked and run; and
// where this request's inputs are, for the guess of the next one. Offsets clamped to the arena:
// they are the client's, not yet checked.
void Scheduler::prefetch_output_lines(ChannelSlot& slot, const RequestDescriptor& request) noexcept {
  const auto inside_arena = [&](std::uint64_t offset, std::uint64_t bytes) {
    return offset < slot.arena_bytes ? ArenaSpan{offset, std::min(bytes, slot.arena_bytes - offset)} : ArenaSpan{};
  };
  const ArenaSpan outputs = inside_arena(
      request.output_offset, std::min(request.output_capacity, slot.last_output_bytes.load(std::memory_order_relaxed)));
  prefetch_for_write(slot.arena + outputs.offset, outputs.bytes);
  if (request.input_count != 0) slot.last_inputs = inside_arena(request.inputs[0].offset, request.inputs[0].bytes);
}

// Waking a sleeping process takes longer than many forwards (docs/latency.md): when this channel's
// last request was answered within --wake-ahead-us of being taken, its client is woken now, so
// that its wake-up runs beside the forward instead of after it. It then finds its answer, or, if
// this one is slower, sleeps again and is woken once more when it is posted.
void Scheduler::wake_ahead(ChannelSlot& slot, TakenRequest& taken) noexcept {
  if (settings_.wake_ahead_ns == 0) return;
  // No fence: a client that announces its sleep after this look misses nothing, since the answer,
  // when posted, wakes it as usual.
  const bool sleeping = slot.shared->client_waiting.load(std::memory_order_relaxed) != 0;
  // Only a sleeping client's requests are timed (including one woken already, as the leader woke):
  // a spinning client's round trip has no clock read.
  if (!sleeping && !slot.woken_before_take) return;
  slot.woken_before_take = false;
  taken.taken_ns = monotonic_ns();
  if (sleeping) wake_ahead_if_quick(slot);
}

bool Scheduler::wake_ahead_if_quick(ChannelSlot& slot) noexcept {
  if (slot.last_service_ns.load(std::memory_order_relaxed) >= settings_.wake_ahead_ns) return false;
  if (!wake_client_if_sleeping(slot)) return false;
  status_.clients.woken_ahead.fetch_add(1, std::memory_order_relaxed);
  return true;
}

// A request waits on this channel and the leader may take it now. poll_once and the idle wait
// share this test: a wait that wakes for a request poll_once would skip spins the leader.
bool Scheduler::can_take_from(ChannelSlot& slot) {
  if (slot.poisoned || slot.reclaim_requested.load(std::memory_order_acquire)) return false;
  if (!slot.requests.has_data()) {
    if (slot.requests.corrupt()) {
      slot.poisoned = true;
      ring_fault_warning("client {} (pid {}): request ring indices corrupt; ignoring its channel until it goes",
                         slot.index, slot.peer_pid);
    }
    return false;
  }
  // Take a request only when its answer will have a response slot. The head the client last
  // showed can only understate the room it has made since.
  // In this order: a worker posts, then counts its request out of in_flight, so an in_flight read
  // first can only make the sum too large, never too small.
  const std::uint64_t in_flight = slot.in_flight.load(std::memory_order_acquire);
  const std::uint64_t posted = slot.responses_posted.load(std::memory_order_acquire);
  const auto room_for_one_more = [&](std::uint64_t client_head) {
    const std::uint64_t unread = client_head <= posted ? posted - client_head : kRingCapacity;
    return unread + in_flight < kRingCapacity;
  };
  if (room_for_one_more(slot.client_head_seen)) return true;
  slot.client_head_seen = slot.shared->responses.head.load(std::memory_order_acquire);
  return room_for_one_more(slot.client_head_seen);
}

bool Scheduler::any_request_waiting() {
  return table_.visit_active_from(0, [&](ChannelSlot& slot) { return can_take_from(slot); });
}

std::uint32_t Scheduler::rows_joining(const AdmissionRules& rules, const RequestDescriptor& candidate,
                                      const RequestDescriptor& first, std::uint32_t batch_rows) const {
  const std::uint32_t rows = batch_rows_of(candidate, rules);
  if (rows == 0 || batch_rows + rows > rules.max_batch) return 0;
  TensorShape a[kMaxTensors];
  TensorShape b[kMaxTensors];
  const std::uint32_t candidate_inputs = std::min<std::uint32_t>(candidate.input_count, kMaxTensors);
  const std::uint32_t first_inputs = std::min<std::uint32_t>(first.input_count, kMaxTensors);
  for (std::uint32_t i = 0; i < candidate_inputs; ++i) a[i] = candidate.inputs[i].shape;
  for (std::uint32_t i = 0; i < first_inputs; ++i) b[i] = first.inputs[i].shape;
  return same_trailing_shapes(std::span<const TensorShape>(a, candidate_inputs),
                              std::span<const TensorShape>(b, first_inputs))
             ? rows
             : 0;
}

bool Scheduler::batchable_request_waiting(const AdmissionRules& rules, const RequestDescriptor& first,
                                          std::uint32_t batch_rows) {
  return table_.visit_active_from(0, [&](ChannelSlot& slot) {
    if (!can_take_from(slot)) return false;
    RequestDescriptor candidate;  // a private copy, as poll_once takes it
    copy_request_out(candidate, *slot.requests.front());
    return rows_joining(rules, candidate, first, batch_rows) != 0;
  });
}

void Scheduler::answer_queued_with_shutdown() {
  table_.visit_active_from(0, [&](ChannelSlot& slot) {
    if (slot.poisoned) return false;
    // At most one ring's worth: a client that keeps posting must not hold the shutdown up.
    for (std::uint32_t answered = 0; answered < kRingCapacity; ++answered) {
      const RequestDescriptor* front = slot.requests.front();
      if (front == nullptr) break;
      const std::uint64_t request_id = front->request_id;
      slot.requests.pop();
      executor_.answer_without_running(slot, request_id, Status::kShuttingDown, "the sidecar is shutting down");
    }
    return false;
  });
}

}  // namespace sidecar
