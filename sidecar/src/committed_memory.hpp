// Making the memory the sidecar shares: a memfd whose every page is allocated before anyone maps
// it, so that a lack of memory is an error at creation, in the sidecar, with a reason, and never a
// SIGBUS at some later write in whichever process touched the page first.
#pragma once

#include <cstdint>
#include <optional>

#include "sidecar/shared/error.hpp"
#include "sidecar/shared/memfd.hpp"

namespace sidecar {

struct OwnedMemory {
  UniqueFd fd;
  SharedMapping mapping;  // read-write, made before any seal
};

// A memfd of `bytes` with its memory committed, mapped read-write and faulted in, not yet sealed.
// `name` shows in /proc/PID/maps and fdinfo only. kOutOfMemory, with the reason, when the memory
// is not there: more than the host has available or the service's memory limit leaves (checked
// first, because the kernel, asked to commit more than it has, picks a process to kill rather
// than fail the call), or the kernel refuses the commit.
Result<OwnedMemory> create_committed_memory(const char* name, std::uint64_t bytes);

Done add_seals(int fd, unsigned seals);

// Bytes a commit can take now: MemAvailable, lowered to what the cgroup v2 memory limits of this
// process (and of the cgroups above it) leave. Empty when neither can be read.
std::optional<std::uint64_t> available_memory_bytes();

}  // namespace sidecar
