#include "leader_wake.hpp"

#include <sys/epoll.h>
#include <sys/eventfd.h>

#include <cerrno>

#include "sidecar/shared/clock.hpp"

namespace sidecar {
namespace {

// The epoll data of the kick eventfd; a channel's is its index.
constexpr std::uint64_t kKickToken = ~std::uint64_t{0};

}  // namespace

Result<LeaderWake> LeaderWake::create() {
  LeaderWake wake;
  wake.epoll_.reset(::epoll_create1(EPOLL_CLOEXEC));
  wake.kick_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!wake.epoll_ || !wake.kick_) return Error{ErrorCode::kOutOfMemory, "epoll/eventfd: " + errno_text(errno)};
  epoll_event event{};
  event.events = EPOLLIN;  // level-triggered: drained in sleep()
  event.data.u64 = kKickToken;
  if (::epoll_ctl(wake.epoll_.get(), EPOLL_CTL_ADD, wake.kick_.get(), &event) != 0) {
    return Error{ErrorCode::kOutOfMemory, "epoll_ctl: " + errno_text(errno)};
  }
  return wake;
}

Done LeaderWake::watch(int eventfd, std::uint32_t channel_index) {
  epoll_event event{};
  event.events = EPOLLIN | EPOLLET;
  event.data.u64 = channel_index;
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, eventfd, &event) != 0) {
    return {ErrorCode::kOutOfMemory, "epoll_ctl: " + errno_text(errno)};
  }
  return {};
}

// Explicitly, not by closing our fd: the client holds the same eventfd, which would keep the
// registration (and its wake-ups) alive.
void LeaderWake::unwatch(int eventfd) noexcept { ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, eventfd, nullptr); }

void LeaderWake::kick() noexcept {
  const std::uint64_t one = 1;
  [[maybe_unused]] const ssize_t written = ::write(kick_.get(), &one, sizeof one);
}

std::span<const std::uint32_t> LeaderWake::sleep(std::uint64_t timeout_ns) noexcept {
  epoll_event events[kEventsPerWake];
  const timespec timeout = timespec_from_ns(timeout_ns);
  const int count = ::epoll_pwait2(epoll_.get(), events, kEventsPerWake, &timeout, nullptr);
  std::size_t channels = 0;
  for (int i = 0; i < count; ++i) {
    if (events[i].data.u64 == kKickToken) {
      std::uint64_t value = 0;
      [[maybe_unused]] const ssize_t drained = ::read(kick_.get(), &value, sizeof value);
    } else {
      woken_channels_[channels++] = static_cast<std::uint32_t>(events[i].data.u64);
    }
  }
  return {woken_channels_.data(), channels};
}

}  // namespace sidecar
