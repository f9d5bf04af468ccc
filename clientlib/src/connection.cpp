#include "connection.hpp"

#include <poll.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "sidecar_trust.hpp"
#include "sidecar/shared/clock.hpp"
#include "sidecar/shared/runtime_dir.hpp"
#include "sidecar/shared/unix_socket.hpp"
#include "sidecar/shared/user_names.hpp"

namespace sidecar {
namespace {

constexpr auto kRetryPause = std::chrono::milliseconds(5);
// A live sidecar answers a connect request at once (if only to say it is warming up): a caller's
// timeout shorter than this still gets that first answer.
constexpr std::uint64_t kFirstReplyGraceNs = 2'000'000'000;

std::string octal(unsigned mode) {
  char text[16];
  std::snprintf(text, sizeof text, "%04o", mode & 07777);
  return text;
}

// What to tell a user who may not connect: who owns the socket, its group and mode, and the fix.
std::string permission_message(const std::string& path, const std::string& runtime_dir) {
  std::string text = "permission denied on " + path;
  struct stat socket_info {};
  if (::stat(path.c_str(), &socket_info) == 0) {
    text += " (owner " + user_name(socket_info.st_uid) + ", group " + group_name(socket_info.st_gid) + ", mode " +
            octal(socket_info.st_mode) + "): run as a member of group '" + group_name(socket_info.st_gid) +
            "' (usermod -aG " + group_name(socket_info.st_gid) + " " + user_name(::geteuid()) +
            ", then log in again), or ask for the sidecar's --allow-user or --socket-mode";
  } else {
    struct stat dir_info {};
    if (::stat(runtime_dir.c_str(), &dir_info) == 0) {
      text += ": its directory " + runtime_dir + " (owner " + user_name(dir_info.st_uid) + ", group " +
              group_name(dir_info.st_gid) + ", mode " + octal(dir_info.st_mode) + ") is closed to user " +
              user_name(::geteuid()) + "; join group '" + group_name(dir_info.st_gid) + "'";
    }
  }
  return text;
}

// Waits for a readable socket until `deadline_ns`: false on timeout.
bool wait_readable(int fd, std::uint64_t deadline_ns) {
  while (true) {
    const std::uint64_t now = monotonic_ns();
    if (now >= deadline_ns) return false;
    pollfd entry{fd, POLLIN, 0};
    const std::uint64_t left_ms = (deadline_ns - now + 999'999) / 1'000'000;
    const int ready = ::poll(&entry, 1, static_cast<int>(std::min<std::uint64_t>(left_ms, 1000)));
    if (ready > 0) return true;
    if (ready < 0 && errno != EINTR) return true;  // let the read report it
  }
}

enum class Attempt { kConnected, kRetry, kFail };

// A socket connected to sidecar `name`: the first of the places to look that holds a socket that
// answers, so that a stale socket in one place does not hide a live one in the next.
struct Dialed {
  UniqueFd socket;
  std::string path;
  std::string runtime_dir;
};

Attempt dial(const std::string& name, const std::string& given_dir, Dialed& dialed, Error& last) {
  std::string looked_at;
  bool found_any = false;
  for (const std::string& dir : client_runtime_dirs(given_dir)) {
    const std::string path = socket_path(dir, name);
    looked_at += (looked_at.empty() ? "" : " or ") + path;
    struct stat info {};
    if (::lstat(path.c_str(), &info) != 0) continue;
    found_any = true;
    const Result<sockaddr_un> address = unix_address(path);
    if (!address.ok()) {
      last = address.error();
      return Attempt::kFail;
    }
    UniqueFd socket(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
    if (!socket) {
      last = Error{ErrorCode::kProtocolError, "socket: " + errno_text(errno)};
      return Attempt::kFail;
    }
    if (::connect(socket.get(), reinterpret_cast<const sockaddr*>(&*address), sizeof(sockaddr_un)) == 0) {
      dialed = Dialed{std::move(socket), path, dir};
      return Attempt::kConnected;
    }
    const int error = errno;
    if (error == EACCES || error == EPERM) {
      last = Error{ErrorCode::kPermissionDenied, permission_message(path, dir)};
      return Attempt::kFail;
    }
    last = error == ECONNREFUSED
               ? Error{ErrorCode::kNotRunning,
                       "no sidecar named '" + name + "' is running (" + path + " is left by one that is gone)"}
               : Error{ErrorCode::kNotRunning, "cannot connect to " + path + ": " + errno_text(error)};
  }
  if (!found_any) {
    last = Error{ErrorCode::kNotRunning, "no sidecar named '" + name + "' is running (no socket at " + looked_at + ")"};
  }
  return Attempt::kRetry;  // it may be starting, or restarting
}

// Live connections of this process, so that a forked child can let go of them (below).
std::mutex live_mutex;
std::set<Connection*>& live_connections() {
  static std::set<Connection*> connections;
  return connections;
}
std::atomic<std::uint64_t> forks_seen{0};

// A child inherits every fd of its parent, and the kernel sees a hang-up only when the last copy
// of a socket closes: a child that outlived its parent would keep the parent's channel from
// being reclaimed. So the child closes its copies at once (and never touches the channel, whose
// mapping it does not even inherit: MADV_DONTFORK). Runs in the child, which has one thread.
void let_go_in_child() {
  forks_seen.fetch_add(1, std::memory_order_relaxed);
  for (Connection* connection : live_connections()) connection->let_go_after_fork();
  live_mutex.unlock();
}
[[maybe_unused]] const int fork_handlers =
    ::pthread_atfork([] { live_mutex.lock(); }, [] { live_mutex.unlock(); }, let_go_in_child);

}  // namespace

std::uint64_t Connection::forks_seen() noexcept { return ::sidecar::forks_seen.load(std::memory_order_relaxed); }

Connection::~Connection() {
  std::lock_guard lock(live_mutex);
  live_connections().erase(this);
}

void Connection::let_go_after_fork() noexcept {
  // Released, not closed twice: the fds are closed here, the numbers forgotten.
  ::close(socket_.release());
  if (request_event_) ::close(request_event_.release());
  gone_ = true;
}

void Connection::close_socket() noexcept {
  socket_.reset();
  request_event_.reset();
  gone_ = true;
}

Result<std::unique_ptr<Connection>> Connection::open(const std::string& name, const DialSettings& settings,
                                                     std::uint64_t deadline_ns) {
  Error last{ErrorCode::kNotRunning, ""};
  while (true) {
    std::unique_ptr<Connection> connection(new Connection);
    Dialed dialed;
    Attempt attempt = dial(name, settings.runtime_dir, dialed, last);
    if (attempt == Attempt::kConnected) {
      connection->socket_ = std::move(dialed.socket);
      connection->socket_path_ = dialed.path;
      attempt = static_cast<Attempt>(connection->handshake(name, settings, dialed.runtime_dir, deadline_ns, last));
    }
    if (attempt == Attempt::kConnected) {
      std::lock_guard lock(live_mutex);
      live_connections().insert(connection.get());
      return connection;
    }
    if (attempt == Attempt::kFail || monotonic_ns() >= deadline_ns) return last;
    std::this_thread::sleep_for(kRetryPause);
  }
}

int Connection::handshake(const std::string& name, const DialSettings& settings, const std::string& runtime_dir,
                          std::uint64_t deadline_ns, Error& last) {
  // Whoever listens there must be the sidecar's user: checked before we send anything.
  if (Done trusted = check_sidecar_peer(socket_.get(), socket_path_,
                                        trusted_sidecar(runtime_dir, settings.expected_sidecar_uid));
      !trusted.ok()) {
    last = trusted.error();
    return static_cast<int>(Attempt::kFail);
  }
  ConnectRequest request{};
  request.prefix = make_prefix(sizeof(ConnectRequest));
  request.kind = static_cast<std::uint32_t>(settings.kind);
  request.arena_bytes = settings.arena_bytes;
  // A sidecar that refuses this user at once may have replied and closed before the request goes
  // out: then the reply is still there to read, and says why.
  bool sent = send_message(socket_.get(), &request, sizeof request).ok();
  if (sent && settings.kind == ConnectKind::kReload) {
    if (settings.reload_model_path.size() > kMaxReloadPathBytes) {
      last = Error{ErrorCode::kInvalidArgument, "the model path is longer than " + std::to_string(kMaxReloadPathBytes) +
                                                    " bytes"};
      return static_cast<int>(Attempt::kFail);
    }
    ReloadRequest reload{};
    reload.prefix = make_prefix(sizeof(ReloadRequest));
    reload.path_length = static_cast<std::uint32_t>(settings.reload_model_path.size());
    std::memcpy(reload.model_path, settings.reload_model_path.data(), settings.reload_model_path.size());
    sent = send_message(socket_.get(), &reload, sizeof reload).ok();
  }
  if (!sent) {
    pollfd entry{socket_.get(), POLLIN, 0};
    if (::poll(&entry, 1, 0) <= 0) {
      last = Error{ErrorCode::kNotRunning, "sidecar '" + name + "' closed the connection during the handshake"};
      return static_cast<int>(Attempt::kRetry);
    }
  }
  // The final reply, possibly after a "warming up" one.
  const std::uint64_t first_reply_deadline =
      sent ? std::max(deadline_ns, monotonic_ns() + kFirstReplyGraceNs) : monotonic_ns() + 1'000'000;
  bool answered = false;
  bool reset_seen = false;
  while (true) {
    if (!wait_readable(socket_.get(), answered ? deadline_ns : first_reply_deadline)) {
      if (last.code != ErrorCode::kNotReady) {
        last = Error{ErrorCode::kNotReady, "sidecar '" + name + "' did not answer within the timeout"};
      }
      return static_cast<int>(Attempt::kFail);
    }
    alignas(8) std::byte buffer[kMaxHandshakeBytes];
    Result<ReceivedMessage> received = receive_message(socket_.get(), buffer, sizeof buffer, kMaxReplyFds);
    if (!received.ok()) {
      last = received.error();
      return static_cast<int>(Attempt::kFail);
    }
    if (received->kind == ReceivedMessage::Kind::kClosed) {
      // A reset is reported before the messages still queued: look once more for a reply.
      if (!reset_seen) {
        reset_seen = true;
        continue;
      }
      last = Error{ErrorCode::kNotRunning, "sidecar '" + name + "' closed the connection during the handshake"};
      return static_cast<int>(settings.kind == ConnectKind::kReload ? Attempt::kFail : Attempt::kRetry);
    }
    if (received->kind == ReceivedMessage::Kind::kWouldBlock) continue;
    answered = true;
    Result<ConnectReply> reply = parse_connect_reply(std::span<const std::byte>(buffer, received->bytes));
    if (!reply.ok()) {
      last = Error{reply.code(), "sidecar '" + name + "': " + reply.message()};
      return static_cast<int>(Attempt::kFail);
    }
    const auto outcome = static_cast<ConnectOutcome>(reply->outcome);
    if (outcome == ConnectOutcome::kWarmingUp) {
      last = Error{ErrorCode::kNotReady, "sidecar '" + name + "' is not ready: " + reply_message(*reply)};
      continue;
    }
    if (outcome != ConnectOutcome::kAccepted) {
      last = Error{error_code_for(outcome), "sidecar '" + name + "' refused: " + reply_message(*reply)};
      // A reload is never asked twice: the first may have been carried out.
      const bool passing = settings.kind != ConnectKind::kReload &&
                           (outcome == ConnectOutcome::kShuttingDown || outcome == ConnectOutcome::kTryAgain);
      return static_cast<int>(passing ? Attempt::kRetry : Attempt::kFail);
    }
    if (received->fds.size() != reply->fd_count) {
      last = Error{ErrorCode::kProtocolError, "sidecar '" + name + "' sent " + std::to_string(received->fds.size()) +
                                                  " fds, announced " + std::to_string(reply->fd_count)};
      return static_cast<int>(Attempt::kFail);
    }
    reply_ = *reply;
    if (Done mapped = map_accepted(received->fds, settings.kind); !mapped.ok()) {
      last = Error{mapped.code(), "sidecar '" + name + "': " + mapped.message()};
      return static_cast<int>(Attempt::kFail);
    }
    return static_cast<int>(Attempt::kConnected);
  }
}

Done Connection::map_accepted(std::vector<UniqueFd>& fds, ConnectKind kind) {
  if (kind == ConnectKind::kReload) {
    if (fds.empty()) return {};
    return {ErrorCode::kProtocolError, "a reload's reply carries no fds, this one " + std::to_string(fds.size())};
  }
  const std::size_t expected = kind == ConnectKind::kObserve ? 1 : (reply_.cache_bytes != 0 ? 4 : 3);
  if (fds.size() != expected) {
    return {ErrorCode::kProtocolError, "expected " + std::to_string(expected) + " fds, got " + std::to_string(fds.size())};
  }
  Result<SharedMapping> status =
      map_received(fds[kStatusPageFd].get(), reply_.status_page_bytes, kReadOnlySeals, false, "the status page");
  if (!status.ok()) return status.error();
  status_mapping_ = std::move(*status);
  status_ = status_mapping_.as<const StatusPage>();
  if (status_->magic != kStatusMagic || status_->protocol_version != kProtocolVersion ||
      status_->page_bytes != sizeof(StatusPage) || reply_.status_page_bytes < sizeof(StatusPage)) {
    return {ErrorCode::kVersionMismatch, "the status page is not one this client reads (version " +
                                             std::to_string(status_->protocol_version) + ", this client speaks " +
                                             std::to_string(kProtocolVersion) + ")"};
  }
  if (kind == ConnectKind::kObserve) return {};

  const ChannelGeometry geometry = ChannelGeometry::compute(reply_.arena_bytes);
  if (geometry.arena_bytes != reply_.arena_bytes || geometry.arena_offset != reply_.arena_offset ||
      geometry.channel_bytes != reply_.channel_bytes) {
    return {ErrorCode::kProtocolError, "the channel's geometry does not add up"};
  }
  Result<SharedMapping> channel = map_received(fds[kChannelFd].get(), reply_.channel_bytes, kSizeSeals, true, "the channel");
  if (!channel.ok()) return channel.error();
  channel_ = std::move(*channel);
  // A forked child gets no copy of this mapping: it must never post into its parent's channel.
  ::madvise(channel_.base(), channel_.size(), MADV_DONTFORK);
  const ChannelHeader& header = *channel_.as<ChannelHeader>();
  if (header.magic != kChannelMagic || header.protocol_version != kProtocolVersion ||
      header.header_bytes != sizeof(ChannelHeader) || header.channel_bytes != geometry.channel_bytes ||
      header.arena_offset != geometry.arena_offset || header.arena_bytes != geometry.arena_bytes) {
    return {ErrorCode::kProtocolError, "the channel's header does not match the handshake"};
  }
  request_event_ = std::move(fds[kRequestEventFd]);
  if (reply_.cache_bytes != 0) {
    Result<SharedMapping> cache =
        map_received(fds[kCacheFd].get(), reply_.cache_bytes, kReadOnlySeals, false, "the result cache");
    if (!cache.ok()) return cache.error();
    if (Done usable = check_cache_layout(cache->base(), cache->size()); !usable.ok()) return usable;
    cache_mapping_ = std::move(*cache);
    cache_view_ = CacheView(cache_mapping_.base());
  }
  return {};
}

bool Connection::wake_sidecar() const noexcept {
  // Pairs with the sidecar's store of leader_sleeping before its last look at the rings.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (status_->leader_sleeping.load(std::memory_order_relaxed) == 0) return false;
  const std::uint64_t one = 1;
  [[maybe_unused]] const ssize_t written = ::write(request_event_.get(), &one, sizeof one);
  return true;
}

Connection::Wake Connection::sleep(std::uint64_t deadline_ns) noexcept {
  const std::uint64_t now = monotonic_ns();
  if (now >= deadline_ns) return Wake::kTimeout;
  const timespec timeout = timespec_from_ns(deadline_ns - now);
  pollfd entry{socket_.get(), POLLIN | POLLRDHUP, 0};
  const int ready = ::ppoll(&entry, 1, &timeout, nullptr);
  if (ready == 0) return Wake::kTimeout;
  if (ready < 0) return Wake::kSignalled;  // EINTR: the caller looks again
  if (entry.revents & (POLLRDHUP | POLLHUP | POLLERR)) {
    gone_ = true;
    return Wake::kSidecarGone;
  }
  wake_unread_ = true;  // read before the next sleep: see sleep_for_response
  return Wake::kSignalled;
}

bool Connection::drain_wake_up() noexcept {
  // One read: the sidecar sends one byte per sleep. A second one, from a wake-up that raced a sleep
  // that ended without it, makes the next sleep return at once and is read then: a rescan, rather
  // than a second system call on every wake-up.
  wake_unread_ = false;
  char byte = 0;
  const ssize_t got = ::recv(socket_.get(), &byte, 1, MSG_DONTWAIT);
  if (got == 0 || (got < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
    gone_ = true;
    return false;
  }
  return true;
}

bool Connection::sidecar_gone(bool check_now) noexcept {
  if (gone_ || !check_now) return gone_;
  pollfd entry{socket_.get(), POLLIN | POLLRDHUP, 0};
  if (::poll(&entry, 1, 0) <= 0) return gone_;
  // From the hang-up itself: a wake-up byte still unread sits ahead of the end of the stream.
  if (entry.revents & (POLLRDHUP | POLLHUP | POLLERR)) gone_ = true;
  return gone_;
}

}  // namespace sidecar
