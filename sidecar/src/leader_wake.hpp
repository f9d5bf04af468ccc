// How the leader (the worker that polls the rings) sleeps when no ring has work, and what wakes it.
//
// Each client has its own request eventfd, which it writes after posting a request while the
// status page says the leader sleeps; the leader waits on all of them at once (epoll). Only the
// client and the sidecar hold a client's eventfd, so a client can wake the sidecar for nothing (a
// rescan of the rings, nothing more) but cannot steal or block another client's wake-up, which
// one shared eventfd, or a futex word clients cannot write, would allow (see docs/isolation.md).
// The channel eventfds are edge-triggered and never read: every write is a new edge. An internal
// eventfd wakes the leader for the sidecar's own reasons (a channel to reclaim, a response slot
// freed, stopping).
#pragma once

#include <array>
#include <cstdint>
#include <span>

#include "sidecar/shared/error.hpp"
#include "sidecar/shared/memfd.hpp"

namespace sidecar {

class LeaderWake {
 public:
  static Result<LeaderWake> create();

  // Wakes on writes to `eventfd`, channel `channel_index`'s, from now on, until unwatch(). Any thread.
  Done watch(int eventfd, std::uint32_t channel_index);
  void unwatch(int eventfd) noexcept;
  // Wakes the leader, or makes its next sleep return at once. Any thread.
  void kick() noexcept;
  // Sleeps until a watched eventfd is written, kick(), or `timeout_ns`; returns the channels whose
  // eventfds were written (valid until the next sleep). The leader only.
  std::span<const std::uint32_t> sleep(std::uint64_t timeout_ns) noexcept;

 private:
  static constexpr std::size_t kEventsPerWake = 16;

  LeaderWake() = default;
  UniqueFd epoll_;
  UniqueFd kick_;
  std::array<std::uint32_t, kEventsPerWake> woken_channels_{};
};

}  // namespace sidecar
