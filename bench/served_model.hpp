// What the peer servers (sidecar-socket-server, sidecar-grpc-server) share: the flags that name what
// they serve, loading it as the sidecar does, and their one-line errors.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <memory>
#include <string>

#include "model_runner.hpp"

namespace sidecar::bench {

struct ServedModelFlags {
  std::string model_path;
  std::string shape;
  bool echo = false;
};
void add_served_model_flags(CLI::App& app, ServedModelFlags& flags);

// The model frozen, optimized and warmed on the calling thread with the sidecar's thread settings,
// or with --echo a runner answering with the inputs. Throws std::runtime_error.
std::unique_ptr<ModelRunner> load_served_model(const ServedModelFlags& flags, const InputSignature& signature);

// Runs `serve` on the parsed signature; a missing --model/--echo or a thrown error becomes one line
// on stderr and exit code 1.
int run_peer_server(const char* program, const ServedModelFlags& flags,
                    const std::function<int(const InputSignature&)>& serve);

}  // namespace sidecar::bench
