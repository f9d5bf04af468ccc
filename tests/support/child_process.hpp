// Test support: work done in child processes, as this user or as another one.
#pragma once

#include <grp.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

namespace sidecar::testing {

inline constexpr uid_t kNobody = 65534;
inline constexpr gid_t kNogroup = 65534;

inline bool running_as_root() { return ::geteuid() == 0; }

// Exit status of a child: its exit code, or 128 + the signal that killed it.
inline int exit_status_of(pid_t child) {
  int status = 0;
  if (::waitpid(child, &status, 0) != child) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// Runs `body()` in a child process, as `uid`/`gid` when given (needs root), and returns the exit
// status: 0 when the body returned true, 1 when false, 90 when it could not change user.
template <typename Body>
int in_child(Body&& body, uid_t uid = static_cast<uid_t>(-1), gid_t gid = static_cast<gid_t>(-1)) {
  const pid_t child = ::fork();
  if (child < 0) throw std::runtime_error("fork failed");
  if (child == 0) {
    if (gid != static_cast<gid_t>(-1) && (::setgroups(0, nullptr) != 0 || ::setgid(gid) != 0)) ::_exit(90);
    if (uid != static_cast<uid_t>(-1) && ::setuid(uid) != 0) ::_exit(90);
    ::_exit(body() ? 0 : 1);
  }
  return exit_status_of(child);
}

// A child that reports a fixed-size value back through a pipe.
template <typename Report>
class ReportingChild {
 public:
  template <typename Body>
  explicit ReportingChild(Body&& body) {
    int fds[2];
    if (::pipe(fds) != 0) throw std::runtime_error("pipe failed");
    pid_ = ::fork();
    if (pid_ < 0) throw std::runtime_error("fork failed");
    if (pid_ == 0) {
      ::close(fds[0]);
      const Report report = body();
      const bool written = ::write(fds[1], &report, sizeof report) == static_cast<ssize_t>(sizeof report);
      ::_exit(written ? 0 : 1);
    }
    ::close(fds[1]);
    read_fd_ = fds[0];
  }
  ~ReportingChild() {
    if (read_fd_ >= 0) ::close(read_fd_);
    if (pid_ > 0 && !reaped_) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  ReportingChild(const ReportingChild&) = delete;
  ReportingChild& operator=(const ReportingChild&) = delete;

  pid_t pid() const { return pid_; }

  // Waits for the report; false when the child died without one.
  bool collect(Report& report, int& exit_status) {
    const ssize_t read = ::read(read_fd_, &report, sizeof report);
    exit_status = exit_status_of(pid_);
    reaped_ = true;
    return read == static_cast<ssize_t>(sizeof report);
  }

 private:
  pid_t pid_ = -1;
  int read_fd_ = -1;
  bool reaped_ = false;
};

}  // namespace sidecar::testing
