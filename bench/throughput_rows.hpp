// The throughput rows of sidecar-bench: many closed-loop client processes against one sidecar,
// batching off and on, or against one peer server.
#pragma once

#include <string>
#include <vector>

#include "bench_support.hpp"
#include "peers.hpp"

namespace sidecar::bench {

struct ThroughputSettings {
  std::uint32_t max_batch = 8;
  std::uint32_t batch_delay_us = 0;
  double seconds = 3.0;
  std::vector<std::string> on_args;   // further sidecar flags for the batching_on rows
  std::vector<std::string> off_args;  // and for the batching_off rows
};

Row measure_throughput(const ModelCase& model, const std::string& binary, std::uint32_t clients, bool batching,
                       const ThroughputSettings& settings);
// The same closed loop against a peer server of the model (rows unix_socket, grpc_tcp, grpc_unix).
Row measure_peer_throughput(const ModelCase& model, Peer peer, const PeerBinaries& binaries, std::uint32_t clients,
                            double seconds);
void print_throughput(const std::vector<Row>& rows);

}  // namespace sidecar::bench
