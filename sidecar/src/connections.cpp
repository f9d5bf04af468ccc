#include "connections.hpp"

#include <pthread.h>
#include <spdlog/spdlog.h>
#include <sys/epoll.h>
#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/socket.h>

#include <cstring>
#include <new>
#include <vector>

#include "rate_limited_log.hpp"
#include "sidecar/shared/cache_reader.hpp"
#include "sidecar/shared/channel_layout.hpp"
#include "sidecar/shared/clock.hpp"
#include "sidecar/shared/unix_socket.hpp"

namespace sidecar {
namespace {

RateLimitedWarning refusal_warning;
RateLimitedWarning accept_warning;

std::uint64_t round_arena(std::uint64_t bytes) { return ChannelGeometry::compute(bytes).arena_bytes; }

}  // namespace

ConnectionManager::ConnectionManager(const ConnectionSettings& settings, AccessPolicy policy,
                                     const ListeningSocket& listening, ChannelTable& table,
                                     const StatusPageWriter& status, const ResultCache* cache)
    : settings_(settings),
      policy_(std::move(policy)),
      listening_(listening),
      table_(table),
      status_(status),
      cache_(cache) {}

ConnectionManager::~ConnectionManager() { stop(); }

Done ConnectionManager::start() {
  epoll_.reset(::epoll_create1(EPOLL_CLOEXEC));
  control_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!epoll_ || !control_) return {ErrorCode::kOutOfMemory, "epoll/eventfd: " + errno_text(errno)};
  for (int fd : {listening_.fd(), control_.get()}) {
    epoll_event event{};
    event.events = EPOLLIN;
    event.data.fd = fd;
    if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &event) != 0) {
      return {ErrorCode::kOutOfMemory, "epoll_ctl: " + errno_text(errno)};
    }
  }
  thread_ = std::thread([this] { run(); });
  return {};
}

void ConnectionManager::mark_ready() {
  ready_.store(true, std::memory_order_release);
  const std::uint64_t one = 1;
  [[maybe_unused]] const ssize_t written = ::write(control_.get(), &one, sizeof one);
}

void ConnectionManager::begin_stopping() {
  stopping_.store(true, std::memory_order_release);
  const std::uint64_t one = 1;
  [[maybe_unused]] const ssize_t written = ::write(control_.get(), &one, sizeof one);
}

void ConnectionManager::poke() {
  const std::uint64_t one = 1;
  [[maybe_unused]] const ssize_t written = ::write(control_.get(), &one, sizeof one);
}

void ConnectionManager::stop() {
  if (!thread_.joinable()) return;
  closing_.store(true, std::memory_order_release);
  const std::uint64_t one = 1;
  [[maybe_unused]] const ssize_t written = ::write(control_.get(), &one, sizeof one);
  thread_.join();
}

void ConnectionManager::run() {
  ::pthread_setname_np(::pthread_self(), "sidecar-conns");
  std::vector<epoll_event> events(64);
  while (!closing_.load(std::memory_order_acquire)) {
    const int count = ::epoll_wait(epoll_.get(), events.data(), static_cast<int>(events.size()), 1000);
    for (int i = 0; i < count; ++i) {
      const int fd = events[i].data.fd;
      if (fd == listening_.fd()) {
        accept_new();
      } else if (fd == control_.get()) {
        std::uint64_t value = 0;
        [[maybe_unused]] const ssize_t drained = ::read(control_.get(), &value, sizeof value);
      } else if (auto it = connections_.find(fd); it != connections_.end()) {
        on_readable(it->second, events[i].events);
      }
    }
    if (ready_.load(std::memory_order_acquire) && !ready_handled_) {
      ready_handled_ = true;
      attach_waiting();
    }
    expire_handshakes();
    drop_requested_channels();
  }
  std::vector<int> open;
  for (const auto& [fd, connection] : connections_) open.push_back(fd);
  for (int fd : open) close_connection(fd);
}

