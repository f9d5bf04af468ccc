// Built in place of grpc_client.cpp when gRPC is not found: the gRPC rows are left out.
#include <stdexcept>

#include "peers.hpp"

namespace sidecar::bench {

bool grpc_peer_built() { return false; }

std::unique_ptr<PeerConnection> connect_grpc(const std::string& target) {
  throw std::runtime_error("sidecar-bench was built without gRPC: cannot reach " + target);
}

}  // namespace sidecar::bench
