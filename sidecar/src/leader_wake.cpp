#include "leader_wake.hpp"

#include <sys/epoll.h>
#include <sys/eventfd.h>

#include <cerrno>

#include "sidecar/shared/clock.hpp"

namespace sidecar {

Result<LeaderWake> LeaderWake::create() {
  LeaderWake wake;
  wake.epoll_.reset(::epoll_create1(EPOLL_CLOEXEC));
  wake.kick_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!wake.epoll_ || !wake.kick_) return Error{ErrorCode::kOutOfMemory, "epoll/eventfd: " + errno_text(errno)};
  epoll_event event{};
  event.events = EPOLLIN;  // level-triggered: drained in sleep()
  event.data.fd = wake.kick_.get();
  if (::epoll_ctl(wake.epoll_.get(), EPOLL_CTL_ADD, wake.kick_.get(), &event) != 0) {
    return Error{ErrorCode::kOutOfMemory, "epoll_ctl: " + errno_text(errno)};
  }
  return wake;
}

Done LeaderWake::watch(int eventfd) {
  epoll_event event{};
  event.events = EPOLLIN | EPOLLET;
  event.data.fd = eventfd;
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

void LeaderWake::sleep(std::uint64_t timeout_ns) noexcept {
  epoll_event events[16];
  const timespec timeout = timespec_from_ns(timeout_ns);
  const int count = ::epoll_pwait2(epoll_.get(), events, 16, &timeout, nullptr);
  for (int i = 0; i < count; ++i) {
    if (events[i].data.fd == kick_.get()) {
      std::uint64_t value = 0;
      [[maybe_unused]] const ssize_t drained = ::read(kick_.get(), &value, sizeof value);
    }
  }
}

}  // namespace sidecar