void ConnectionManager::accept_new() {
  while (true) {
    UniqueFd socket(::accept4(listening_.fd(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
    if (!socket) {
      if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR && errno != ECONNABORTED) {
        accept_warning("accept on {}: {}", listening_.path(), errno_text(errno));
      }
      return;
    }
    Connection connection;
    Result<PeerCredentials> peer = peer_credentials(socket.get());
    if (!peer.ok()) continue;
    connection.peer = *peer;
    connection.groups = peer_groups(socket.get());
    connection.deadline_ns = monotonic_ns() + settings_.handshake_timeout_ns;
    // Judged before it may cost anything: a user the policy refuses holds no place in any queue.
    std::string refusal = policy_.refusal(connection.peer, connection.groups);
    ConnectOutcome outcome = ConnectOutcome::kNotAllowed;
    if (refusal.empty() && pending(connection.peer.uid) >= settings_.max_pending_per_user) {
      refusal = "user " + user_name(connection.peer.uid) + " has " + std::to_string(settings_.max_pending_per_user) +
                " connections in their handshake already";
      outcome = ConnectOutcome::kTryAgain;
    } else if (refusal.empty() && pending() >= settings_.max_pending) {
      refusal = std::to_string(settings_.max_pending) + " connections are in their handshake already";
      outcome = ConnectOutcome::kTryAgain;
    }
    if (!refusal.empty()) {
      refusal_warning("refused pid {} (uid {}): {}", connection.peer.pid, connection.peer.uid, refusal);
      ConnectReply reply = reply_for(outcome);
      set_reply_message(reply, refusal);
      [[maybe_unused]] const Done sent = send_message(socket.get(), &reply, sizeof reply);
      status_.page().clients.refused.fetch_add(1, std::memory_order_relaxed);
      // Held until its request arrives, so that the reason is read; beyond the bound, closed at once.
      if (refused_held() >= settings_.max_refused_held) continue;
      connection.state = State::kRefused;
      connection.deadline_ns = monotonic_ns() + settings_.refused_hold_ns;
    }
    epoll_event event{};
    event.events = EPOLLIN | EPOLLRDHUP;
    event.data.fd = socket.get();
    if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, socket.get(), &event) != 0) continue;
    const int fd = socket.get();
    connection.socket = std::move(socket);
    connections_.emplace(fd, std::move(connection));
  }
}

void ConnectionManager::on_readable(Connection& connection, std::uint32_t events) {
  const int fd = connection.socket.get();
  if (connection.state == State::kRefused) {
    // Its request came, or it hung up: read what came, so that closing does not reset the
    // connection under the reply.
    alignas(8) std::byte discard[kMaxHandshakeBytes];
    for (int message = 0; message < 4; ++message) {
      Result<ReceivedMessage> drained = receive_message(fd, discard, sizeof discard, 0, MSG_DONTWAIT);
      if (!drained.ok() || drained->kind != ReceivedMessage::Kind::kMessage) break;
    }
    close_connection(fd);
    return;
  }
  if (connection.state != State::kHandshaking) {
    // After the handshake a client has nothing to say: a hang-up, or anything it sends, ends it.
    if (!(events & (EPOLLHUP | EPOLLRDHUP | EPOLLERR))) {
      refusal_warning("client pid {} (uid {}) sent data after its handshake; closing its connection",
                      connection.peer.pid, connection.peer.uid);
    }
    close_connection(fd);
    return;
  }
  alignas(8) std::byte buffer[kMaxHandshakeBytes];
  Result<ReceivedMessage> received = receive_message(fd, buffer, sizeof buffer, 0, MSG_DONTWAIT);
  if (!received.ok() || received->kind == ReceivedMessage::Kind::kClosed) {
    close_connection(fd);
    return;
  }
  if (received->kind == ReceivedMessage::Kind::kWouldBlock) {
    if (events & (EPOLLHUP | EPOLLRDHUP | EPOLLERR)) close_connection(fd);
    return;
  }
  if (received->truncated) {
    refuse(connection, ConnectOutcome::kMalformed,
           "the connect request is longer than " + std::to_string(kMaxHandshakeBytes) + " bytes or carries fds");
    return;
  }
  if (connection.request.kind == static_cast<std::uint32_t>(ConnectKind::kReload)) {
    on_reload_request(connection, std::span<const std::byte>(buffer, received->bytes));
    return;
  }
  Result<ConnectRequest> request = parse_connect_request(std::span<const std::byte>(buffer, received->bytes));
  if (!request.ok()) {
    refuse(connection,
           request.code() == ErrorCode::kVersionMismatch ? ConnectOutcome::kVersionMismatch : ConnectOutcome::kMalformed,
           request.message());
    return;
  }
  connection.request = *request;
  on_request(connection);
}

