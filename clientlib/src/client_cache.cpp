#include "client_cache.hpp"

#include <algorithm>

#include "sidecar/shared/descriptor_check.hpp"

namespace sidecar {

void ClientCache::attach(Connection& connection) {
  view_ = connection.cache();
  channel_ = &connection.channel();
  hit_log_ = SpscProducer<HitLogRing>(&channel_->cache_hit_log);
}

void ClientCache::detach() noexcept {
  view_ = nullptr;
  channel_ = nullptr;
  hit_log_ = SpscProducer<HitLogRing>();
}

std::optional<std::vector<Tensor>> ClientCache::lookup(std::span<const TensorView> inputs) {
  if (view_ == nullptr || inputs.size() > kMaxTensors) return std::nullopt;
  TensorBytes keyed[kMaxTensors];
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    const TensorView& input = inputs[i];
    if (input.shape.size() > kMaxRank) return std::nullopt;
    TensorShape shape{};
    shape.dtype = static_cast<std::uint8_t>(input.dtype);
    shape.rank = static_cast<std::uint8_t>(input.shape.size());
    std::copy(input.shape.begin(), input.shape.end(), shape.dims);
    std::uint64_t bytes = 0;
    if (!shape_byte_size(shape, bytes) || bytes != input.bytes) return std::nullopt;
    keyed[i] = TensorBytes{shape, input.data, input.bytes};
  }
  const std::span<const TensorBytes> key_inputs(keyed, inputs.size());
  std::vector<Tensor> outputs;
  const std::uint64_t generation = view_->generation();
  const auto hit = view_->lookup(compute_cache_key(generation, kSharedScope, key_inputs), generation, key_inputs,
                                 [&](std::uint32_t count, const CacheTensor* found, std::uint8_t** where) {
                                   outputs.resize(count);
                                   for (std::uint32_t i = 0; i < count; ++i) {
                                     outputs[i].dtype = static_cast<DType>(found[i].shape.dtype);
                                     outputs[i].shape.assign(found[i].shape.dims,
                                                             found[i].shape.dims + found[i].shape.rank);
                                     outputs[i].data.resize(found[i].bytes);
                                     where[i] = reinterpret_cast<std::uint8_t*>(outputs[i].data.data());
                                   }
                                   return true;
                                 });
  if (!hit) return std::nullopt;
  record_hit(*hit);
  return outputs;
}

bool ClientCache::lookup_in_arena(const RequestDescriptor& request, std::uint8_t* arena, TensorDescriptor* outputs,
                                  std::uint32_t& count) {
  if (view_ == nullptr) return false;
  TensorBytes inputs[kMaxTensors];
  for (std::uint32_t i = 0; i < request.input_count; ++i) {
    inputs[i] = TensorBytes{request.inputs[i].shape, arena + request.inputs[i].offset, request.inputs[i].bytes};
  }
  const auto hit =
      lookup_into_arena(*view_, kSharedScope, std::span<const TensorBytes>(inputs, request.input_count), arena,
                        OutputRegion{request.output_offset, request.output_capacity}, outputs, count);
  if (!hit) return false;
  record_hit(*hit);
  return true;
}

// Reports that do not fit the log are dropped: they only inform the eviction order.
void ClientCache::record_hit(const CacheHit& hit) {
  channel_->cache_hits.store(channel_->cache_hits.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  if (CacheHitRecord* record = hit_log_.try_claim()) {
    *record = CacheHitRecord{hit.slot, 0, hit.sequence};
    hit_log_.publish();
  }
}

}  // namespace sidecar
