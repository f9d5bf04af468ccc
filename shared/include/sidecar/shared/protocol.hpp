// The handshake on a sidecar's Unix socket (SOCK_SEQPACKET: one message per send, boundaries kept).
//
//   client  -> sidecar   ConnectRequest                       attach (a channel) or observe (status only)
//   sidecar -> client    ConnectReply + fds (SCM_RIGHTS)      accepted, or refused with the reason
//
// A reload (sidecarctl reload) sends a ReloadRequest right after its ConnectRequest and gets one
// ConnectReply, no fds, when the reload has ended: what was loaded, or why the old model serves on.
// Only the sidecar's own user and root may reload.
//
// Before the sidecar is ready, an attach is answered at once with kWarmingUp (no fds) and later
// with the final reply, so a client can say what it is waiting for. After the handshake the socket
// stays open for the client's life, and its hang-up is how each side learns that the other is
// gone. It carries only wake-ups, one way: a one-byte message from the sidecar to a client that
// said it sleeps (sent with MSG_DONTWAIT, a flag of the call that the client cannot change, unlike
// the O_NONBLOCK of an fd both share). Anything a client sends after the handshake ends its
// connection.
//
// The first 16 bytes of both messages (HandshakePrefix) are the same in every protocol version, so
// that two versions can always tell each other which version they speak.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <type_traits>

#include "sidecar/shared/descriptors.hpp"
#include "sidecar/shared/error.hpp"
#include "sidecar/shared/version.hpp"

