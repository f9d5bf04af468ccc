#include "channel_table.hpp"

#include <sys/socket.h>

#include "sidecar/shared/clock.hpp"
#include "sidecar/shared/protocol.hpp"

namespace sidecar {

bool wake_client_if_sleeping(ChannelSlot& slot) noexcept {
  std::atomic<std::uint32_t>& waiting = slot.shared->client_waiting;
  if (waiting.load(std::memory_order_relaxed) == 0 || waiting.exchange(0, std::memory_order_relaxed) == 0) return false;
  // MSG_DONTWAIT: a client that does not read its wake-ups fills only its own socket.
  [[maybe_unused]] const ssize_t sent = ::send(slot.wake_socket.get(), &kWakeByte, 1, MSG_DONTWAIT | MSG_NOSIGNAL);
  return true;
}

void warn_request_failed(ChannelSlot& slot, Status status, const std::string& message) {
  if (status != Status::kModelError && status != Status::kInvalidRequest) return;
  const std::string first_line = message.substr(0, message.find('\n'));
  slot.request_warning("client {} (pid {}, uid {}): {}: {}", slot.index, slot.peer_pid, slot.peer_uid,
                       status == Status::kModelError ? "model error" : "request refused", first_line);
}

ChannelTable::ChannelTable(std::uint32_t capacity, std::uint64_t memory_budget, LeaderWake& wake, StatusPage& status)
    : capacity_(capacity),
      memory_budget_(memory_budget),
      slot_bytes_(new std::uint64_t[capacity]()),
      wake_(wake),
      status_(status),
      states_(new std::atomic<std::uint32_t>[capacity]),
      active_(new std::atomic<std::uint64_t>[(capacity + 63) / 64]) {
  slots_.reserve(capacity);
  for (std::uint32_t i = 0; i < capacity; ++i) {
    slots_.push_back(std::make_unique<ChannelSlot>());
    slots_.back()->index = i;
    states_[i].store(kFree, std::memory_order_relaxed);
  }
  for (std::uint32_t word = 0; word < (capacity + 63) / 64; ++word) active_[word].store(0, std::memory_order_relaxed);
}

ChannelTable::~ChannelTable() {
  for (auto& slot : slots_) {
    if (slot->request_event) wake_.unwatch(slot->request_event.get());
  }
}

Result<ChannelSlot*> ChannelTable::claim_free(std::uint64_t channel_bytes) {
  std::uint64_t committed = committed_bytes_.load(std::memory_order_relaxed);
  do {
    if (committed + channel_bytes > memory_budget_) {
      return Error{ErrorCode::kOutOfMemory, "the clients' channels hold " + std::to_string(committed) + " of the " +
                                                std::to_string(memory_budget_) +
                                                " bytes this sidecar gives them (--channel-memory); this one needs " +
                                                std::to_string(channel_bytes)};
    }
  } while (!committed_bytes_.compare_exchange_weak(committed, committed + channel_bytes, std::memory_order_relaxed));
  for (std::uint32_t i = 0; i < capacity_; ++i) {
    std::uint32_t expected = kFree;
    if (states_[i].load(std::memory_order_relaxed) == kFree &&
        states_[i].compare_exchange_strong(expected, kClaimed, std::memory_order_acquire)) {
      slot_bytes_[i] = channel_bytes;
      return slots_[i].get();
    }
  }
  committed_bytes_.fetch_sub(channel_bytes, std::memory_order_relaxed);
  return Error{ErrorCode::kTooManyClients,
               "the sidecar serves " + std::to_string(capacity_) + " clients, its maximum (--max-clients)"};
}

void ChannelTable::unclaim(ChannelSlot& slot) {
  if (slot.request_event) wake_.unwatch(slot.request_event.get());
  slot.memory = OwnedMemory{};
  slot.request_event.reset();
  slot.wake_socket.reset();
  slot.shared = nullptr;
  slot.arena = nullptr;
  committed_bytes_.fetch_sub(slot_bytes_[slot.index], std::memory_order_relaxed);
  states_[slot.index].store(kFree, std::memory_order_release);
}

Done ChannelTable::activate(ChannelSlot& slot) {
  slot.requests = SpscConsumer<RequestRing>(&slot.shared->requests);
  slot.responses = SpscProducer<ResponseRing>(&slot.shared->responses);
  {
    std::lock_guard lock(housekeeping_mutex);
    slot.hit_log = SpscConsumer<HitLogRing>(&slot.shared->cache_hit_log);
  }
  slot.poisoned = false;
  slot.woken_before_take = false;
  slot.request_warning.reset();
  slot.drop_requested.store(false, std::memory_order_relaxed);
  slot.in_flight.store(0, std::memory_order_relaxed);
  slot.last_service_ns.store(kServiceTimeUnknown, std::memory_order_relaxed);
  slot.last_inputs = ArenaSpan{};
  slot.last_output_bytes.store(kCacheLine, std::memory_order_relaxed);
  slot.responses_posted.store(slot.responses.published(), std::memory_order_relaxed);
  slot.client_head_seen = slot.shared->responses.head.load(std::memory_order_relaxed);
  slot.reclaim_requested.store(false, std::memory_order_relaxed);
  if (Done watched = wake_.watch(slot.request_event.get(), slot.index); !watched.ok()) return watched;
  states_[slot.index].store(kActive, std::memory_order_relaxed);
  // Release: the leader that sees the bit sees the filled slot.
  active_[slot.index / 64].fetch_or(1ull << (slot.index % 64), std::memory_order_release);
  status_.clients.connected.fetch_add(1, std::memory_order_relaxed);
  status_.clients.admitted.fetch_add(1, std::memory_order_relaxed);
  return {};
}

void ChannelTable::request_reclaim(ChannelSlot& slot) {
  if (slot.reclaim_requested.load(std::memory_order_relaxed)) return;
  slot.reclaim_requested_ns = monotonic_ns();
  slot.reclaim_requested.store(true, std::memory_order_seq_cst);
  reclaims_pending_.fetch_add(1, std::memory_order_release);
  wake_.kick();
}

ChannelSlot* ChannelTable::active_slot(std::uint32_t index) noexcept {
  if (index >= capacity_) return nullptr;
  // Acquire, as in visit_active_from: the slot's fields were filled before its bit was set.
  const std::uint64_t bits = active_[index / 64].load(std::memory_order_acquire);
  return (bits >> (index % 64)) & 1 ? slots_[index].get() : nullptr;
}

bool ChannelTable::reclaim_possible() const noexcept {
  if (reclaims_pending_.load(std::memory_order_acquire) == 0) return false;
  for (std::uint32_t i = 0; i < capacity_; ++i) {
    const ChannelSlot& slot = *slots_[i];
    if (slot.reclaim_requested.load(std::memory_order_seq_cst) && slot.in_flight.load(std::memory_order_seq_cst) == 0) {
      return true;
    }
  }
  return false;
}

void ChannelTable::reclaim_ready() {
  if (reclaims_pending_.load(std::memory_order_acquire) == 0) return;
  for (std::uint32_t i = 0; i < capacity_; ++i) {
    ChannelSlot& slot = *slots_[i];
    if (!slot.reclaim_requested.load(std::memory_order_seq_cst)) continue;
    // Answers still being computed will write into the arena: wait for them.
    if (slot.in_flight.load(std::memory_order_seq_cst) != 0) continue;
    active_[i / 64].fetch_and(~(1ull << (i % 64)), std::memory_order_acq_rel);
    wake_.unwatch(slot.request_event.get());
    {
      std::lock_guard lock(housekeeping_mutex);
      client_hits_of_reclaimed += slot.shared->cache_hits.load(std::memory_order_relaxed);
      slot.hit_log = SpscConsumer<HitLogRing>();
      slot.memory = OwnedMemory{};  // the client may keep its mapping; this one goes
    }
    {
      std::lock_guard lock(slot.response_mutex);
      slot.responses = SpscProducer<ResponseRing>();
    }
    slot.requests = SpscConsumer<RequestRing>();
    slot.shared = nullptr;
    slot.arena = nullptr;
    slot.request_event.reset();
    slot.wake_socket.reset();
    const std::uint64_t took = monotonic_ns() - slot.reclaim_requested_ns;
    if (took > status_.clients.slowest_reclaim_ns.load(std::memory_order_relaxed)) {
      status_.clients.slowest_reclaim_ns.store(took, std::memory_order_relaxed);
    }
    slot.reclaim_requested.store(false, std::memory_order_relaxed);
    reclaims_pending_.fetch_sub(1, std::memory_order_acq_rel);
    status_.clients.connected.fetch_sub(1, std::memory_order_relaxed);
    status_.clients.reclaimed.fetch_add(1, std::memory_order_relaxed);
    committed_bytes_.fetch_sub(slot_bytes_[i], std::memory_order_relaxed);
    states_[i].store(kFree, std::memory_order_release);
  }
}

}  // namespace sidecar