void ConnectionManager::on_request(Connection& connection) {
  // A reload request follows; it is judged once read, so that a refusal is never sent with a
  // message of the client's still unread (the close would reset the connection under the reply).
  if (connection.request.kind == static_cast<std::uint32_t>(ConnectKind::kReload)) return;
  if (connection.request.kind == static_cast<std::uint32_t>(ConnectKind::kObserve)) {
    if (observers_ >= settings_.max_observers || observers_of(connection.peer.uid) >= settings_.max_observers_per_user) {
      refuse(connection, ConnectOutcome::kTooManyClients,
             std::to_string(observers_) + " observers are connected already (" +
                 std::to_string(observers_of(connection.peer.uid)) + " of this user's); try again");
      return;
    }
    ConnectReply reply = reply_for(ConnectOutcome::kAccepted);
    const int fds[] = {status_.fd()};
    reply.fd_count = 1;
    if (!send_message(connection.socket.get(), &reply, sizeof reply, fds).ok()) {
      close_connection(connection.socket.get());
      return;
    }
    connection.state = State::kObserving;
    ++observers_;
    status_.page().clients.observers.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  const std::uint64_t asked = connection.request.arena_bytes;
  if (asked > settings_.max_arena_bytes) {
    refuse(connection, ConnectOutcome::kArenaTooLarge,
           "the client asked for " + std::to_string(asked) + " bytes of arena; this sidecar allows at most " +
               std::to_string(settings_.max_arena_bytes) + " (--max-arena-bytes)");
    return;
  }
  if (stopping_.load(std::memory_order_acquire)) {
    refuse(connection, ConnectOutcome::kShuttingDown, "the sidecar is shutting down");
    return;
  }
  if (!ready_.load(std::memory_order_acquire)) {
    // Said now, so that the client can tell "warming up" from "not answering"; the channel follows.
    ConnectReply reply = reply_for(ConnectOutcome::kWarmingUp);
    set_reply_message(reply, "the sidecar is " +
                                 std::string(sidecar_state_name(status_.page().state.load(std::memory_order_acquire))));
    if (!send_message(connection.socket.get(), &reply, sizeof reply).ok()) {
      close_connection(connection.socket.get());
      return;
    }
    connection.state = State::kWaitingForReady;
    return;
  }
  attach(connection);
}

void ConnectionManager::on_reload_request(Connection& connection, std::span<const std::byte> message) {
  Result<std::string> path = parse_reload_request(message);
  if (!path.ok()) {
    refuse(connection, path.code() == ErrorCode::kVersionMismatch ? ConnectOutcome::kVersionMismatch : ConnectOutcome::kMalformed,
           path.message());
    return;
  }
  const uid_t own_uid = ::geteuid();
  if (connection.peer.uid != own_uid && connection.peer.uid != 0) {
    refusal_warning("refused a reload from pid {} (uid {}): only uid {} or root may reload", connection.peer.pid,
                    connection.peer.uid, own_uid);
    refuse(connection, ConnectOutcome::kNotAllowed,
           "only the sidecar's user (uid " + std::to_string(own_uid) + ") or root may reload its model");
    return;
  }
  if (stopping_.load(std::memory_order_acquire)) {
    refuse(connection, ConnectOutcome::kShuttingDown, "the sidecar is shutting down");
    return;
  }
  if (!reload_handler_ || !ready_.load(std::memory_order_acquire)) {
    refuse(connection, ConnectOutcome::kReloadFailed,
           reload_handler_ ? "the sidecar is still warming up its first model" : "this sidecar cannot reload");
    return;
  }
  spdlog::info("reload of {} asked by pid {} (uid {})", path->empty() ? "the current model file" : *path,
               connection.peer.pid, connection.peer.uid);
  const int fd = connection.socket.get();
  ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, fd, nullptr);
  UniqueFd socket = std::move(connection.socket);
  const PeerCredentials peer = connection.peer;
  connections_.erase(fd);
  reload_handler_(std::move(socket), std::move(*path), peer);
}

