#include "runtime_files.hpp"

#include <dirent.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <utility>

#include "sidecar/shared/runtime_dir.hpp"
#include "sidecar/shared/unix_socket.hpp"

namespace sidecar {
namespace {

std::string octal(unsigned mode) {
  char text[16];
  std::snprintf(text, sizeof text, "%04o", mode & 07777);
  return text;
}

// The default order of runtime_dir.hpp, for the sidecar.
Result<std::string> choose_runtime_dir(const std::string& configured) {
  if (!configured.empty()) return configured;
  if (std::string value = environment_or_empty(kRuntimeDirEnvironment); !value.empty()) return value;
  if (std::string systemd = environment_or_empty("RUNTIME_DIRECTORY"); !systemd.empty()) {
    // systemd lists one directory per RuntimeDirectory= entry, separated by ':'.
    return systemd.substr(0, systemd.find(':'));
  }
  struct stat info {};
  const bool system_dir_exists = ::stat(kSystemRuntimeDir, &info) == 0;
  if (system_dir_exists ? ::access(kSystemRuntimeDir, W_OK | X_OK) == 0 : ::access("/run", W_OK | X_OK) == 0) {
    return std::string(kSystemRuntimeDir);
  }
  if (std::string xdg = environment_or_empty("XDG_RUNTIME_DIR"); !xdg.empty()) {
    return xdg + "/" + kRuntimeSubdirectory;
  }
  return Error{ErrorCode::kInvalidArgument, std::string("no runtime directory: ") + kSystemRuntimeDir +
                                                " is not writable and $XDG_RUNTIME_DIR is not set; pass --runtime-dir"};
}

}  // namespace

Result<std::string> prepare_runtime_dir(const std::string& configured) {
  Result<std::string> chosen = choose_runtime_dir(configured);
  if (!chosen.ok()) return chosen;
  const std::string dir = *chosen;
  // Traversable by all: who may connect is the socket's mode (and --allow-*), not the directory's.
  if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
    return Error{ErrorCode::kInvalidArgument, "cannot create the runtime directory " + dir + ": " + errno_text(errno)};
  }
  struct stat info {};
  if (::stat(dir.c_str(), &info) != 0 || !S_ISDIR(info.st_mode)) {
    return Error{ErrorCode::kInvalidArgument, "the runtime directory " + dir + " is not a directory"};
  }
  if (info.st_uid != ::geteuid()) {
    return Error{ErrorCode::kPermissionDenied,
                 "the runtime directory " + dir + " belongs to uid " + std::to_string(info.st_uid) +
                     ", not to this sidecar's uid " + std::to_string(::geteuid()) +
                     ": another user could replace the socket there, and clients would refuse this sidecar"};
  }
  if (info.st_mode & 0022) {
    return Error{ErrorCode::kPermissionDenied, "the runtime directory " + dir + " (mode " + octal(info.st_mode) +
                                                   ") is writable by others, who could squat the sidecar's names; "
                                                   "use a directory only this user can write"};
  }
  return dir;
}

Result<InstanceLock> InstanceLock::acquire(const std::string& runtime_dir, const std::string& name) {
  const std::string path = lock_path(runtime_dir, name);
  // A few tries: the file at the path may be replaced between our open and our lock.
  for (int attempt = 0; attempt < 10; ++attempt) {
    UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!fd) return Error{ErrorCode::kPermissionDenied, "cannot open " + path + ": " + errno_text(errno)};
    struct stat opened {};
    if (::fstat(fd.get(), &opened) != 0 || !S_ISREG(opened.st_mode) || opened.st_uid != ::geteuid()) {
      return Error{ErrorCode::kPermissionDenied,
                   path + " is not this user's lock file (owner uid " + std::to_string(opened.st_uid) + "); remove it"};
    }
    if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
      if (errno != EWOULDBLOCK) return Error{ErrorCode::kProtocolError, "flock " + path + ": " + errno_text(errno)};
      // The holder writes its pid just after it takes the lock: give it a moment to.
      std::string holder = "another process";
      for (int look = 0; look < 20; ++look) {
        char text[64] = {};
        long long pid = 0;
        if (::pread(fd.get(), text, sizeof text - 1, 0) > 0 && std::sscanf(text, "%lld", &pid) == 1 && pid > 0 &&
            ::kill(static_cast<pid_t>(pid), 0) == 0) {
          holder = "pid " + std::to_string(pid);
          break;
        }
        ::usleep(5000);
      }
      return Error{ErrorCode::kBusy, "another sidecar named '" + name + "' is running (" + holder + " holds " + path + ")"};
    }
    struct stat current {};
    if (::stat(path.c_str(), &current) != 0 || current.st_ino != opened.st_ino || current.st_dev != opened.st_dev) {
      continue;  // the file we locked is no longer the one at the path
    }
    InstanceLock lock;
    char text[64] = {};
    unsigned long long previous = 0;
    long long pid = 0;
    if (::pread(fd.get(), text, sizeof text - 1, 0) > 0) {
      if (std::sscanf(text, "%lld %llu", &pid, &previous) != 2) previous = 0;
    }
    lock.start_generation_ = previous + 1;
    const int length = std::snprintf(text, sizeof text, "%lld %llu\n", static_cast<long long>(::getpid()),
                                     static_cast<unsigned long long>(lock.start_generation_));
    if (::ftruncate(fd.get(), 0) != 0 || ::pwrite(fd.get(), text, static_cast<std::size_t>(length), 0) != length) {
      return Error{ErrorCode::kProtocolError, "cannot write " + path + ": " + errno_text(errno)};
    }
    lock.fd_ = std::move(fd);
    return lock;
  }
  return Error{ErrorCode::kBusy, path + " keeps being replaced; is another sidecar of that name starting?"};
}

