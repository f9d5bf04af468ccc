// Memory passed between processes as sealed memfds: no name anyone could squat or unlink, gone
// with its last holder, and sealed so that no holder can resize it under another.
//
// The sidecar creates each one (sidecar/src/committed_memory.hpp), commits its memory, maps it
// read-write, then seals it. What only the sidecar may write gets F_SEAL_FUTURE_WRITE as well:
// from then on no mapping made by anyone, through any fd, can be writable, and mprotect cannot
// make one writable; the sidecar keeps writing through the mapping it made before sealing. A
// receiver checks the seals and the size before it maps (map_received).
#pragma once

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>
#include <utility>

#include "sidecar/shared/error.hpp"

namespace sidecar {

// Seals on everything the sidecar hands out: its size is fixed and the seals themselves too.
inline constexpr unsigned kSizeSeals = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL;
// And on what is the sidecar's alone (status page, result cache): read-only for every other mapping.
inline constexpr unsigned kReadOnlySeals = kSizeSeals | F_SEAL_FUTURE_WRITE;

class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) noexcept : fd_(fd) {}
  UniqueFd(UniqueFd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    if (this != &other) reset(std::exchange(other.fd_, -1));
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() { reset(); }

  int get() const noexcept { return fd_; }
  explicit operator bool() const noexcept { return fd_ >= 0; }
  int release() noexcept { return std::exchange(fd_, -1); }
  void reset(int fd = -1) noexcept {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

class SharedMapping {
 public:
  SharedMapping() = default;
  SharedMapping(void* address, std::uint64_t bytes) noexcept : address_(address), bytes_(bytes) {}
  SharedMapping(SharedMapping&& other) noexcept
      : address_(std::exchange(other.address_, nullptr)), bytes_(std::exchange(other.bytes_, 0)) {}
  SharedMapping& operator=(SharedMapping&& other) noexcept {
    if (this != &other) {
      unmap();
      address_ = std::exchange(other.address_, nullptr);
      bytes_ = std::exchange(other.bytes_, 0);
    }
    return *this;
  }
  SharedMapping(const SharedMapping&) = delete;
  SharedMapping& operator=(const SharedMapping&) = delete;
  ~SharedMapping() { unmap(); }

  std::uint8_t* base() const noexcept { return static_cast<std::uint8_t*>(address_); }
  std::uint64_t size() const noexcept { return bytes_; }
  explicit operator bool() const noexcept { return address_ != nullptr; }
  template <typename T>
  T* as() const noexcept {
    return reinterpret_cast<T*>(address_);
  }

 private:
  void unmap() noexcept {
    if (address_ != nullptr) ::munmap(address_, bytes_);
    address_ = nullptr;
    bytes_ = 0;
  }

  void* address_ = nullptr;
  std::uint64_t bytes_ = 0;
};

inline std::string errno_text(int error) { return std::strerror(error); }

// Maps an fd received from the sidecar, after checking that it is a file of exactly
// `expected_bytes` that carries at least `required_seals`: then nobody can truncate it under us,
// and touching any of it can never SIGBUS.
inline Result<SharedMapping> map_received(int fd, std::uint64_t expected_bytes, unsigned required_seals,
                                          bool writable, const char* what) {
  struct stat info {};
  if (::fstat(fd, &info) != 0 || !S_ISREG(info.st_mode)) {
    return Error{ErrorCode::kProtocolError, std::string(what) + " is not a memory file"};
  }
  const int seals = ::fcntl(fd, F_GET_SEALS);
  if (seals < 0 || (static_cast<unsigned>(seals) & required_seals) != required_seals) {
    return Error{ErrorCode::kProtocolError, std::string(what) + " is not sealed against resizing (seals " +
                                                std::to_string(seals) + "); refusing to map it"};
  }
  if (static_cast<std::uint64_t>(info.st_size) != expected_bytes || expected_bytes == 0) {
    return Error{ErrorCode::kProtocolError, std::string(what) + " is " + std::to_string(info.st_size) +
                                                " bytes, the handshake said " + std::to_string(expected_bytes)};
  }
  const int protection = writable ? PROT_READ | PROT_WRITE : PROT_READ;
  void* address = ::mmap(nullptr, expected_bytes, protection, MAP_SHARED | MAP_POPULATE, fd, 0);
  if (address == MAP_FAILED) {
    return Error{ErrorCode::kProtocolError, "cannot map " + std::string(what) + ": " + errno_text(errno)};
  }
  return SharedMapping(address, expected_bytes);
}

}  // namespace sidecar
