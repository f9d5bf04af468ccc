#include "committed_memory.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <string>

namespace sidecar {
namespace {

std::optional<std::uint64_t> read_number(const std::string& path) {
  std::ifstream file(path);
  std::string text;
  if (!(file >> text) || text == "max") return std::nullopt;
  try {
    return std::stoull(text);
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

std::optional<std::uint64_t> host_available_bytes() {
  std::ifstream meminfo("/proc/meminfo");
  std::string key;
  std::uint64_t kibibytes = 0;
  std::string unit;
  while (meminfo >> key >> kibibytes >> unit) {
    if (key == "MemAvailable:") return kibibytes * 1024;
  }
  return std::nullopt;
}

// The smallest room left under a memory limit on the way from this process's cgroup to the root:
// cgroup v2 (memory.max, memory.current) or the v1 memory controller (memory.limit_in_bytes,
// memory.usage_in_bytes), whichever this host mounts.
std::optional<std::uint64_t> cgroup_available_bytes() {
  std::ifstream membership("/proc/self/cgroup");
  std::string line;
  std::string root;
  std::string path;
  const char* limit_file = nullptr;
  const char* usage_file = nullptr;
  while (std::getline(membership, line)) {
    const auto first = line.find(':');
    const auto second = line.find(':', first + 1);
    if (first == std::string::npos || second == std::string::npos) continue;
    const std::string controllers = "," + line.substr(first + 1, second - first - 1) + ",";
    if (controllers.find(",memory,") != std::string::npos) {
      root = "/sys/fs/cgroup/memory";
      path = line.substr(second + 1);
      limit_file = "/memory.limit_in_bytes";
      usage_file = "/memory.usage_in_bytes";
      break;
    }
    if (line.rfind("0::", 0) == 0 && ::access("/sys/fs/cgroup/cgroup.controllers", R_OK) == 0) {
      root = "/sys/fs/cgroup";
      path = line.substr(3);
      limit_file = "/memory.max";
      usage_file = "/memory.current";
    }
  }
  if (limit_file == nullptr || path.empty()) return std::nullopt;
  std::optional<std::uint64_t> smallest;
  while (true) {
    const std::string dir = root + (path == "/" ? std::string() : path);
    const auto limit = read_number(dir + limit_file);
    const auto usage = read_number(dir + usage_file);
    // v1 says "no limit" with a number near 2^63.
    if (limit && usage && *limit < (1ull << 62)) {
      const std::uint64_t room = *limit > *usage ? *limit - *usage : 0;
      if (!smallest || room < *smallest) smallest = room;
    }
    if (path == "/") break;
    const auto slash = path.rfind('/');
    path = slash == 0 || slash == std::string::npos ? "/" : path.substr(0, slash);
  }
  return smallest;
}

}  // namespace

std::optional<std::uint64_t> available_memory_bytes() {
  std::optional<std::uint64_t> host = host_available_bytes();
  std::optional<std::uint64_t> cgroup = cgroup_available_bytes();
  if (host && cgroup) return std::min(*host, *cgroup);
  return host ? host : cgroup;
}

Result<OwnedMemory> create_committed_memory(const char* name, std::uint64_t bytes) {
  if (const auto available = available_memory_bytes(); available && bytes > *available) {
    return Error{ErrorCode::kOutOfMemory, "cannot commit " + std::to_string(bytes) + " bytes for " + name +
                                              ": only " + std::to_string(*available) +
                                              " bytes of memory are available (the host's, within this service's "
                                              "memory limit)"};
  }
  OwnedMemory memory;
  memory.fd.reset(::memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (!memory.fd) return Error{ErrorCode::kOutOfMemory, std::string("memfd_create failed: ") + errno_text(errno)};
  if (::ftruncate(memory.fd.get(), static_cast<off_t>(bytes)) != 0) {
    return Error{ErrorCode::kOutOfMemory,
                 "cannot size " + std::string(name) + " to " + std::to_string(bytes) + " bytes: " + errno_text(errno)};
  }
  // Allocates every page now: a memfd's pages are otherwise allocated at first touch, where a lack
  // of memory is a SIGBUS in whichever process touched it.
  if (::fallocate(memory.fd.get(), 0, 0, static_cast<off_t>(bytes)) != 0) {
    const int error = errno;
    return Error{ErrorCode::kOutOfMemory,
                 "cannot commit " + std::to_string(bytes) + " bytes for " + std::string(name) + ": " + errno_text(error)};
  }
  void* address = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, memory.fd.get(), 0);
  if (address == MAP_FAILED) {
    return Error{ErrorCode::kOutOfMemory, "cannot map " + std::string(name) + ": " + errno_text(errno)};
  }
  memory.mapping = SharedMapping(address, bytes);
  // Mapped writable now, so that the first write to each page is not a page fault on a hot path.
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23  // Linux 5.14
#endif
  if (::madvise(address, bytes, MADV_POPULATE_WRITE) != 0) {
    const auto page = static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
    for (std::uint64_t offset = 0; offset < bytes; offset += page) {
      static_cast<volatile std::uint8_t*>(address)[offset] = 0;
    }
  }
  return memory;
}

Done add_seals(int fd, unsigned seals) {
  if (::fcntl(fd, F_ADD_SEALS, seals) != 0) {
    return {ErrorCode::kProtocolError, "cannot seal a memfd: " + errno_text(errno)};
  }
  return {};
}

}  // namespace sidecar
