// Mapping a sidecar's segment: created by the sidecar, attached by clients. Boost.Interprocess does
// the shm_open/ftruncate/mmap/fchmod; this adds the layout checks both sides need.
#pragma once

#include <fcntl.h>
#include <sys/stat.h>

#include <boost/interprocess/mapped_region.hpp>
#include <boost/interprocess/shared_memory_object.hpp>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <new>
#include <stdexcept>
#include <string>

#include "sidecar/shared/layout.hpp"

namespace sidecar {

class SegmentMapping {
 public:
  SegmentMapping() = default;

  // Creates the segment (failing if it exists) and maps it read-write, zero-filled. With `reserve`,
  // the memory is allocated now (posix_fallocate), so a full /dev/shm is a clear error here rather
  // than a SIGBUS at the first write to a page that cannot be backed.
  static SegmentMapping create(const std::string& shm_name, std::uint64_t bytes, unsigned mode, bool reserve = false) {
    namespace bip = boost::interprocess;
    bip::permissions permissions(mode);
    SegmentMapping mapping;
    mapping.name_ = shm_name;
    bip::shared_memory_object object(bip::create_only, shm_name.c_str(), bip::read_write, permissions);
    try {
      object.truncate(static_cast<bip::offset_t>(bytes));
      if (reserve) {
        const int error = ::posix_fallocate(object.get_mapping_handle().handle, 0, static_cast<off_t>(bytes));
        if (error != 0) {
          throw std::runtime_error("cannot reserve " + std::to_string(bytes) + " bytes in /dev/shm for " + shm_name +
                                   ": " + std::strerror(error) +
                                   (error == ENOSPC ? " (is /dev/shm large enough?)" : ""));
        }
      }
      mapping.record_ownership(object);
      mapping.region_ = bip::mapped_region(object, bip::read_write);
    } catch (...) {
      bip::shared_memory_object::remove(shm_name.c_str());
      throw;
    }
    return mapping;
  }

  // Maps an existing segment read-write, or read-only (enough to watch it: sidecarctl status needs
  // no write permission). Throws boost::interprocess::interprocess_exception when there is none.
  static SegmentMapping open(const std::string& shm_name, bool read_only = false) {
    namespace bip = boost::interprocess;
    const bip::mode_t mode = read_only ? bip::read_only : bip::read_write;
    SegmentMapping mapping;
    mapping.name_ = shm_name;
    bip::shared_memory_object object(bip::open_only, shm_name.c_str(), mode);
    bip::offset_t size = 0;
    if (!object.get_size(size) || size <= 0) throw std::runtime_error("segment " + shm_name + " is empty");
    mapping.record_ownership(object);
    mapping.region_ = bip::mapped_region(object, mode);
    return mapping;
  }

  static bool remove(const std::string& shm_name) noexcept {
    return boost::interprocess::shared_memory_object::remove(shm_name.c_str());
  }

  std::uint8_t* base() const noexcept { return static_cast<std::uint8_t*>(region_.get_address()); }
  std::uint64_t size() const noexcept { return region_.get_size(); }
  const std::string& name() const noexcept { return name_; }
  SegmentHeader* header() const noexcept { return reinterpret_cast<SegmentHeader*>(base()); }
  // Owner and permission bits of the object that was mapped (fstat of the descriptor, not of the
  // name, which may have been replaced since).
  uid_t owner_uid() const noexcept { return owner_uid_; }
  mode_t mode_bits() const noexcept { return mode_bits_; }

 private:
  void record_ownership(const boost::interprocess::shared_memory_object& object) {
    struct stat info {};
    if (::fstat(object.get_mapping_handle().handle, &info) != 0) {
      throw std::runtime_error("cannot fstat " + name_ + ": " + std::strerror(errno));
    }
    owner_uid_ = info.st_uid;
    mode_bits_ = info.st_mode & 07777;
  }

  std::string name_;
  uid_t owner_uid_ = 0;
  mode_t mode_bits_ = 0;
  boost::interprocess::mapped_region region_;
};

// Why a mapped segment cannot be used by this build, or "" when it can. Checks what a client must
// trust before it follows any offset: magic, version, and a geometry that matches both the
// formula and the mapped size.
inline std::string check_segment_layout(const SegmentMapping& mapping) {
  if (mapping.size() < sizeof(SegmentHeader)) {
    return "segment " + mapping.name() + " is " + std::to_string(mapping.size()) + " bytes, smaller than a header (" +
           std::to_string(sizeof(SegmentHeader)) + ")";
  }
  const SegmentHeader& header = *mapping.header();
  const std::uint64_t magic = header.magic.load(std::memory_order_acquire);
  if (magic == 0) return "segment " + mapping.name() + " is still being created";
  if (magic != kSegmentMagic) return "segment " + mapping.name() + " is not an inference-sidecar segment (bad magic)";
  if (header.layout_version != kLayoutVersion) {
    return "layout version mismatch: the sidecar speaks version " + std::to_string(header.layout_version) +
           ", this client speaks version " + std::to_string(kLayoutVersion) + "; upgrade the older side";
  }
  if (header.header_bytes != sizeof(SegmentHeader) || header.ring_capacity != kRingCapacity ||
      header.channel_count == 0 || header.channel_count > kMaxChannels) {
    return "segment " + mapping.name() + " has a header this build does not understand";
  }
  const SegmentGeometry geometry = SegmentGeometry::compute(header.channel_count, header.arena_bytes);
  if (geometry.segment_bytes != header.segment_bytes || geometry.segment_bytes != mapping.size() ||
      geometry.channels_offset != header.channels_offset || geometry.arenas_offset != header.arenas_offset ||
      geometry.channel_stride != header.channel_stride) {
    return "segment " + mapping.name() + " has an inconsistent geometry";
  }
  return {};
}

}  // namespace sidecar
