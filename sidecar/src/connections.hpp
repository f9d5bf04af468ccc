// The sidecar's socket: accepting clients, the handshake, handing each admitted client its own
// channel, and noticing when a client goes. One thread, one epoll.
//
// A connection's life: accepted; its ConnectRequest read and checked (version, kind, arena size),
// its peer judged by the credentials the kernel recorded (SO_PEERCRED, SO_PEERGROUPS) against the
// access policy; then an observer gets the status page, and an attaching client gets a channel
// made for it alone (a sealed memfd whose memory is committed now, and two eventfds) with the
// status page and, for a shared-scope cache, the cache. The socket then stays open for the
// client's life: when it hangs up (exit, crash, SIGKILL) or sends anything at all, the connection
// is closed and its channel reclaimed at once. No /proc polling, no pid reuse to worry about.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <span>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>

#include "access_policy.hpp"
#include "channel_table.hpp"
#include "result_cache.hpp"
#include "runtime_files.hpp"
#include "sidecar/shared/protocol.hpp"
#include "status_page.hpp"

namespace sidecar {

struct ConnectionSettings {
  std::uint64_t default_arena_bytes = 0;
  std::uint64_t max_arena_bytes = 0;
  CacheScope cache_scope = CacheScope::kShared;
  // Connections that hold no channel, in all and per user: no user can crowd out another's
  // handshakes or status queries.
  std::uint32_t max_observers = 16;
  std::uint32_t max_observers_per_user = 4;
  std::uint32_t max_pending = 256;  // not yet attached or observing
  std::uint32_t max_pending_per_user = 64;
  std::uint32_t max_refused_held = 256;                // refused connections held open at once
  std::uint64_t refused_hold_ns = 1'000'000'000;     // for the client's request to arrive
  std::uint64_t handshake_timeout_ns = 5'000'000'000;  // for a client to send its ConnectRequest
};

// Gets a reload request whose peer may reload (the sidecar's user or root): the connection's socket,
// which the handler answers with one ConnectReply when the reload has ended, and the model path
// asked for (empty: the current file).
using ReloadHandler = std::function<void(UniqueFd socket, std::string path, const PeerCredentials& peer)>;

class ConnectionManager {
 public:
  // `cache` may be null. Nothing runs until start().
  ConnectionManager(const ConnectionSettings& settings, AccessPolicy policy, const ListeningSocket& listening,
                    ChannelTable& table, const StatusPageWriter& status, const ResultCache* cache);
  ~ConnectionManager();

  // Before start(); without one, reload requests are refused.
  void set_reload_handler(ReloadHandler handler) { reload_handler_ = std::move(handler); }
  // Answers a reload request handed to the handler, and closes its socket. Any thread.
  void answer_reload(UniqueFd socket, const Result<std::string>& outcome) const;
  Done start();
  // From now on attaching clients get their channel, and those waiting through warm-up get it now.
  void mark_ready();
  // New attaches are refused as "shutting down"; attached clients keep their channels.
  void begin_stopping();
  // Closes every connection (clients see the hang-up) and joins the thread. Idempotent.
  void stop();
  // Closes the connections of channels marked drop_requested. Any thread.
  void poke();

 private:
  // kRefused: told why at accept, and held open until the client's request comes (or a moment
  // passes), which is then read before the close: a Unix socket closed with unread messages makes
  // the peer's next receive fail with ECONNRESET before it reads the reply waiting for it.
  enum class State { kHandshaking, kWaitingForReady, kAttached, kObserving, kRefused };
  struct Connection {
    UniqueFd socket;
    State state = State::kHandshaking;
    std::uint64_t deadline_ns = 0;
    PeerCredentials peer;
    std::vector<gid_t> groups;
    ConnectRequest request{};
    ChannelSlot* slot = nullptr;
  };

  void run();
  void accept_new();
  void on_readable(Connection& connection, std::uint32_t events);
  void on_request(Connection& connection);
  void on_reload_request(Connection& connection, std::span<const std::byte> message);
  void attach(Connection& connection);
  Result<ChannelSlot*> open_channel(const Connection& connection, std::uint64_t arena_bytes);
  void refuse(Connection& connection, ConnectOutcome outcome, const std::string& message);
  ConnectReply reply_for(ConnectOutcome outcome) const;
  void close_connection(int fd);
  void expire_handshakes();
  void attach_waiting();
  void drop_requested_channels();
  // Connections in the handshake or waiting for warm-up to end; of `uid`'s only, when given.
  std::uint32_t pending(std::optional<uid_t> uid = std::nullopt) const;
  std::uint32_t observers_of(uid_t uid) const;
  std::uint32_t refused_held() const;

  ConnectionSettings settings_;
  AccessPolicy policy_;
  const ListeningSocket& listening_;
  ChannelTable& table_;
  const StatusPageWriter& status_;
  const ResultCache* cache_;
  ReloadHandler reload_handler_;
  UniqueFd epoll_;
  UniqueFd control_;  // eventfd: mark_ready, begin_stopping, stop
  std::atomic<bool> ready_{false};
  std::atomic<bool> stopping_{false};
  std::atomic<bool> closing_{false};
  bool ready_handled_ = false;
  std::thread thread_;
  std::unordered_map<int, Connection> connections_;  // by socket fd; the connection thread's only
  std::uint32_t observers_ = 0;
};

}  // namespace sidecar
