// The client's requests in flight: where each one's region of the arena is, the one decoder of
// answers (checked before a byte of them is used), and the one wait loop every blocking call uses.
//
// Every request has a region of the arena: submit()'s hold a cancel word, the inputs and room for
// the outputs; the zero-copy path's spans the whole arena. A region stays reserved until its
// answer comes, even after its caller gave up (the sidecar may still write outputs there), and
// regions are allocated in order, so answers may come back in any order.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "call_clock.hpp"
#include "connection.hpp"
#include "sidecar/shared/adaptive_spin.hpp"
#include "sidecar/client.hpp"
#include "sidecar/shared/channel_layout.hpp"
#include "sidecar/shared/clock.hpp"
#include "sidecar/shared/prefetch.hpp"

namespace sidecar {

// A request's entry in the table: its fields apart from its outputs and message, which is what a
// reused entry resets.
struct RequestEntryState {
  std::uint64_t offset = 0;  // the region in the arena (none for a control request)
  std::uint64_t bytes = 0;
  bool in_flight = false;    // posted, no answer yet: its region is reserved
  OutputRegion outputs_allowed;  // where the sidecar may write this request's outputs
  bool in_place = false;   // zero-copy: the outputs stay in the arena (placed[])
  bool done = false;
  bool abandoned = false;  // its caller gave up: dropped when its answer comes
  bool cancelled = false;
  ErrorCode code = ErrorCode::kOk;
  std::uint32_t placed_count = 0;
  CacheOutcome cache_outcome = CacheOutcome::kNotUsed;
  ServiceInfo service;
};
struct RequestEntry : RequestEntryState {
  std::string message;
  std::vector<Tensor> outputs;  // copies
  TensorDescriptor placed[kMaxTensors];  // the first placed_count, for the zero-copy path
};

class RequestTable {
 public:
  using EntryState = RequestEntryState;
  using Entry = RequestEntry;

  // Binds to a (new) connection's channel. Nothing may be in flight.
  void attach(Connection& connection);
  void detach() noexcept { connection_ = nullptr; }
  bool attached() const noexcept { return connection_ != nullptr; }
  // The connection is gone: every request in flight is answered with `code` and its region freed.
  void fail_in_flight(ErrorCode code, const std::string& message);

  std::uint64_t next_id() noexcept { return next_id_++; }
  Entry* find(std::uint64_t id);
  // A fresh entry for a new id (ids grow). Reuses the node of the last erased entry: a request's
  // round trip then costs no allocation, nor zeroing the whole entry.
  Entry& add(std::uint64_t id);
  void erase(std::uint64_t id);
  std::uint64_t in_flight() const noexcept { return in_flight_; }
  // Requests in flight whose callers gave up on them (timed out): their answers are still due.
  std::uint64_t abandoned_in_flight() const;

  // A free region of `bytes`: after the newest region in use, wrapping to the start of the arena,
  // never over a region whose answer has not come.
  std::optional<std::uint64_t> allocate_region(std::uint64_t bytes) const;

  // Posts `request` (its id and region set) for `entry`: kOverloaded when the ring is full.
  // `call_began_ns`: the clock reading of the call that posts it, sent as its post time.
  Done post(Entry& entry, const RequestDescriptor& request, std::uint64_t call_began_ns);
  // Takes every answer waiting in the response ring.
  void pump();
  // How long wait_until() may spin before it sleeps (ConnectOptions::spin); it spins less when
  // answers have lately come later than that (AdaptiveSpin).
  void set_spin_budget(std::uint64_t budget_ns) noexcept { answer_spin_ = AdaptiveSpin(budget_ns); }
  // Pumps, spins, then sleeps, until `done()` or the call's deadline. kTimeout, kSidecarGone
  // (every request in flight is then answered so), or kProtocolError.
  template <typename Finished>
  Done wait_until(Finished&& done, const detail::CallClock& call);

 private:
  bool take_answer(const ResponseDescriptor& shared);

  Connection* connection_ = nullptr;
  SpscProducer<RequestRing> requests_;
  SpscConsumer<ResponseRing> responses_;
  // By id: ids grow, so the map's order is the order regions were allocated in.
  std::map<std::uint64_t, Entry> entries_;
  std::map<std::uint64_t, Entry>::node_type spare_;  // an erased entry, kept for the next add()
  std::uint64_t in_flight_ = 0;
  std::uint64_t next_id_ = 1;
  AdaptiveSpin answer_spin_;
  // Where the last request had its first input and the last answer its first output (checked):
  // asked for early, as the next answer shows and as the next request is about to be written.
  ArenaSpan last_inputs_;
  ArenaSpan last_outputs_;
  bool woke_sidecar_at_post_ = false;  // the last post found the sidecar asleep
};

template <typename Finished>
Done RequestTable::wait_until(Finished&& done, const detail::CallClock& call) {
  const std::uint64_t wait_began_ns = call.now_ns;
  const std::uint64_t deadline_ns = call.deadline_ns;
  // A sidecar this client had to wake answers no sooner than its own wake-up, which costs what
  // ours does: sleep at once, and let the sidecar wake us as it takes the request (wake-ahead).
  // Such a wait says how long the sidecar slept, not how long answers take: it is not recorded.
  const bool woke_sidecar = woke_sidecar_at_post_;
  const std::uint64_t spin_ns = woke_sidecar ? 0 : answer_spin_.spin_ns();
  const std::uint64_t spin_until = wait_began_ns + spin_ns;
  bool spinning = spin_ns != 0;
  std::uint32_t looks_since_clock = 0;
  std::uint64_t now = wait_began_ns;
  while (true) {
    pump();
    if (done()) {
      // Asleep, the answer is known to have come by the wake-up only.
      if (!woke_sidecar) answer_spin_.record((spinning ? now : monotonic_ns()) - wait_began_ns);
      return {};
    }
    if (responses_.corrupt()) return {ErrorCode::kProtocolError, "the response ring's indices are corrupt"};
    if (spinning && ++looks_since_clock < kLooksPerClockRead) {
      cpu_relax();
      continue;
    }
    looks_since_clock = 0;
    now = monotonic_ns();
    if (now >= deadline_ns) return {ErrorCode::kTimeout, "no answer from the sidecar within the timeout"};
    if (now < spin_until) {
      cpu_relax();
      continue;
    }
    spinning = false;
    const Connection::Wake wake = connection_->sleep_for_response([&] { return responses_.has_data(); }, deadline_ns);
    if (wake == Connection::Wake::kSidecarGone) {
      pump();  // answers it posted before it went still count
      if (done()) return {};
      fail_in_flight(ErrorCode::kSidecarGone, "the sidecar went away while the request was in flight");
      return {ErrorCode::kSidecarGone, "the sidecar went away while the request was in flight"};
    }
  }
}

}  // namespace sidecar
