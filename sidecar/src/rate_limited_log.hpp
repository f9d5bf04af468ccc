// Anything a client can trigger is logged at most once a second, so a hostile client cannot fill
// the journal: later ones are counted and the count is logged with the next one that gets through.
// One limiter per source of messages: a limiter shared by all clients would let one client's flood
// hide another's first error (ChannelSlot has one for its client's requests).
#pragma once

#include <spdlog/spdlog.h>

#include <atomic>
#include <cstdint>
#include <utility>

#include "sidecar/shared/clock.hpp"

namespace sidecar {

class RateLimitedWarning {
 public:
  template <typename... Args>
  void operator()(spdlog::format_string_t<Args...> format, Args&&... args) {
    const std::uint64_t now = monotonic_ns();
    std::uint64_t last = last_ns_.load(std::memory_order_relaxed);
    if (last != 0 && now - last < 1'000'000'000ull) {
      suppressed_.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    if (!last_ns_.compare_exchange_strong(last, now)) return;
    const auto suppressed = suppressed_.exchange(0);
    if (suppressed) spdlog::warn("({} similar messages suppressed)", suppressed);
    spdlog::warn(format, std::forward<Args>(args)...);
  }

  // For a new source (a channel slot's next client): its first message gets through, and the
  // previous one's suppressed count is not blamed on it.
  void reset() noexcept {
    last_ns_.store(0, std::memory_order_relaxed);
    suppressed_.store(0, std::memory_order_relaxed);
  }

 private:
  std::atomic<std::uint64_t> last_ns_{0};
  std::atomic<std::uint64_t> suppressed_{0};
};

}  // namespace sidecar
