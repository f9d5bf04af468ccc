// Looking requests up in the sidecar's result cache from the client, in the read-only mapping the
// sidecar sent (shared scope only): a hit costs no round trip and wakes nobody. Hits are counted
// and reported back through the channel so that the sidecar's eviction order sees them.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "connection.hpp"
#include "sidecar/client.hpp"
#include "sidecar/shared/cache_reader.hpp"

namespace sidecar {

class ClientCache {
 public:
  // Binds to a (new) connection: its cache, if it sent one, and its channel's hit log.
  void attach(Connection& connection);
  void detach() noexcept;
  bool attached() const noexcept { return view_ != nullptr; }

  // The outputs for these inputs, copied out; nullopt on a miss, or for inputs whose shapes the
  // normal path must refuse.
  std::optional<std::vector<Tensor>> lookup(std::span<const TensorView> inputs);

  // Looks the inputs of `request`, already in the arena, up and on a hit places the outputs in its
  // output region as the sidecar would, described in outputs[0..count).
  bool lookup_in_arena(const RequestDescriptor& request, std::uint8_t* arena, TensorDescriptor* outputs,
                       std::uint32_t& count);

 private:
  void record_hit(const CacheHit& hit);

  const CacheView* view_ = nullptr;
  ChannelHeader* channel_ = nullptr;
  SpscProducer<HitLogRing> hit_log_;
};

}  // namespace sidecar
