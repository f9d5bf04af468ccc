// The socket handshake's parsers on arbitrary bytes. parse_connect_request (and, for a reload,
// parse_reload_request) reads what any local process sends the sidecar; parse_connect_reply what a client reads from whatever listens on the
// socket. Besides memory errors (ASan, UBSan), each result is checked against an independent
// reading of protocol.hpp: a message is accepted exactly when it is well-formed, and what is
// accepted is what was sent.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>

#include "fuzz_check.hpp"
#include "sidecar/shared/protocol.hpp"

namespace {

using namespace sidecar;

template <typename T>
T field_at(const std::uint8_t* data, std::size_t offset) {
  T value;
  std::memcpy(&value, data + offset, sizeof value);
  return value;
}

// What check_prefix must say about a message of `size` bytes expected to be `expected` bytes long:
// kOk, kVersionMismatch or kProtocolError.
ErrorCode expected_prefix_code(const std::uint8_t* data, std::size_t size, std::size_t expected) {
  if (size < sizeof(HandshakePrefix)) return ErrorCode::kProtocolError;
  if (field_at<std::uint64_t>(data, 0) != kHandshakeMagic) return ErrorCode::kProtocolError;
  if (field_at<std::uint32_t>(data, 8) != kProtocolVersion) return ErrorCode::kVersionMismatch;
  if (field_at<std::uint32_t>(data, 12) != expected || size != expected) return ErrorCode::kProtocolError;
  return ErrorCode::kOk;
}

void check_request(const std::uint8_t* data, std::size_t size) {
  const Result<ConnectRequest> request = parse_connect_request(std::span(reinterpret_cast<const std::byte*>(data), size));
  ErrorCode expected = expected_prefix_code(data, size, sizeof(ConnectRequest));
  if (expected == ErrorCode::kOk) {
    const std::uint32_t kind = field_at<std::uint32_t>(data, offsetof(ConnectRequest, kind));
    bool reserved_zero = true;
    for (std::size_t i = 0; i < 4; ++i) {
      reserved_zero = reserved_zero && field_at<std::uint64_t>(data, offsetof(ConnectRequest, reserved) + 8 * i) == 0;
    }
    if ((kind < 1 || kind > 3) || field_at<std::uint32_t>(data, offsetof(ConnectRequest, flags)) != 0 || !reserved_zero) {
      expected = ErrorCode::kProtocolError;
    }
  }
  FUZZ_CHECK(request.code() == expected, "request of %zu bytes: code %s, expected %s", size,
             error_code_name(request.code()), error_code_name(expected));
  if (!request.ok()) {
    FUZZ_CHECK(!request.message().empty(), "a refused connect request must say why");
    return;
  }
  // Accepted: exactly the bytes sent, and only what the sidecar may act on.
  FUZZ_CHECK(std::memcmp(&*request, data, sizeof(ConnectRequest)) == 0, "parsed request differs from the bytes");
  FUZZ_CHECK(request->kind == static_cast<std::uint32_t>(ConnectKind::kAttach) ||
                 request->kind == static_cast<std::uint32_t>(ConnectKind::kObserve) ||
                 request->kind == static_cast<std::uint32_t>(ConnectKind::kReload),
             "kind %u", request->kind);
  FUZZ_CHECK(request->flags == 0, "flags %u", request->flags);
  for (std::uint64_t word : request->reserved) FUZZ_CHECK(word == 0, "reserved word %llu", (unsigned long long)word);
  FUZZ_CHECK(request->prefix.message_bytes == sizeof(ConnectRequest), "message_bytes %u", request->prefix.message_bytes);
}

void check_reply(const std::uint8_t* data, std::size_t size) {
  const Result<ConnectReply> reply = parse_connect_reply(std::span(reinterpret_cast<const std::byte*>(data), size));
  ErrorCode expected = expected_prefix_code(data, size, sizeof(ConnectReply));
  if (expected == ErrorCode::kOk &&
      (field_at<std::uint32_t>(data, offsetof(ConnectReply, outcome)) > 11 ||
       field_at<std::uint32_t>(data, offsetof(ConnectReply, message_length)) > kMessageBytes ||
       field_at<std::uint32_t>(data, offsetof(ConnectReply, fd_count)) > kMaxReplyFds)) {
    expected = ErrorCode::kProtocolError;
  }
  FUZZ_CHECK(reply.code() == expected, "reply of %zu bytes: code %s, expected %s", size, error_code_name(reply.code()),
             error_code_name(expected));
  if (!reply.ok()) {
    FUZZ_CHECK(!reply.message().empty(), "a refused reply must say why");
    return;
  }
  FUZZ_CHECK(std::memcmp(&*reply, data, sizeof(ConnectReply)) == 0, "parsed reply differs from the bytes");
  FUZZ_CHECK(reply->message_length <= kMessageBytes, "message_length %u", reply->message_length);
  FUZZ_CHECK(reply->fd_count <= kMaxReplyFds, "fd_count %u", reply->fd_count);
  // What the client builds from a reply: its message, and the error code of its outcome.
  const std::string message = reply_message(*reply);
  FUZZ_CHECK(message.size() == reply->message_length, "message of %zu bytes, length %u", message.size(),
             reply->message_length);
  FUZZ_CHECK(std::memcmp(message.data(), data + offsetof(ConnectReply, message), message.size()) == 0,
             "message differs from the bytes");
  const auto outcome = static_cast<ConnectOutcome>(reply->outcome);
  FUZZ_CHECK((error_code_for(outcome) == ErrorCode::kOk) == (outcome == ConnectOutcome::kAccepted),
             "outcome %u maps to %s", reply->outcome, error_code_name(error_code_for(outcome)));
}

// A reload request (sent only by the sidecar's user or root, but parsed before that is known):
// accepted exactly when well-formed, and its path is exactly the bytes sent.
void check_reload_request(const std::uint8_t* data, std::size_t size) {
  const Result<std::string> path = parse_reload_request(std::span(reinterpret_cast<const std::byte*>(data), size));
  ErrorCode expected = expected_prefix_code(data, size, sizeof(ReloadRequest));
  std::uint32_t length = 0;
  if (expected == ErrorCode::kOk) {
    length = field_at<std::uint32_t>(data, offsetof(ReloadRequest, path_length));
    if (length > kMaxReloadPathBytes || field_at<std::uint32_t>(data, offsetof(ReloadRequest, reserved)) != 0) {
      expected = ErrorCode::kProtocolError;
    } else if (std::memchr(data + offsetof(ReloadRequest, model_path), 0, length) != nullptr) {
      expected = ErrorCode::kInvalidArgument;
    }
  }
  FUZZ_CHECK(path.code() == expected, "reload request of %zu bytes: code %s, expected %s", size,
             error_code_name(path.code()), error_code_name(expected));
  if (!path.ok()) {
    FUZZ_CHECK(!path.message().empty(), "a refused reload request must say why");
    return;
  }
  FUZZ_CHECK(path->size() == length, "path of %zu bytes, length %u", path->size(), length);
  FUZZ_CHECK(std::memcmp(path->data(), data + offsetof(ReloadRequest, model_path), length) == 0,
             "path differs from the bytes");
}

// The sidecar's side: a reply carrying arbitrary text (its messages quote what a client sent)
// must come back through the client's parser as the same text, cut at kMessageBytes.
void check_reply_round_trip(const std::uint8_t* data, std::size_t size) {
  ConnectReply reply{};
  reply.prefix = make_prefix(sizeof(ConnectReply));
  reply.outcome = size % 12;
  reply.fd_count = static_cast<std::uint32_t>(size % (kMaxReplyFds + 1));
  const std::string text(reinterpret_cast<const char*>(data), size);
  set_reply_message(reply, text);
  const Result<ConnectReply> parsed =
      parse_connect_reply(std::span(reinterpret_cast<const std::byte*>(&reply), sizeof reply));
  FUZZ_CHECK(parsed.ok(), "the sidecar's own reply does not parse: %s", parsed.message().c_str());
  FUZZ_CHECK(reply_message(*parsed) == text.substr(0, kMessageBytes), "message changed on the way");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  check_request(data, size);
  check_reload_request(data, size);
  check_reply(data, size);
  check_reply_round_trip(data, size);
  return 0;
}
