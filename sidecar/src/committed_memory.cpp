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

// The smallest room left under a memory.max on the way from this process's cgroup to the root.
std::optional<std::uint64_t> cgroup_available_bytes() {
  std::ifstream membership("/proc/self/cgroup");
  std::string line;
  std::string path;
  while (std::getline(membership, line)) {
    if (line.rfind("0::", 0) == 0) path = line.substr(3);  // cgroup v2
  }
  if (path.empty()) return std::nullopt;
  std::optional<std::uint64_t> smallest;
  while (true) {
    const std::string dir = "/sys/fs/cgroup" + (path == "/" ? std::string() : path);
    const auto limit = read_number(dir + "/memory.max");
    const auto current = read_number(dir + "/memory.current");
    if (limit && current) {
      const std::uint64_t room = *limit > *current ? *limit - *current : 0;
      if (!smallest || room < *smallest) smallest = room;
    }
    if (path == "/" || path.empty()) break;
    const auto slash = path.rfind('/');
    path = slash == 0 ? "/" : path.substr(0, slash);
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
