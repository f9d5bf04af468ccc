// The sidecar's private table of client channels. Nothing of it is in shared memory: which
// channels are in use, the ring positions, who is connected and whether a channel is being taken
// back are the sidecar's alone, so no client can change them.
//
// A slot's life: the connection thread claims a free slot, fills it (the channel's memfd, its
// eventfds, the client's uid) and activates it; the leader polls active slots; when the client's
// socket hangs up the connection thread asks for the slot back, and the leader reclaims it once
// none of its requests is still running (their outputs go into its arena), then frees it.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "leader_wake.hpp"
#include "rate_limited_log.hpp"
#include "sidecar/shared/channel_layout.hpp"
#include "sidecar/shared/prefetch.hpp"
#include "committed_memory.hpp"
#include "sidecar/shared/memfd.hpp"
#include "sidecar/shared/status_layout.hpp"

namespace sidecar {

inline constexpr std::uint64_t kServiceTimeUnknown = ~std::uint64_t{0};

struct ChannelSlot {
  std::uint32_t index = 0;

  // Set by the connection thread before activation; released by reclaim.
  OwnedMemory memory;  // the channel's memfd and the sidecar's read-write mapping of it
  ChannelHeader* shared = nullptr;
  std::uint8_t* arena = nullptr;
  std::uint64_t arena_bytes = 0;  // the sidecar's own number: never read back from shared memory
  UniqueFd request_event;         // the client writes it; the leader sleeps on it
  // A duplicate of the client's connected socket, to send it wake-ups: the connection thread may
  // close its own fd at any time, and a number reused by another file must never get a wake-up.
  UniqueFd wake_socket;
  std::uint32_t peer_uid = 0;
  std::int32_t peer_pid = 0;
  std::uint64_t cache_scope = 0;  // kSharedScope or per_user_scope(peer_uid)

  // The leader's only.
  SpscConsumer<RequestRing> requests;
  // Where this channel's last request had its first input: a client mostly writes the next one
  // there again, so those lines are asked for as soon as a request shows, beside its descriptor.
  ArenaSpan last_inputs;
  bool poisoned = false;  // the client broke the ring protocol: ignored until it goes away
  bool woken_before_take = false;  // woken ahead as the leader woke, before its request was taken

  // Any worker may answer.
  std::mutex response_mutex;
  SpscProducer<ResponseRing> responses;
  // Responses posted so far (responses.published(), for the leader, which does not take the mutex).
  std::atomic<std::uint64_t> responses_posted{0};
  // The leader's last look at the client's response-ring head: read again only when it says the
  // ring may be full, so that taking a request does not wait for the client's cache line.
  std::uint64_t client_head_seen = 0;

  // Guarded by ChannelTable::housekeeping_mutex, like `memory` while the slot is active.
  SpscConsumer<HitLogRing> hit_log;
  // Set by the housekeeper when the client broke its channel (punched holes in it): the
  // connection thread then closes the connection. Any thread.
  std::atomic<bool> drop_requested{false};

  std::atomic<std::uint32_t> in_flight{0};  // taken from the ring, not yet answered
  // From taking this channel's last request to answering it: the leader wakes a sleeping client
  // ahead of its answer when this was short (Scheduler::wake_ahead). Unknown until one is answered.
  std::atomic<std::uint64_t> last_service_ns{kServiceTimeUnknown};
  // The bytes of the first output of this channel's last answer: how much of the next request's
  // output region the leader takes over for writing early.
  std::atomic<std::uint64_t> last_output_bytes{kCacheLine};
  std::atomic<bool> reclaim_requested{false};
  std::uint64_t reclaim_requested_ns = 0;

