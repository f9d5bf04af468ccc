// Where a sidecar's socket is, from its name alone: RUNTIME_DIR/NAME.sock, beside NAME.lock.
//
// The sidecar picks its runtime directory as: --runtime-dir; else $INFERENCE_SIDECAR_RUNTIME_DIR;
// else $RUNTIME_DIRECTORY (systemd's RuntimeDirectory=); else /run/inference-sidecar when it may
// write there; else $XDG_RUNTIME_DIR/inference-sidecar. A client looks, in order, in the directory
// it was given, $INFERENCE_SIDECAR_RUNTIME_DIR, /run/inference-sidecar and
// $XDG_RUNTIME_DIR/inference-sidecar, and takes the first that holds NAME.sock. Only root (or
// systemd for the service user) can create /run/inference-sidecar, and only its user can create
// under $XDG_RUNTIME_DIR, so no other user can put a socket where a client looks. There are no
// names in /dev/shm and no abstract sockets, which anyone could squat.
#pragma once

#include <cstdlib>
#include <string>
#include <vector>

namespace sidecar {

inline constexpr const char* kSystemRuntimeDir = "/run/inference-sidecar";
inline constexpr const char* kRuntimeDirEnvironment = "INFERENCE_SIDECAR_RUNTIME_DIR";
inline constexpr const char* kRuntimeSubdirectory = "inference-sidecar";

// Letters, digits, '-', '_', '.', 1..64 characters, not starting with '.': safe as a file name and
// as a systemd instance name.
inline bool is_valid_instance_name(const std::string& name) noexcept {
  if (name.empty() || name.size() > 64 || name[0] == '.') return false;
  for (char c : name) {
    const bool ok =
        (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.';
    if (!ok) return false;
  }
  return true;
}

inline std::string socket_path(const std::string& runtime_dir, const std::string& name) {
  return runtime_dir + "/" + name + ".sock";
}

inline std::string lock_path(const std::string& runtime_dir, const std::string& name) {
  return runtime_dir + "/" + name + ".lock";
}

inline std::string environment_or_empty(const char* variable) {
  const char* value = std::getenv(variable);
  return value != nullptr ? std::string(value) : std::string();
}

// The directories a client looks in, in order.
inline std::vector<std::string> client_runtime_dirs(const std::string& given) {
  if (!given.empty()) return {given};
  if (std::string configured = environment_or_empty(kRuntimeDirEnvironment); !configured.empty()) return {configured};
  std::vector<std::string> dirs{kSystemRuntimeDir};
  if (std::string xdg = environment_or_empty("XDG_RUNTIME_DIR"); !xdg.empty()) {
    dirs.push_back(xdg + "/" + kRuntimeSubdirectory);
  }
  return dirs;
}

}  // namespace sidecar
