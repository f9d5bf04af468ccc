// The daemon's settings and their parsing from the command line and the config file.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "shape_text.hpp"
#include "sidecar/shared/signature.hpp"
#include "sidecar/shared/status_layout.hpp"

namespace sidecar {

inline constexpr std::uint32_t kMaxClients = 1024;
inline constexpr std::uint64_t kMaxArenaBytes = 16ull << 30;

struct SidecarOptions {
  std::string model_path;
  // Serve no model: answer every request with its inputs, to measure the transport alone.
  bool echo = false;
  std::string name;
  // Where NAME.sock and NAME.lock go; empty: resolved as runtime_dir.hpp says.
  std::string runtime_dir;
  // Who may connect beyond what the socket's mode allows: users and groups by name or number.
  // Both empty: whoever the socket's mode lets connect. The sidecar's own user always may.
  std::vector<std::string> allow_users;
  std::vector<std::string> allow_groups;
  unsigned socket_mode = 0660;
  // What requests may carry (ranges of sizes); empty: the warm-up shapes, or any shape without them.
  std::vector<AcceptedSignature> accepted_signatures;
  // Fixed shapes every worker is warmed up on, each within an accepted signature.
  std::vector<InputSignature> warmup_signatures;
  int warmup_iterations = 10;
  // How long an idle worker polls the rings before it sleeps: waking from a sleep costs a few hundred
  // times a spin round trip (docs/latency.md).
  std::uint32_t spin_us = 50;
  // A sleeping client is woken when its request is taken, not when it is answered, if its previous
  // request was answered within this long: the wake-up then overlaps the forward. 0: never.
  std::uint32_t wake_ahead_us = 20;
  int workers = 0;           // 0: the CPUs this process may run on
  int intra_op_threads = 1;  // LibTorch threads inside one forward
  int inter_op_threads = 1;
  std::uint32_t max_clients = 64;
  // Dynamic batching: requests with a declared shape whose leading dim is 1 (or up to max_batch
  // rows of it) are gathered for up to max_queue_delay_us and run as one forward. 1: off.
  std::uint32_t max_batch = 1;
  std::uint32_t max_queue_delay_us = 0;  // 0: batch what is queued already, never wait (Triton's default too)
  // Tensor space per client: what a client gets unless it asks for more, and the most it may ask for.
  std::uint64_t arena_bytes = 8ull << 20;
  std::uint64_t max_arena_bytes = 64ull << 20;
  // The most memory all clients' channels may commit together; 0: --max-clients channels of
  // --arena-bytes each.
  std::uint64_t channel_memory = 0;
  // The result cache's whole size, metadata included; 0 turns it off. Results of a model that is
  // not deterministic (dropout left on, sampling) must not be cached: run such a model with 0.
  std::uint64_t cache_bytes = 64ull << 20;
  std::uint64_t cache_max_entry_bytes = 0;  // 0: an eighth of cache_bytes
  CacheScope cache_scope = CacheScope::kShared;
  bool freeze = true;
  bool optimize_for_inference = true;
  std::string log_level = "info";
  // The metrics in Prometheus's text format, rewritten every metrics_interval_ms; empty: none.
  std::string metrics_file;
  std::uint32_t metrics_interval_ms = 5000;
};

// Parses "4096", "64K", "8M", "1G" (binary multiples). Throws std::invalid_argument.
std::uint64_t parse_byte_size(const std::string& text);

// Number of CPUs in this process's affinity mask.
int usable_cpu_count();

// "inference-sidecar 0.1.0 (protocol version 4)".
std::string version_text();

// The settings from the flags and the --config file they may name (flags win). Without options,
// main prints `output` (help, version, --print-config) to stdout and `error` (one line) to stderr,
// and exits with `exit_code`: 0, or 1 for a bad flag, config file or setting.
struct ParsedOptions {
  std::optional<SidecarOptions> options;
  int exit_code = 0;
  std::string output;
  std::string error;
};
ParsedOptions parse_command_line(int argc, char** argv);

}  // namespace sidecar