  // Warnings about this client's requests, rate-limited per client: one client's flood of bad
  // requests must not hide another's first. Any worker; reset when the slot is activated.
  RateLimitedWarning request_warning;
};

// Logs, at warning level and rate-limited per client, that a request of the slot's client ended in
// a model error or was refused at admission (bad shape, count, offsets...); other statuses are
// the client's business (deadlines, cancellations) or logged where they arise. The first line of
// `message` only: a model error's message carries TorchScript's traceback after it.
void warn_request_failed(ChannelSlot& slot, Status status, const std::string& message);

// Wakes the channel's client if it sleeps waiting for an answer, taking its flag back so that one
// sleep gets one wake-up. The caller has made what the client will look for visible first, with a
// sequentially consistent fence that pairs with the client's between its flag and its last look.
// True when it sent a wake-up.
bool wake_client_if_sleeping(ChannelSlot& slot) noexcept;

class ChannelTable {
 public:
  // `memory_budget`: the bytes all channels together may commit.
  ChannelTable(std::uint32_t capacity, std::uint64_t memory_budget, LeaderWake& wake, StatusPage& status);
  ~ChannelTable();

  std::uint32_t capacity() const noexcept { return capacity_; }
  ChannelSlot& slot(std::uint32_t index) noexcept { return *slots_[index]; }

  // Connection thread. A free slot to fill with a channel of `channel_bytes`: kTooManyClients when
  // `capacity` clients are connected, kOutOfMemory when the memory budget cannot hold it.
  Result<ChannelSlot*> claim_free(std::uint64_t channel_bytes);
  // Gives a claimed slot back unused (its setup failed).
  void unclaim(ChannelSlot& slot);
  // Starts serving a filled slot: its eventfd wakes the leader and the leader polls it.
  Done activate(ChannelSlot& slot);
  // Its client hung up (or broke the protocol): the leader reclaims it once nothing of it runs.
  void request_reclaim(ChannelSlot& slot);

  // Leader. Calls `visit(slot)` for the active slots from `start` round-robin, until it returns true.
  template <typename Visit>
  bool visit_active_from(std::uint32_t start, Visit&& visit);
  // The slot at `index` if it is active (filled, and not yet reclaimed), else nullptr. The leader.
  ChannelSlot* active_slot(std::uint32_t index) noexcept;
  bool reclaim_possible() const noexcept;
  // Takes back every slot whose reclaim was asked for and whose requests are all answered.
  void reclaim_ready();

  // What the housekeeper reads of active slots (their memory and hit logs) is reclaimed under it.
  std::mutex housekeeping_mutex;
  // Client-side cache hits of channels reclaimed so far, for the statistics.
  std::uint64_t client_hits_of_reclaimed = 0;  // guarded by housekeeping_mutex


 private:
  enum SlotState : std::uint32_t { kFree = 0, kClaimed = 1, kActive = 2 };

  std::uint32_t capacity_;
  std::uint64_t memory_budget_;
  // Bytes the channels in use (claimed, active, or waiting to be reclaimed) have committed. A client
  // that punches holes in its channel frees pages, but not budget.
  std::atomic<std::uint64_t> committed_bytes_{0};
  std::unique_ptr<std::uint64_t[]> slot_bytes_;
  LeaderWake& wake_;
  StatusPage& status_;
  std::vector<std::unique_ptr<ChannelSlot>> slots_;
  std::unique_ptr<std::atomic<std::uint32_t>[]> states_;
  // Bit i: slot i is active. Private memory: the leader trusts it.
  std::unique_ptr<std::atomic<std::uint64_t>[]> active_;
  std::atomic<std::uint32_t> reclaims_pending_{0};
};

template <typename Visit>
bool ChannelTable::visit_active_from(std::uint32_t start, Visit&& visit) {
  const std::uint32_t words = (capacity_ + 63) / 64;
  start %= capacity_;
  for (std::uint32_t step = 0; step <= words; ++step) {
    const std::uint32_t word = (start / 64 + step) % words;
    std::uint64_t bits = active_[word].load(std::memory_order_acquire);
    if (step == 0) bits &= ~0ull << (start % 64);
    if (step == words) bits &= (start % 64) ? ~(~0ull << (start % 64)) : 0ull;
    while (bits != 0) {
      const std::uint32_t index = word * 64 + static_cast<std::uint32_t>(__builtin_ctzll(bits));
      bits &= bits - 1;
      if (index >= capacity_) break;
      if (visit(*slots_[index])) return true;
    }
  }
  return false;
}

}  // namespace sidecar