Result<ListeningSocket> ListeningSocket::bind(const std::string& runtime_dir, const std::string& name, unsigned mode) {
  ListeningSocket listening;
  listening.path_ = socket_path(runtime_dir, name);
  const Result<sockaddr_un> final_address = unix_address(listening.path_);
  if (!final_address.ok()) return final_address.error();
  // Bound under a temporary name, given its mode, then renamed over the final one: a client never
  // sees the socket with a mode other than `mode`, nor a moment without one where a stale one was.
  const std::string hidden_prefix = "." + name + ".sock.";
  if (DIR* directory = ::opendir(runtime_dir.c_str())) {
    // Temporary names left by a predecessor killed between its bind and its rename.
    while (const dirent* entry = ::readdir(directory)) {
      if (std::strncmp(entry->d_name, hidden_prefix.c_str(), hidden_prefix.size()) == 0) {
        ::unlinkat(::dirfd(directory), entry->d_name, 0);
      }
    }
    ::closedir(directory);
  }
  const std::string temporary = runtime_dir + "/" + hidden_prefix + std::to_string(::getpid());
  const Result<sockaddr_un> address = unix_address(temporary);
  if (!address.ok()) return address.error();
  listening.fd_.reset(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!listening.fd_) return Error{ErrorCode::kProtocolError, "socket: " + errno_text(errno)};
  if (::bind(listening.fd_.get(), reinterpret_cast<const sockaddr*>(&*address), sizeof(sockaddr_un)) != 0) {
    return Error{ErrorCode::kPermissionDenied, "cannot bind " + temporary + ": " + errno_text(errno)};
  }
  auto fail = [&](const std::string& what) {
    const int error = errno;
    ::unlink(temporary.c_str());
    return Error{ErrorCode::kProtocolError, what + ": " + errno_text(error)};
  };
  if (::chmod(temporary.c_str(), mode) != 0) return fail("chmod " + temporary);
  if (::listen(listening.fd_.get(), 128) != 0) return fail("listen on " + temporary);
  struct stat info {};
  if (::stat(temporary.c_str(), &info) != 0) return fail("stat " + temporary);
  if (::rename(temporary.c_str(), listening.path_.c_str()) != 0) return fail("rename to " + listening.path_);
  listening.device_ = info.st_dev;
  listening.inode_ = info.st_ino;
  return listening;
}

ListeningSocket::ListeningSocket(ListeningSocket&& other) noexcept
    : fd_(std::move(other.fd_)),
      path_(std::move(other.path_)),
      device_(std::exchange(other.device_, 0)),
      inode_(std::exchange(other.inode_, 0)) {}

ListeningSocket& ListeningSocket::operator=(ListeningSocket&& other) noexcept {
  if (this != &other) {
    remove_file();
    fd_ = std::move(other.fd_);
    path_ = std::move(other.path_);
    device_ = std::exchange(other.device_, 0);
    inode_ = std::exchange(other.inode_, 0);
  }
  return *this;
}

ListeningSocket::~ListeningSocket() { remove_file(); }

void ListeningSocket::remove_file() noexcept {
  if (inode_ == 0) return;
  struct stat info {};
  if (::stat(path_.c_str(), &info) == 0 && info.st_ino == inode_ && info.st_dev == device_) ::unlink(path_.c_str());
  inode_ = 0;
}

}  // namespace sidecar
