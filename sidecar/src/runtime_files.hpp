// The files a sidecar keeps in its runtime directory, and nothing else anywhere:
//   NAME.lock  flock'ed for the sidecar's whole life; the kernel drops the lock on any death, so a
//              dead predecessor never blocks a start and a live one always does. It also keeps the
//              start generation across restarts.
//   NAME.sock  where clients connect. A socket left by a dead sidecar is replaced by the next one,
//              which holds the lock and so knows nobody else is serving under the name.
// The directory must belong to the sidecar's user and be writable by nobody else: then no other
// user can put a file or socket under the name, and a client can take the directory's owner as
// the uid the sidecar must run as.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>

#include "sidecar/shared/error.hpp"
#include "sidecar/shared/memfd.hpp"

namespace sidecar {

// The runtime directory for `configured` (empty: the default order of runtime_dir.hpp), created
// when missing. Refused with the reason when another user owns it or could write in it.
Result<std::string> prepare_runtime_dir(const std::string& configured);

class InstanceLock {
 public:
  // Takes RUNTIME_DIR/NAME.lock for this process's life. kBusy naming the holder's pid when a live
  // sidecar of that name holds it.
  static Result<InstanceLock> acquire(const std::string& runtime_dir, const std::string& name);

  InstanceLock(InstanceLock&&) noexcept = default;
  InstanceLock& operator=(InstanceLock&&) noexcept = default;

  // 1 for the first start under this name (since the runtime directory was made), then one more
  // per start.
  std::uint64_t start_generation() const noexcept { return start_generation_; }

 private:
  InstanceLock() = default;
  UniqueFd fd_;
  std::uint64_t start_generation_ = 0;
};

class ListeningSocket {
 public:
  // Binds and listens on RUNTIME_DIR/NAME.sock (SOCK_SEQPACKET) with permissions `mode`, replacing
  // a socket left by a dead predecessor. Call only while holding the instance lock.
  static Result<ListeningSocket> bind(const std::string& runtime_dir, const std::string& name, unsigned mode);

  ListeningSocket(ListeningSocket&& other) noexcept;
  ListeningSocket& operator=(ListeningSocket&& other) noexcept;
  ~ListeningSocket();  // removes the socket file

  int fd() const noexcept { return fd_.get(); }
  const std::string& path() const noexcept { return path_; }
  // Removes NAME.sock if it is still the one this process bound (it always is while the lock is held).
  void remove_file() noexcept;

 private:
  ListeningSocket() = default;
  UniqueFd fd_;
  std::string path_;
  dev_t device_ = 0;
  ino_t inode_ = 0;
};

}  // namespace sidecar