void ConnectionManager::attach(Connection& connection) {
  const std::uint64_t asked = connection.request.arena_bytes;
  const std::uint64_t arena = round_arena(asked != 0 ? asked : settings_.default_arena_bytes);
  Result<ChannelSlot*> opened = open_channel(connection, arena);
  if (!opened.ok()) {
    const ConnectOutcome outcome = opened.code() == ErrorCode::kTooManyClients ? ConnectOutcome::kTooManyClients
                                   : opened.code() == ErrorCode::kOutOfMemory  ? ConnectOutcome::kOutOfMemory
                                                                               : ConnectOutcome::kInternal;
    refuse(connection, outcome, opened.message());
    return;
  }
  ChannelSlot& slot = **opened;
  ConnectReply reply = reply_for(ConnectOutcome::kAccepted);
  reply.channel_bytes = slot.memory.mapping.size();
  reply.arena_offset = ChannelGeometry::compute(slot.arena_bytes).arena_offset;
  reply.arena_bytes = slot.arena_bytes;
  reply.client_id = slot.index;
  int fds[kMaxReplyFds] = {status_.fd(), slot.memory.fd.get(), slot.request_event.get(), -1};
  reply.fd_count = 3;
  if (cache_ != nullptr && settings_.cache_scope == CacheScope::kShared) {
    fds[kCacheFd] = cache_->fd();
    reply.fd_count = 4;
    reply.cache_bytes = cache_->bytes();
  }
  connection.slot = &slot;
  connection.state = State::kAttached;
  if (!send_message(connection.socket.get(), &reply, sizeof reply, std::span<const int>(fds, reply.fd_count)).ok()) {
    close_connection(connection.socket.get());
    return;
  }
  spdlog::info("client {} connected: pid {}, uid {}, {} bytes of arena", slot.index, connection.peer.pid,
               connection.peer.uid, slot.arena_bytes);
}

Result<ChannelSlot*> ConnectionManager::open_channel(const Connection& connection, std::uint64_t arena_bytes) {
  const ChannelGeometry geometry = ChannelGeometry::compute(arena_bytes);
  Result<ChannelSlot*> claimed = table_.claim_free(geometry.channel_bytes);
  if (!claimed.ok()) return claimed.error();
  ChannelSlot* slot = *claimed;
  Result<OwnedMemory> memory = create_committed_memory("sidecar-channel", geometry.channel_bytes);
  if (!memory.ok()) {
    table_.unclaim(*slot);
    return Error{ErrorCode::kOutOfMemory, "no memory for a channel of " + std::to_string(geometry.channel_bytes) +
                                              " bytes: " + memory.message()};
  }
  slot->memory = std::move(*memory);
  auto* header = new (slot->memory.mapping.base()) ChannelHeader{};
  header->magic = kChannelMagic;
  header->protocol_version = kProtocolVersion;
  header->header_bytes = sizeof(ChannelHeader);
  header->channel_bytes = geometry.channel_bytes;
  header->arena_offset = geometry.arena_offset;
  header->arena_bytes = geometry.arena_bytes;
  // Fixed size from now on: no holder can truncate it under the other.
  if (Done sealed = add_seals(slot->memory.fd.get(), kSizeSeals); !sealed.ok()) {
    table_.unclaim(*slot);
    return sealed.error();
  }
  slot->shared = header;
  slot->arena = slot->memory.mapping.base() + geometry.arena_offset;
  slot->arena_bytes = geometry.arena_bytes;
  slot->request_event.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  slot->wake_socket.reset(::fcntl(connection.socket.get(), F_DUPFD_CLOEXEC, 0));
  if (!slot->request_event || !slot->wake_socket) {
    table_.unclaim(*slot);
    return Error{ErrorCode::kOutOfMemory, "eventfd/dup: " + errno_text(errno)};
  }
  slot->peer_uid = connection.peer.uid;
  slot->peer_pid = connection.peer.pid;
  slot->cache_scope = settings_.cache_scope == CacheScope::kPerUser ? per_user_scope(connection.peer.uid) : kSharedScope;
  if (Done activated = table_.activate(*slot); !activated.ok()) {
    table_.unclaim(*slot);
    return activated.error();
  }
  return slot;
}

ConnectReply ConnectionManager::reply_for(ConnectOutcome outcome) const {
  ConnectReply reply{};
  reply.prefix = make_prefix(sizeof(ConnectReply));
  reply.outcome = static_cast<std::uint32_t>(outcome);
  const StatusPage& page = status_.page();
  reply.start_generation = page.start_generation;
  reply.sidecar_pid = page.sidecar_pid;
  reply.state = page.state.load(std::memory_order_acquire);
  reply.status_page_bytes = status_.bytes();
  return reply;
}

