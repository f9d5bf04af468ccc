// The handshake's messages, parsed as untrusted bytes: every malformed form refused by name, and a
// version mismatch naming both versions from the 16 bytes every version starts with.
#include "sidecar/shared/protocol.hpp"

#include <gtest/gtest.h>

#include <vector>

namespace sidecar {
namespace {

std::vector<std::byte> bytes_of(const void* data, std::size_t size) {
  const auto* begin = static_cast<const std::byte*>(data);
  return std::vector<std::byte>(begin, begin + size);
}

ConnectRequest valid_request() {
  ConnectRequest request{};
  request.prefix = make_prefix(sizeof request);
  request.kind = static_cast<std::uint32_t>(ConnectKind::kAttach);
  request.arena_bytes = 1 << 20;
  return request;
}

TEST(Protocol, AValidConnectRequestParses) {
  const ConnectRequest request = valid_request();
  auto parsed = parse_connect_request(bytes_of(&request, sizeof request));
  ASSERT_TRUE(parsed.ok()) << parsed.message();
  EXPECT_EQ(parsed->arena_bytes, 1u << 20);
}

TEST(Protocol, MalformedConnectRequestsAreRefusedByName) {
  struct Case {
    const char* expect;
    std::vector<std::byte> bytes;
  };
  std::vector<Case> cases;
  const ConnectRequest good = valid_request();
  cases.push_back({"shorter than the 16-byte prefix", bytes_of(&good, 15)});
  ConnectRequest bad_magic = good;
  bad_magic.prefix.magic ^= 1;
  cases.push_back({"does not start with the inference-sidecar magic", bytes_of(&bad_magic, sizeof bad_magic)});
  cases.push_back({"is 40 bytes (it says 64)", bytes_of(&good, 40)});
  ConnectRequest kind = good;
  kind.kind = 7;
  cases.push_back({"unknown connection kind 7", bytes_of(&kind, sizeof kind)});
  ConnectRequest flags = good;
  flags.flags = 2;
  cases.push_back({"unknown connect flags 2", bytes_of(&flags, sizeof flags)});
  ConnectRequest reserved = good;
  reserved.reserved[3] = 9;
  cases.push_back({"reserved fields of the connect request are not zero", bytes_of(&reserved, sizeof reserved)});
  for (const Case& item : cases) {
    auto parsed = parse_connect_request(item.bytes);
    ASSERT_FALSE(parsed.ok()) << item.expect;
    EXPECT_EQ(parsed.code(), ErrorCode::kProtocolError) << item.expect;
    EXPECT_NE(parsed.message().find(item.expect), std::string::npos) << parsed.message();
  }
}

// Whatever a later version's message looks like after its prefix, both versions are named.
TEST(Protocol, AnotherVersionIsNamedWhateverItsMessageLooksLike) {
  std::vector<std::byte> future(4000, std::byte{0x5a});
  const HandshakePrefix prefix{kHandshakeMagic, kProtocolVersion + 3, 4000};
  std::memcpy(future.data(), &prefix, sizeof prefix);
  auto request = parse_connect_request(future);
  EXPECT_EQ(request.code(), ErrorCode::kVersionMismatch);
  EXPECT_EQ(request.message(), "this client speaks protocol version " + std::to_string(kProtocolVersion + 3) +
                                   ", the sidecar speaks version " + std::to_string(kProtocolVersion) +
                                   "; upgrade the older side");
  auto reply = parse_connect_reply(std::span<const std::byte>(future.data(), sizeof prefix));
  EXPECT_EQ(reply.code(), ErrorCode::kVersionMismatch);
  EXPECT_NE(reply.message().find("the sidecar speaks protocol version " + std::to_string(kProtocolVersion + 3)),
            std::string::npos);
}

TEST(Protocol, RepliesWithImpossibleCountsAreRefused) {
  ConnectReply reply{};
  reply.prefix = make_prefix(sizeof reply);
  reply.outcome = static_cast<std::uint32_t>(ConnectOutcome::kAccepted);
  reply.fd_count = 4;
  set_reply_message(reply, "fine");
  ASSERT_TRUE(parse_connect_reply(bytes_of(&reply, sizeof reply)).ok());
  EXPECT_EQ(reply_message(reply), "fine");
  ConnectReply outcome = reply;
  outcome.outcome = 99;
  EXPECT_EQ(parse_connect_reply(bytes_of(&outcome, sizeof outcome)).code(), ErrorCode::kProtocolError);
  ConnectReply fds = reply;
  fds.fd_count = kMaxReplyFds + 1;
  EXPECT_EQ(parse_connect_reply(bytes_of(&fds, sizeof fds)).code(), ErrorCode::kProtocolError);
  ConnectReply message = reply;
  message.message_length = kMessageBytes + 1;
  EXPECT_EQ(parse_connect_reply(bytes_of(&message, sizeof message)).code(), ErrorCode::kProtocolError);
}

TEST(Protocol, EveryOutcomeHasTheErrorCodeACallerActsOn) {
  EXPECT_EQ(error_code_for(ConnectOutcome::kNotAllowed), ErrorCode::kPermissionDenied);
  EXPECT_EQ(error_code_for(ConnectOutcome::kVersionMismatch), ErrorCode::kVersionMismatch);
  EXPECT_EQ(error_code_for(ConnectOutcome::kOutOfMemory), ErrorCode::kOutOfMemory);
  EXPECT_EQ(error_code_for(ConnectOutcome::kTooManyClients), ErrorCode::kTooManyClients);
  EXPECT_EQ(error_code_for(ConnectOutcome::kWarmingUp), ErrorCode::kNotReady);
  EXPECT_EQ(error_code_for(ConnectOutcome::kTryAgain), ErrorCode::kBusy);
  const std::string long_message(kMessageBytes + 50, 'x');
  ConnectReply reply{};
  set_reply_message(reply, long_message);
  EXPECT_EQ(reply_message(reply).size(), kMessageBytes);
}

}  // namespace
}  // namespace sidecar
