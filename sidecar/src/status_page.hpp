// The sidecar's side of its status page (shared/.../status_layout.hpp): created and filled in
// before anyone sees it, then sealed so that every other mapping of it is read-only.
#pragma once

#include <string>

#include "sidecar/shared/error.hpp"
#include "committed_memory.hpp"
#include "sidecar/shared/memfd.hpp"
#include "sidecar/shared/status_layout.hpp"

namespace sidecar {

struct StatusIdentity {
  std::uint64_t start_generation = 0;
  std::uint32_t max_clients = 0;
  CacheScope cache_scope = CacheScope::kShared;
  std::uint64_t default_arena_bytes = 0;
  std::uint64_t max_arena_bytes = 0;
  std::uint64_t cache_bytes = 0;
  std::string model_path;
  std::uint32_t input_count = 0;
};

class StatusPageWriter {
 public:
  // A sealed page in state "starting" with this identity, this process's pid and uid and the time.
  static Result<StatusPageWriter> create(const StatusIdentity& identity);

  StatusPage& page() const noexcept { return *memory_.mapping.as<StatusPage>(); }
  int fd() const noexcept { return memory_.fd.get(); }
  std::uint64_t bytes() const noexcept { return memory_.mapping.size(); }
  void set_state(SidecarState state) noexcept;

 private:
  StatusPageWriter() = default;
  OwnedMemory memory_;
};

}  // namespace sidecar
