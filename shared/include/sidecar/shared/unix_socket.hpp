// Messages and fds over a Unix socket (SOCK_SEQPACKET), and who is on the other end.
#pragma once

#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "sidecar/shared/error.hpp"
#include "sidecar/shared/memfd.hpp"

namespace sidecar {

// The peer's identity as the kernel recorded it when the connection was made: it cannot be forged
// by the peer, and a later setuid in the peer does not change it.
struct PeerCredentials {
  pid_t pid = 0;
  uid_t uid = 0;
  gid_t gid = 0;
};

inline Result<PeerCredentials> peer_credentials(int socket) {
  ucred credentials{};
  socklen_t length = sizeof credentials;
  if (::getsockopt(socket, SOL_SOCKET, SO_PEERCRED, &credentials, &length) != 0) {
    return Error{ErrorCode::kProtocolError, "SO_PEERCRED failed: " + errno_text(errno)};
  }
  return PeerCredentials{credentials.pid, credentials.uid, credentials.gid};
}

// The peer's supplementary groups when it connected (SO_PEERGROUPS); empty if the kernel says none.
inline std::vector<gid_t> peer_groups(int socket) {
  std::vector<gid_t> groups(64);
  while (true) {
    socklen_t length = static_cast<socklen_t>(groups.size() * sizeof(gid_t));
    if (::getsockopt(socket, SOL_SOCKET, SO_PEERGROUPS, groups.data(), &length) == 0) {
      groups.resize(length / sizeof(gid_t));
      return groups;
    }
    if (errno != ERANGE || groups.size() >= 65536) return {};
    groups.resize(length / sizeof(gid_t) + 1);
  }
}

// The sockaddr for `path`, or an error when the path does not fit sun_path.
inline Result<sockaddr_un> unix_address(const std::string& path) {
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (path.size() >= sizeof(address.sun_path)) {
    return Error{ErrorCode::kInvalidArgument, "socket path " + path + " is longer than the " +
                                                  std::to_string(sizeof(address.sun_path) - 1) +
                                                  " bytes a Unix socket path may have"};
  }
  std::memcpy(address.sun_path, path.c_str(), path.size() + 1);
  return address;
}

// One message, with `fds` attached. Never raises SIGPIPE (MSG_NOSIGNAL): a peer that went away is
// an error return.
inline Done send_message(int socket, const void* data, std::size_t bytes, std::span<const int> fds = {}) {
  iovec vector{const_cast<void*>(data), bytes};
  msghdr header{};
  header.msg_iov = &vector;
  header.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 8)];
  if (!fds.empty()) {
    if (fds.size() > 8) return {ErrorCode::kInvalidArgument, "too many fds for one message"};
    std::memset(control, 0, sizeof control);
    header.msg_control = control;
    header.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    cmsghdr* message = CMSG_FIRSTHDR(&header);
    message->cmsg_level = SOL_SOCKET;
    message->cmsg_type = SCM_RIGHTS;
    message->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(message), fds.data(), sizeof(int) * fds.size());
  }
  while (true) {
    const ssize_t sent = ::sendmsg(socket, &header, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (sent == static_cast<ssize_t>(bytes)) return {};
    if (sent < 0 && errno == EINTR) continue;
    return {ErrorCode::kSidecarGone, "send failed: " + errno_text(sent < 0 ? errno : EMSGSIZE)};
  }
}

struct ReceivedMessage {
  enum class Kind { kMessage, kClosed, kWouldBlock } kind = Kind::kMessage;
  std::size_t bytes = 0;
  bool truncated = false;  // the message was longer than the buffer
  std::vector<UniqueFd> fds;
};

// One message into `buffer`. Up to `max_fds` fds are taken (close-on-exec); with 0 the kernel
// closes any the peer attached, so a peer cannot make us hold fds we did not ask for.
inline Result<ReceivedMessage> receive_message(int socket, void* buffer, std::size_t capacity,
                                               std::size_t max_fds, int flags = 0) {
  iovec vector{buffer, capacity};
  msghdr header{};
  header.msg_iov = &vector;
  header.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 8)];
  if (max_fds > 0) {
    header.msg_control = control;
    header.msg_controllen = CMSG_SPACE(sizeof(int) * std::min<std::size_t>(max_fds, 8));
  }
  ssize_t received = 0;
  do {
    received = ::recvmsg(socket, &header, flags | MSG_CMSG_CLOEXEC);
  } while (received < 0 && errno == EINTR);
  ReceivedMessage result;
  if (received < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      result.kind = ReceivedMessage::Kind::kWouldBlock;
      return result;
    }
    if (errno == ECONNRESET) {
      result.kind = ReceivedMessage::Kind::kClosed;
      return result;
    }
    return Error{ErrorCode::kProtocolError, "recvmsg failed: " + errno_text(errno)};
  }
  if (max_fds > 0) {
    for (cmsghdr* message = CMSG_FIRSTHDR(&header); message != nullptr; message = CMSG_NXTHDR(&header, message)) {
      if (message->cmsg_level != SOL_SOCKET || message->cmsg_type != SCM_RIGHTS) continue;
      const std::size_t count = (message->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (std::size_t i = 0; i < count; ++i) {
        int fd = -1;
        std::memcpy(&fd, CMSG_DATA(message) + i * sizeof(int), sizeof fd);
        result.fds.emplace_back(fd);
      }
    }
  }
  if (received == 0) {
    result.kind = ReceivedMessage::Kind::kClosed;
    return result;
  }
  result.bytes = static_cast<std::size_t>(received);
  result.truncated = (header.msg_flags & MSG_TRUNC) != 0 || (header.msg_flags & MSG_CTRUNC) != 0;
  return result;
}

}  // namespace sidecar
