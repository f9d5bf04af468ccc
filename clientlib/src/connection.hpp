// One connection to a sidecar: finding its socket from the name, the handshake, checking that
// the process behind the socket runs as the user who owns the runtime directory (so that no
// other user can pose as the sidecar), and mapping what it sends: its status page (read-only),
// this client's own channel, and its result cache (read-only). The socket stays open: its hang-up
// is how this client learns the sidecar is gone, also while it waits for an answer.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "sidecar/shared/cache_reader.hpp"
#include "sidecar/shared/channel_layout.hpp"
#include "sidecar/shared/error.hpp"
#include "sidecar/shared/memfd.hpp"
#include "sidecar/shared/protocol.hpp"
#include "sidecar/shared/status_layout.hpp"

namespace sidecar {

struct DialSettings {
  std::string runtime_dir;                  // empty: the default places (runtime_dir.hpp)
  std::optional<uid_t> expected_sidecar_uid;  // empty: the runtime directory's owner
  std::uint64_t arena_bytes = 0;            // 0: the sidecar's default
  ConnectKind kind = ConnectKind::kAttach;
  std::string reload_model_path;  // kReload: the file to load; empty: the one the sidecar serves
};

class Connection {
 public:
  // Connects to sidecar `name`, waiting until `deadline_ns` (CLOCK_MONOTONIC) for it to exist and
  // be ready. Errors say what is wrong: not running, permission denied (the socket's owner, group
  // and mode), untrusted peer, version mismatch, refused by the sidecar, not ready.
  static Result<std::unique_ptr<Connection>> open(const std::string& name, const DialSettings& settings,
                                                  std::uint64_t deadline_ns);
  ~Connection();

  // Attached and observing connections (a reload's has none).
  const StatusPage& status() const noexcept { return *status_; }
  const ConnectReply& reply() const noexcept { return reply_; }
  const std::string& socket_path() const noexcept { return socket_path_; }

  // Attached connections only.
  ChannelHeader& channel() const noexcept { return *channel_.as<ChannelHeader>(); }
  std::uint8_t* arena() const noexcept { return channel_.base() + reply_.arena_offset; }
  std::uint64_t arena_bytes() const noexcept { return reply_.arena_bytes; }
  // The result cache, when the sidecar has one this client may map (shared scope).
  const CacheView* cache() const noexcept { return cache_view_.attached() ? &cache_view_ : nullptr; }

  // After a request is published: wakes the sidecar if it sleeps (true).
  bool wake_sidecar() const noexcept;

  enum class Wake { kSignalled, kTimeout, kSidecarGone };
  // Sleeps until the sidecar sends a wake-up on the socket, `deadline_ns` passes, or the sidecar
  // goes. `answered()` is checked after announcing the sleep, so no wake-up can be missed.
  template <typename Answered>
  Wake sleep_for_response(Answered&& answered, std::uint64_t deadline_ns);

  // True once the sidecar's end of the socket is seen closed; checks the socket (a syscall) only
  // when `check_now`.
  bool sidecar_gone(bool check_now) noexcept;

  // Closes the socket and the wake-up fd, keeping the mappings: views a caller still holds stay
  // readable until the connection is destroyed.
  void close_socket() noexcept;

  // How many times this process has forked a child so far, as the child sees it: a connection
  // made before the count moved belongs to the parent.
  static std::uint64_t forks_seen() noexcept;
  // In a forked child: closes this connection's fds, so that the parent's hang-up reaches the
  // sidecar even while the child lives. Called by the fork handler only.
  void let_go_after_fork() noexcept;

 private:
  Connection() = default;
  // Checks the peer, asks, and maps what the sidecar sends. Returns an Attempt (connection.cpp).
  int handshake(const std::string& name, const DialSettings& settings, const std::string& runtime_dir,
                std::uint64_t deadline_ns, Error& last);
  Done map_accepted(std::vector<UniqueFd>& fds, ConnectKind kind);
  Wake sleep(std::uint64_t deadline_ns) noexcept;
  // Reads a wake-up waiting on the socket, if any; false when it finds the sidecar's end closed.
  bool drain_wake_up() noexcept;

  UniqueFd socket_;
  std::string socket_path_;
  ConnectReply reply_{};
  SharedMapping status_mapping_;
  const StatusPage* status_ = nullptr;
  SharedMapping channel_;
  UniqueFd request_event_;
  SharedMapping cache_mapping_;
  CacheView cache_view_;
  bool gone_ = false;
  bool wake_unread_ = false;  // the byte that ended the last sleep is still on the socket
};

template <typename Answered>
Connection::Wake Connection::sleep_for_response(Answered&& answered, std::uint64_t deadline_ns) {
  ChannelHeader& header = channel();
  // The byte that ended the last sleep is read now, before this sleep is announced (a byte sent
  // after that is this sleep's), not as it woke us: that read would delay the answer by a system call.
  if (wake_unread_ && !drain_wake_up()) return Wake::kSidecarGone;
  // Pairs with the sidecar's fence between publishing a response and reading this flag.
  header.client_waiting.store(1, std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_seq_cst);
  Wake wake = Wake::kSignalled;
  if (!answered()) wake = sleep(deadline_ns);
  header.client_waiting.store(0, std::memory_order_relaxed);
  return wake;
}

}  // namespace sidecar
