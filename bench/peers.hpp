// The peers the sidecar is measured against, as a user would build them: a plain Unix-socket server
// (sidecar-socket-server, length-prefixed bytes) and a synchronous gRPC server (sidecar-grpc-server)
// reached over TCP loopback or a Unix socket. A server serves the model or, with echo, answers with
// the inputs; any number of clients may connect to it.
#pragma once

#include <memory>
#include <string>

#include "bench_support.hpp"

namespace sidecar::bench {

enum class Peer { kUnixSocket, kGrpcTcp, kGrpcUnix };

// "unix_socket", "grpc_tcp", "grpc_unix", with "_echo" appended for an echo server.
std::string peer_row_name(Peer peer, bool echo);
// False when sidecar-bench was built without gRPC (libgrpc++-dev, protobuf-compiler-grpc).
bool grpc_peer_built();

struct PeerBinaries {
  std::string socket_server;
  std::string grpc_server;
};

// One peer server process for one row, listening once constructed.
class PeerServer {
 public:
  // Starts it on the model (or, with `echo`, on the model's signature alone) and waits until it
  // listens; throws std::runtime_error with the server's log when it does not.
  PeerServer(Peer peer, const ModelCase& model, bool echo, const PeerBinaries& binaries);
  Peer peer() const noexcept { return peer_; }
  // Where clients connect: a socket path, or a gRPC target ("127.0.0.1:PORT", "unix:PATH").
  const std::string& target() const noexcept { return target_; }
  ServerChild& child() noexcept { return *child_; }

 private:
  Peer peer_;
  std::string target_;
  std::unique_ptr<ServerChild> child_;
};

// One client's connection to a peer.
class PeerConnection {
 public:
  virtual ~PeerConnection() = default;
  // Sends the inputs and reads the whole answer. Throws std::runtime_error when it fails.
  virtual void call(const ClientInputs& inputs) = 0;
};

std::unique_ptr<PeerConnection> connect_peer(Peer peer, const std::string& target);
// In grpc_client.cpp when gRPC is built, else refusing.
std::unique_ptr<PeerConnection> connect_grpc(const std::string& target);

}  // namespace sidecar::bench
