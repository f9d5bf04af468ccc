// The latency rows of sidecar-bench: one client calling in a loop, one request at a time, through
// each transport (in-process, the sidecar spinning and blocking, a plain Unix-socket server) and
// through the result cache.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "bench_support.hpp"

namespace sidecar::bench {

// The same frozen model in this process: the floor.
Row measure_in_process(const ModelCase& model);
// Through a real sidecar, cache bypassed, inputs written in place and outputs read in place.
// `spin` is both sides' spin budget: long for "sidecar_spin", 0 for "sidecar_block".
Row measure_sidecar(const std::string& row_name, const ModelCase& model, const std::string& binary,
                    std::chrono::microseconds spin, const std::vector<std::string>& extra_args);
// A sidecar as measure_sidecar's, with a connected client that stops sending: its CPU per second.
Row measure_sidecar_idle(const ModelCase& model, const std::string& binary, std::chrono::microseconds spin,
                         const std::vector<std::string>& extra_args);
// Through sidecar-socket-server: what a user would write instead of the sidecar.
Row measure_unix_socket(const ModelCase& model, const std::string& server_binary);

enum class CacheRow { kMiss, kHitInClient, kHitInSidecar };
Row measure_cache(CacheRow kind, const ModelCase& model, const std::string& binary);
// The pieces of a client-side hit on the model's input bytes: hash, compare, copy.
std::vector<Row> measure_hit_parts(const ModelCase& model);

}  // namespace sidecar::bench
