// Test support: a client that speaks the protocol by hand instead of through the client library,
// so that tests can write raw descriptors, scribble on what they were given, or misbehave on the
// socket as a hostile client would.
#pragma once

#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "sidecar/shared/channel_layout.hpp"
#include "sidecar/shared/clock.hpp"
#include "sidecar/shared/memfd.hpp"
#include "sidecar/shared/protocol.hpp"
#include "sidecar/shared/runtime_dir.hpp"
#include "sidecar/shared/status_layout.hpp"
#include "sidecar/shared/unix_socket.hpp"
#include "test_runtime_dir.hpp"

namespace sidecar::testing {

class RawClient {
 public:
  // Connects to sidecar `name` in the tests' runtime directory and attaches (or observes). Throws
  // with the sidecar's reason when it refuses.
  explicit RawClient(const std::string& name, ConnectKind kind = ConnectKind::kAttach, std::uint64_t arena = 0,
                     std::chrono::milliseconds timeout = std::chrono::milliseconds(10000)) {
    const std::string path = socket_path(test_runtime_dir(), name);
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (true) {
      socket_ = connect_socket(path);
      if (socket_ || std::chrono::steady_clock::now() >= deadline) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    if (!socket_) throw std::runtime_error("cannot connect to " + path);
    ConnectRequest request{};
    request.prefix = make_prefix(sizeof request);
    request.kind = static_cast<std::uint32_t>(kind);
    request.arena_bytes = arena;
    if (!send_message(socket_.get(), &request, sizeof request).ok()) throw std::runtime_error("send failed");
    while (true) {
      alignas(8) std::byte buffer[kMaxHandshakeBytes];
      Result<ReceivedMessage> received = receive_message(socket_.get(), buffer, sizeof buffer, kMaxReplyFds);
      if (!received.ok() || received->kind != ReceivedMessage::Kind::kMessage) {
        throw std::runtime_error("no reply from the sidecar");
      }
      Result<ConnectReply> reply = parse_connect_reply(std::span<const std::byte>(buffer, received->bytes));
      if (!reply.ok()) throw std::runtime_error(reply.message());
      if (reply->outcome == static_cast<std::uint32_t>(ConnectOutcome::kWarmingUp)) continue;
      if (reply->outcome != static_cast<std::uint32_t>(ConnectOutcome::kAccepted)) {
        throw std::runtime_error("refused: " + reply_message(*reply));
      }
      reply_ = *reply;
      fds_ = std::move(received->fds);
      break;
    }
    Result<SharedMapping> status =
        map_received(fds_[kStatusPageFd].get(), reply_.status_page_bytes, kReadOnlySeals, false, "status");
    if (!status.ok()) throw std::runtime_error(status.message());
    status_ = std::move(*status);
    if (kind == ConnectKind::kObserve) return;
    Result<SharedMapping> channel = map_received(fds_[kChannelFd].get(), reply_.channel_bytes, kSizeSeals, true, "channel");
    if (!channel.ok()) throw std::runtime_error(channel.message());
    channel_ = std::move(*channel);
  }

  static UniqueFd connect_socket(const std::string& path) {
    UniqueFd fd(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
    const Result<sockaddr_un> address = unix_address(path);
    if (!fd || !address.ok()) return {};
    if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&*address), sizeof(sockaddr_un)) != 0) return {};
    return fd;
  }

  ChannelHeader* channel() const { return channel_.as<ChannelHeader>(); }
  std::uint8_t* arena() const { return channel_.base() + reply_.arena_offset; }
  std::uint64_t arena_bytes() const { return reply_.arena_bytes; }
  const StatusPage& status() const { return *status_.as<const StatusPage>(); }
  const ConnectReply& reply() const { return reply_; }
  const SharedMapping& channel_mapping() const { return channel_; }
  const SharedMapping& status_mapping() const { return status_; }
  // The fds the sidecar sent, in ReplyFd order.
  std::vector<UniqueFd>& fds() { return fds_; }
  int socket() const { return socket_.get(); }
  void hang_up() { socket_.reset(); }

  // Posts `request` as the library would, waking the sidecar if it sleeps.
  void post(const RequestDescriptor& request) {
    RequestRing::Cell& cell = channel()->requests.cells[posted_ % kRingCapacity];
    cell.slot = request;
    cell.fills.store(posted_ / kRingCapacity + 1, std::memory_order_seq_cst);
    ++posted_;
    if (status().leader_sleeping.load()) {
      const std::uint64_t one = 1;
      [[maybe_unused]] const ssize_t written = ::write(fds_[kRequestEventFd].get(), &one, sizeof one);
    }
  }

  // The next response, or status kInternal with request_id 0 after `timeout`.
  ResponseDescriptor await(std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      const std::uint64_t head = channel()->responses.head.load();
      const ResponseRing::Cell& cell = channel()->responses.cells[head % kRingCapacity];
      if (cell.fills.load(std::memory_order_acquire) == head / kRingCapacity + 1) {
        ResponseDescriptor response = cell.slot;
        channel()->responses.head.store(head + 1, std::memory_order_release);
        return response;
      }
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    ResponseDescriptor none{};
    none.status = static_cast<std::uint32_t>(Status::kInternal);
    return none;
  }

 private:
  UniqueFd socket_;
  ConnectReply reply_{};
  std::vector<UniqueFd> fds_;
  SharedMapping status_;
  SharedMapping channel_;
  std::uint64_t posted_ = 0;  // the producer's own index, as the library keeps it
};

// A well-formed request for the tiny model (one 1x64 float32 input at `input_offset` in the arena),
// its outputs at [output_offset, +output_capacity): what tests then spoil field by field.
inline RequestDescriptor tiny_request(std::uint64_t id, std::uint64_t input_offset, std::uint64_t output_offset = 4096,
                                      std::uint64_t output_capacity = 4096) {
  RequestDescriptor request{};
  request.request_id = id;
  request.input_count = 1;
  request.inputs[0].shape.dtype = static_cast<std::uint8_t>(DType::kFloat32);
  request.inputs[0].shape.rank = 2;
  request.inputs[0].shape.dims[0] = 1;
  request.inputs[0].shape.dims[1] = 64;
  request.inputs[0].offset = input_offset;
  request.inputs[0].bytes = 256;
  request.output_offset = output_offset;
  request.output_capacity = output_capacity;
  return request;
}

}  // namespace sidecar::testing