void ConnectionManager::answer_reload(UniqueFd socket, const Result<std::string>& outcome) const {
  ConnectReply reply = reply_for(outcome.ok() ? ConnectOutcome::kAccepted
                                 : outcome.code() == ErrorCode::kShuttingDown ? ConnectOutcome::kShuttingDown
                                                                              : ConnectOutcome::kReloadFailed);
  set_reply_message(reply, outcome.ok() ? *outcome : outcome.message());
  // Nothing of the client's is unread, so closing right after the reply loses nothing.
  [[maybe_unused]] const Done sent = send_message(socket.get(), &reply, sizeof reply);
}

void ConnectionManager::refuse(Connection& connection, ConnectOutcome outcome, const std::string& message) {
  refusal_warning("refused pid {} (uid {}): {}", connection.peer.pid, connection.peer.uid, message);
  ConnectReply reply = reply_for(outcome);
  set_reply_message(reply, message);
  [[maybe_unused]] const Done sent = send_message(connection.socket.get(), &reply, sizeof reply);
  status_.page().clients.refused.fetch_add(1, std::memory_order_relaxed);
  close_connection(connection.socket.get());
}

void ConnectionManager::close_connection(int fd) {
  auto it = connections_.find(fd);
  if (it == connections_.end()) return;
  Connection& connection = it->second;
  ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, fd, nullptr);
  // The channel's duplicate of the socket lives until the channel is reclaimed: shut the
  // connection down now, so that a client we drop sees the hang-up at once.
  ::shutdown(fd, SHUT_RDWR);
  if (connection.slot != nullptr) {
    spdlog::info("client {} disconnected: pid {}, uid {}", connection.slot->index, connection.peer.pid,
                 connection.peer.uid);
    table_.request_reclaim(*connection.slot);
  }
  if (connection.state == State::kObserving) {
    --observers_;
    status_.page().clients.observers.fetch_sub(1, std::memory_order_relaxed);
  }
  connections_.erase(it);  // closes the socket
}

void ConnectionManager::expire_handshakes() {
  const std::uint64_t now = monotonic_ns();
  std::vector<int> expired;
  std::vector<int> refused;
  for (const auto& [fd, connection] : connections_) {
    if (connection.state == State::kHandshaking && now > connection.deadline_ns) expired.push_back(fd);
    if (connection.state == State::kRefused && now > connection.deadline_ns) refused.push_back(fd);
  }
  for (int fd : expired) {
    refusal_warning("pid {} sent no connect request within the handshake timeout; closing", connections_[fd].peer.pid);
    status_.page().clients.refused.fetch_add(1, std::memory_order_relaxed);
    close_connection(fd);
  }
  for (int fd : refused) close_connection(fd);
}

void ConnectionManager::attach_waiting() {
  std::vector<int> waiting;
  for (const auto& [fd, connection] : connections_) {
    if (connection.state == State::kWaitingForReady) waiting.push_back(fd);
  }
  for (int fd : waiting) {
    if (auto it = connections_.find(fd); it != connections_.end()) attach(it->second);
  }
}

void ConnectionManager::drop_requested_channels() {
  std::vector<int> dropped;
  for (const auto& [fd, connection] : connections_) {
    if (connection.slot != nullptr && connection.slot->drop_requested.load(std::memory_order_relaxed)) {
      dropped.push_back(fd);
    }
  }
  for (int fd : dropped) close_connection(fd);
}

std::uint32_t ConnectionManager::pending(std::optional<uid_t> uid) const {
  std::uint32_t count = 0;
  for (const auto& [fd, connection] : connections_) {
    if (uid && connection.peer.uid != *uid) continue;
    if (connection.state == State::kHandshaking || connection.state == State::kWaitingForReady) ++count;
  }
  return count;
}

std::uint32_t ConnectionManager::refused_held() const {
  std::uint32_t count = 0;
  for (const auto& [fd, connection] : connections_) count += connection.state == State::kRefused;
  return count;
}

std::uint32_t ConnectionManager::observers_of(uid_t uid) const {
  std::uint32_t count = 0;
  for (const auto& [fd, connection] : connections_) {
    if (connection.peer.uid == uid && connection.state == State::kObserving) ++count;
  }
  return count;
}

}  // namespace sidecar
