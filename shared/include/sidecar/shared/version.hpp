// The one version number of everything the sidecar and its clients share: the socket handshake and
// every layout in shared memory (status page, channel, result cache, descriptors). Any change to a
// struct in those headers bumps it; tests/unit/layout_test.cpp pins sizes and offsets so that a
// change cannot slip through unnoticed. A client and a sidecar of different versions refuse each
// other at the handshake, with a message naming both versions.
#pragma once

#include <cstdint>

namespace sidecar {

inline constexpr std::uint32_t kProtocolVersion = 7;

}  // namespace sidecar