namespace sidecar {

inline constexpr std::uint64_t kHandshakeMagic = 0x4b4e494c45444953ull;  // "SIDELINK", little-endian

struct HandshakePrefix {
  std::uint64_t magic;
  std::uint32_t protocol_version;
  std::uint32_t message_bytes;  // sizeof the whole message in the sender's version
};
static_assert(sizeof(HandshakePrefix) == 16);

enum class ConnectKind : std::uint32_t {
  kAttach = 1,   // a channel to run requests on, and the status page and cache
  kObserve = 2,  // the status page only: state, model, statistics (works while warming up)
  kReload = 3,   // swap the model: a ReloadRequest follows
};

inline constexpr std::uint32_t kMaxReloadPathBytes = 1024;

struct ReloadRequest {
  HandshakePrefix prefix;
  std::uint32_t path_length;  // 0: reload the file the sidecar serves now
  std::uint32_t reserved;
  char model_path[kMaxReloadPathBytes];
};
static_assert(sizeof(ReloadRequest) == 24 + kMaxReloadPathBytes);

struct ConnectRequest {
  HandshakePrefix prefix;
  std::uint32_t kind;   // a ConnectKind
  std::uint32_t flags;  // none defined: must be 0
  // Bytes of tensor arena the client asks for; 0 takes the sidecar's --arena-bytes. The sidecar
  // refuses more than its --max-arena-bytes.
  std::uint64_t arena_bytes;
  std::uint64_t reserved[4];
};
static_assert(sizeof(ConnectRequest) == 64);

enum class ConnectOutcome : std::uint32_t {
  kAccepted = 0,
  kWarmingUp = 1,  // not final: the sidecar is warming up, and the final reply follows when it is ready
  kVersionMismatch = 2,
  kMalformed = 3,
  kNotAllowed = 4,       // --allow-user / --allow-group refuse this peer
  kTooManyClients = 5,   // --max-clients reached
  kArenaTooLarge = 6,    // more arena than --max-arena-bytes
  kOutOfMemory = 7,      // the channel's memory could not be committed
  kShuttingDown = 8,
  kInternal = 9,
  kTryAgain = 10,  // too many handshakes under way (this user's, or all): a client retries
  kReloadFailed = 11,  // the new model did not load or warm up; the old one serves on
};

constexpr ErrorCode error_code_for(ConnectOutcome outcome) noexcept {
  switch (outcome) {
    case ConnectOutcome::kAccepted: return ErrorCode::kOk;
    case ConnectOutcome::kWarmingUp: return ErrorCode::kNotReady;
    case ConnectOutcome::kVersionMismatch: return ErrorCode::kVersionMismatch;
    case ConnectOutcome::kMalformed: return ErrorCode::kProtocolError;
    case ConnectOutcome::kNotAllowed: return ErrorCode::kPermissionDenied;
    case ConnectOutcome::kTooManyClients: return ErrorCode::kTooManyClients;
    case ConnectOutcome::kArenaTooLarge: return ErrorCode::kInvalidArgument;
    case ConnectOutcome::kOutOfMemory: return ErrorCode::kOutOfMemory;
    case ConnectOutcome::kShuttingDown: return ErrorCode::kShuttingDown;
    case ConnectOutcome::kInternal: return ErrorCode::kProtocolError;
    case ConnectOutcome::kTryAgain: return ErrorCode::kBusy;
    case ConnectOutcome::kReloadFailed: return ErrorCode::kModelError;
  }
  return ErrorCode::kProtocolError;
}

// The fds an accepted reply carries, in this order. An observer gets the status page only; the
// cache comes only when the sidecar has one that clients may map (shared scope).
enum ReplyFd : std::uint32_t {
  kStatusPageFd = 0,    // read-only, sealed
  kChannelFd = 1,       // this client's channel, sealed against resizing
  kRequestEventFd = 2,  // eventfd: the client writes it to wake a sleeping sidecar; the sidecar never
                        // reads or writes it, only waits on it
  kCacheFd = 3,         // read-only, sealed (optional)
};
inline constexpr std::uint32_t kMaxReplyFds = 4;

// The one-byte message that wakes a sleeping client.
inline constexpr char kWakeByte = 'w';

struct ConnectReply {
  HandshakePrefix prefix;
  std::uint32_t outcome;   // a ConnectOutcome
  std::uint32_t fd_count;  // fds that came with this message
  std::uint64_t start_generation;
  std::int32_t sidecar_pid;
  std::uint32_t state;  // the sidecar's SidecarState when it replied
  std::uint64_t status_page_bytes;
  std::uint64_t channel_bytes;
  std::uint64_t arena_offset;
  std::uint64_t arena_bytes;
  std::uint64_t cache_bytes;  // 0: no cache fd
  std::uint32_t client_id;    // this channel's slot in the sidecar, for logs and status
  std::uint32_t message_length;
  std::uint64_t reserved[5];
  char message[kMessageBytes];  // why it refused, or what it waits for
};
static_assert(sizeof(ConnectReply) == 128 + kMessageBytes);
static_assert(std::is_trivially_copyable_v<ConnectRequest> && std::is_trivially_copyable_v<ConnectReply>);

// The largest message either side reads: a bigger one is malformed. Room to spare, so that a
// later version's longer message still reaches the version check.
inline constexpr std::size_t kMaxHandshakeBytes = 4096;

// What a message's prefix says, checked before anything else in it is read. `peer` and `self` name
// the two sides for the version message ("the sidecar", "this client").
inline Done check_prefix(std::span<const std::byte> message, std::size_t expected_bytes, const char* what,
                         const char* peer, const char* self) {
  if (message.size() < sizeof(HandshakePrefix)) {
    return {ErrorCode::kProtocolError, std::string(what) + " of " + std::to_string(message.size()) +
                                           " bytes is shorter than the 16-byte prefix every version starts with"};
  }
  HandshakePrefix prefix;
  std::memcpy(&prefix, message.data(), sizeof prefix);
  if (prefix.magic != kHandshakeMagic) {
    return {ErrorCode::kProtocolError, std::string(what) + " does not start with the inference-sidecar magic"};
  }
  if (prefix.protocol_version != kProtocolVersion) {
    return {ErrorCode::kVersionMismatch, std::string(peer) + " speaks protocol version " +
                                             std::to_string(prefix.protocol_version) + ", " + self +
                                             " speaks version " + std::to_string(kProtocolVersion) +
                                             "; upgrade the older side"};
  }
  if (prefix.message_bytes != expected_bytes || message.size() != expected_bytes) {
    return {ErrorCode::kProtocolError, std::string(what) + " is " + std::to_string(message.size()) +
                                           " bytes (it says " + std::to_string(prefix.message_bytes) +
                                           "); version " + std::to_string(kProtocolVersion) + " sends " +
                                           std::to_string(expected_bytes)};
  }
  return {};
}

// A connect request from a client: every byte is untrusted. The sidecar's reply to an error names
// the problem (and, for kVersionMismatch, both versions).
inline Result<ConnectRequest> parse_connect_request(std::span<const std::byte> message) {
  if (Done prefix = check_prefix(message, sizeof(ConnectRequest), "the connect request", "this client", "the sidecar"); !prefix.ok()) {
    return prefix.error();
  }
  ConnectRequest request;
  std::memcpy(&request, message.data(), sizeof request);
  if (request.kind != static_cast<std::uint32_t>(ConnectKind::kAttach) &&
      request.kind != static_cast<std::uint32_t>(ConnectKind::kObserve) &&
      request.kind != static_cast<std::uint32_t>(ConnectKind::kReload)) {
    return Error{ErrorCode::kProtocolError, "unknown connection kind " + std::to_string(request.kind)};
  }
  if (request.flags != 0) {
    return Error{ErrorCode::kProtocolError, "unknown connect flags " + std::to_string(request.flags)};
  }
  for (std::uint64_t word : request.reserved) {
    if (word != 0) return Error{ErrorCode::kProtocolError, "reserved fields of the connect request are not zero"};
  }
  return request;
}

// A reply from the sidecar (whose uid the client has checked by then). Only the structure is
// checked here; the fds and sizes are checked against what they claim when they are mapped.
inline Result<ConnectReply> parse_connect_reply(std::span<const std::byte> message) {
  if (Done prefix = check_prefix(message, sizeof(ConnectReply), "the sidecar's reply", "the sidecar", "this client"); !prefix.ok()) {
    return prefix.error();
  }
  ConnectReply reply;
  std::memcpy(&reply, message.data(), sizeof reply);
  if (reply.outcome > static_cast<std::uint32_t>(ConnectOutcome::kReloadFailed)) {
    return Error{ErrorCode::kProtocolError, "unknown connect outcome " + std::to_string(reply.outcome)};
  }
  if (reply.message_length > kMessageBytes || reply.fd_count > kMaxReplyFds) {
    return Error{ErrorCode::kProtocolError, "the sidecar's reply has an impossible message length or fd count"};
  }
  return reply;
}

// The model path of a reload request (empty: the current file). Sent only by the sidecar's own
// user or root, but checked like any other message.
inline Result<std::string> parse_reload_request(std::span<const std::byte> message) {
  if (Done prefix = check_prefix(message, sizeof(ReloadRequest), "the reload request", "this client", "the sidecar");
      !prefix.ok()) {
    return prefix.error();
  }
  ReloadRequest request;
  std::memcpy(&request, message.data(), sizeof request);
  if (request.path_length > kMaxReloadPathBytes || request.reserved != 0) {
    return Error{ErrorCode::kProtocolError, "the reload request's path length or reserved field is invalid"};
  }
  std::string path(request.model_path, request.path_length);
  if (path.find('\0') != std::string::npos) {
    return Error{ErrorCode::kInvalidArgument, "the model path holds a NUL byte"};
  }
  return path;
}

inline HandshakePrefix make_prefix(std::uint32_t message_bytes) noexcept {
  return HandshakePrefix{kHandshakeMagic, kProtocolVersion, message_bytes};
}

inline std::string reply_message(const ConnectReply& reply) {
  return std::string(reply.message, std::min<std::size_t>(reply.message_length, kMessageBytes));
}

inline void set_reply_message(ConnectReply& reply, const std::string& text) {
  const std::size_t length = std::min<std::size_t>(text.size(), kMessageBytes);
  std::memcpy(reply.message, text.data(), length);
  reply.message_length = static_cast<std::uint32_t>(length);
}

}  // namespace sidecar
