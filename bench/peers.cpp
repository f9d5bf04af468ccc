#include "peers.hpp"

#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <stdexcept>
#include <thread>

#include "sidecar/shared/memfd.hpp"
#include "sidecar/shared/unix_socket.hpp"

namespace sidecar::bench {
namespace {

using Clock = std::chrono::steady_clock;

// A server is up when `listening` says so; gone or silent for minutes (a demo model loads in
// seconds), it is not coming.
template <typename Listening>
void wait_until_listening(ServerChild& child, const std::string& what, Listening&& listening) {
  const auto give_up = Clock::now() + std::chrono::minutes(5);
  while (!listening()) {
    if (!child.running() || Clock::now() > give_up) throw std::runtime_error(what + " never listened\n" + child.log());
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

UniqueFd connect_unix(const std::string& path) {
  const Result<sockaddr_un> address = unix_address(path);
  if (!address.ok()) throw std::runtime_error(address.message());
  UniqueFd socket(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (::connect(socket.get(), reinterpret_cast<const sockaddr*>(&*address), sizeof(sockaddr_un)) != 0) return {};
  return socket;
}

// Requests to sidecar-socket-server: the inputs sent as one length-prefixed block with one writev,
// the outputs read back the same way.
class UnixSocketConnection final : public PeerConnection {
 public:
  explicit UnixSocketConnection(const std::string& path) : socket_(connect_unix(path)) {
    if (!socket_) throw std::runtime_error("unix_socket: cannot connect to " + path);
  }

  void call(const ClientInputs& inputs) override {
    std::uint64_t length = 0;
    std::vector<iovec> parts{{&length, sizeof length}};
    for (const auto& values : inputs.values) {
      parts.push_back({const_cast<float*>(values.data()), values.size() * sizeof(float)});
      length += values.size() * sizeof(float);
    }
    // The whole request in one call when the kernel takes it, as a careful user would write it.
    std::size_t first = 0;
    for (std::size_t left = sizeof length + length; left != 0;) {
      const ssize_t wrote = ::writev(socket_.get(), parts.data() + first, static_cast<int>(parts.size() - first));
      if (wrote <= 0) throw std::runtime_error("unix_socket: write failed");
      left -= static_cast<std::size_t>(wrote);
      auto done = static_cast<std::size_t>(wrote);
      while (first < parts.size() && done >= parts[first].iov_len) done -= parts[first++].iov_len;
      if (first < parts.size()) {
        parts[first].iov_base = static_cast<std::uint8_t*>(parts[first].iov_base) + done;
        parts[first].iov_len -= done;
      }
    }
    std::size_t have = 0;
    std::uint64_t answer = ~0ull;
    while (have < sizeof answer || have < sizeof answer + answer) {
      if (have == reply_.size()) reply_.resize(reply_.size() * 2);
      const ssize_t got = ::read(socket_.get(), reply_.data() + have, reply_.size() - have);
      if (got <= 0) throw std::runtime_error("unix_socket: read failed");
      have += static_cast<std::size_t>(got);
      if (have >= sizeof answer) std::memcpy(&answer, reply_.data(), sizeof answer);
    }
    if (answer < sizeof(float)) throw std::runtime_error("unix_socket: the model failed");
  }

 private:
  UniqueFd socket_;
  std::vector<std::uint8_t> reply_ = std::vector<std::uint8_t>(1 << 20);
};

}  // namespace

std::string peer_row_name(Peer peer, bool echo) {
  const char* base = peer == Peer::kUnixSocket ? "unix_socket" : peer == Peer::kGrpcTcp ? "grpc_tcp" : "grpc_unix";
  return std::string(base) + (echo ? "_echo" : "");
}

PeerServer::PeerServer(Peer peer, const ModelCase& model, bool echo, const PeerBinaries& binaries) : peer_(peer) {
  static int started = 0;
  const std::string path =
      bench_runtime_dir() + "/" + peer_row_name(peer, echo) + "-" + model.name + "-" + std::to_string(started++) + ".sock";
  std::vector<std::string> args{"--shape", signature_text(model.signature)};
  if (echo) {
    args.push_back("--echo");
  } else {
    args.insert(args.end(), {"--model", model.path});
  }
  if (peer == Peer::kUnixSocket) {
    args.insert(args.end(), {"--socket", path});
    child_ = std::make_unique<ServerChild>(binaries.socket_server, args);
    wait_until_listening(*child_, "sidecar-socket-server", [&] { return static_cast<bool>(connect_unix(path)); });
    target_ = path;
    return;
  }
  if (!grpc_peer_built()) throw std::runtime_error("sidecar-bench was built without gRPC: no " + peer_row_name(peer, echo));
  args.insert(args.end(), {"--tcp", "127.0.0.1:0", "--unix", path});
  child_ = std::make_unique<ServerChild>(binaries.grpc_server, args);
  const std::string listening = "listening on ";
  wait_until_listening(*child_, "sidecar-grpc-server", [&] { return child_->log().find(listening) != std::string::npos; });
  if (peer == Peer::kGrpcUnix) {
    target_ = "unix:" + path;
  } else {
    const std::string log = child_->log();
    const std::size_t at = log.find(listening) + listening.size();
    target_ = log.substr(at, log.find('\n', at) - at);
  }
}

std::unique_ptr<PeerConnection> connect_peer(Peer peer, const std::string& target) {
  if (peer == Peer::kUnixSocket) return std::make_unique<UnixSocketConnection>(target);
  return connect_grpc(target);
}

}  // namespace sidecar::bench
