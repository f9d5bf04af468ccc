// The latency rows of sidecar-bench: one client calling in a loop, one request at a time, through
// each transport (in-process, the sidecar spinning and blocking, the peers) and through the result
// cache. Every row's server is started once per model, then the rows are measured in blocks,
// round-robin, so that the machine's drift over the run hits every row alike.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "bench_support.hpp"
#include "peers.hpp"

namespace sidecar::bench {

// One row's way of making a request, its server (if any) started and connected to.
class LatencyProbe {
 public:
  explicit LatencyProbe(std::string row) : row_(std::move(row)) {}
  virtual ~LatencyProbe() = default;
  const std::string& row() const noexcept { return row_; }
  // One request, timed. Throws std::runtime_error when it fails.
  virtual double timed_call_us() = 0;
  // Around each block of this row's calls: by default its server runs only during its own blocks.
  virtual void begin_block();
  virtual void end_block();
  // The server process measured with the client; null for the in-process rows.
  virtual ServerChild* server() noexcept { return nullptr; }

 private:
  std::string row_;
};

// The same frozen model in this process, on the servers' CPUs: the floor.
std::unique_ptr<LatencyProbe> in_process_probe(const ModelCase& model);

struct SidecarSettings {
  std::string binary;
  std::chrono::microseconds spin{0};  // both sides' spin budget: long for "sidecar_spin", 0 for "sidecar_block"
  bool echo = false;                  // --echo: the model's signature answered with the inputs
  bool warm = true;                   // false: no --warmup-shape, so the first calls are cold
  std::vector<std::string> extra_args;
};
// Through a real sidecar, cache bypassed, inputs written in place and outputs read in place.
std::unique_ptr<LatencyProbe> sidecar_probe(const std::string& row_name, const ModelCase& model,
                                            const SidecarSettings& settings);
// Through a peer server: what a user would run instead of the sidecar.
std::unique_ptr<LatencyProbe> peer_probe(Peer peer, const ModelCase& model, bool echo, const PeerBinaries& binaries);

enum class CacheRow { kMiss, kHitInClient, kHitInSidecar };
// `spin`: both sides' spin budget, as the sidecar_spin row's.
std::unique_ptr<LatencyProbe> cache_probe(CacheRow kind, const ModelCase& model, const std::string& binary,
                                          std::chrono::microseconds spin);

// model.requests calls per probe in `blocks` blocks, round-robin, after model.requests / 10 (at
// most 1000) unmeasured calls each; percentiles over all the blocks of a row, and the CPU time its
// client and server spent per measured request. Each call waits for its slot when
// model.rate_per_client is set (pacing.hpp).
std::vector<Row> measure_interleaved(std::vector<std::unique_ptr<LatencyProbe>>& probes, const ModelCase& model,
                                     std::size_t blocks);

// What a probe's server spends per second while its client, connected, stops sending (after a
// busy spell): the row `row_name`, with idle_server_cpu_us_per_s.
Row measure_idle(const std::string& row_name, LatencyProbe& probe, const ModelCase& model);

// The pieces of a client-side hit on the model's input bytes: hash, compare, copy.
std::vector<Row> measure_hit_parts(const ModelCase& model);

}  // namespace sidecar::bench
