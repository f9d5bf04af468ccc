#include "client_impl.hpp"

#include <algorithm>

#include "sidecar/shared/runtime_dir.hpp"

namespace sidecar::detail {
namespace {

std::vector<std::pair<DType, std::vector<std::int64_t>>> to_pairs(const TensorShape* shapes, std::uint32_t count) {
  std::vector<std::pair<DType, std::vector<std::int64_t>>> result;
  for (std::uint32_t i = 0; i < count && i < kMaxTensors; ++i) {
    const std::uint32_t rank = std::min<std::uint32_t>(shapes[i].rank, kMaxRank);
    result.emplace_back(static_cast<DType>(shapes[i].dtype),
                        std::vector<std::int64_t>(shapes[i].dims, shapes[i].dims + rank));
  }
  return result;
}

}  // namespace

Done check_name(const std::string& name) {
  if (is_valid_instance_name(name)) return {};
  return {ErrorCode::kInvalidArgument, "'" + name + "' is not a valid sidecar name"};
}

Result<std::unique_ptr<Connection>> observe(const std::string& name, const ConnectOptions& options) {
  if (Done valid = check_name(name); !valid.ok()) return valid.error();
  return Connection::open(name, dial_settings(options, ConnectKind::kObserve), deadline_after(options.timeout));
}

DialSettings dial_settings(const ConnectOptions& options, ConnectKind kind) {
  DialSettings settings;
  settings.runtime_dir = options.runtime_dir;
  if (options.sidecar_uid) settings.expected_sidecar_uid = static_cast<uid_t>(*options.sidecar_uid);
  settings.arena_bytes = options.arena_bytes;
  settings.kind = kind;
  return settings;
}

ModelInfo model_info_of(const StatusPage& page, const ModelDescription& description, const ConnectReply& reply) {
  ModelInfo model;
  model.model_path.assign(description.model_path, strnlen(description.model_path, kModelPathBytes));
  model.input_count = std::min<std::uint32_t>(description.input_count, kMaxTensors);
  if (page.state.load(std::memory_order_acquire) >= static_cast<std::uint32_t>(SidecarState::kReady)) {
    model.output_count = std::min<std::uint32_t>(description.output_count, kMaxTensors);
    model.max_batch = std::max<std::uint32_t>(description.max_batch, 1);
    for (std::uint32_t s = 0; s < std::min(description.signature_count, kMaxSignatures); ++s) {
      const ModelSignature& published = description.signatures[s];
      const std::uint32_t inputs = std::min<std::uint32_t>(description.input_count, kMaxTensors);
      ModelInfo::Signature signature;
      for (std::uint32_t i = 0; i < inputs; ++i) {
        const ShapeRange& range = published.inputs[i];
        const std::uint32_t rank = std::min<std::uint32_t>(range.rank, kMaxRank);
        signature.inputs.emplace_back(static_cast<DType>(range.dtype),
                                      std::vector<std::int64_t>(range.smallest, range.smallest + rank));
        signature.input_largest.emplace_back(range.largest, range.largest + rank);
      }
      if (published.outputs_known) signature.outputs = to_pairs(published.outputs, description.output_count);
      signature.text = describe_accepted(std::span<const ShapeRange>(published.inputs, inputs));
      model.signatures.push_back(std::move(signature));
    }
    for (std::uint32_t w = 0; w < std::min(description.warmed_count, kMaxWarmedShapes); ++w) {
      model.warmed.push_back(to_pairs(description.warmed[w].inputs, description.input_count));
    }
  }
  model.sidecar_pid = page.sidecar_pid;
  model.sidecar_uid = page.sidecar_uid;
  model.start_generation = page.start_generation;
  model.started_unix_ns = page.started_unix_ns;
  model.max_clients = page.max_clients;
  model.arena_bytes = reply.arena_bytes;
  model.client_id = reply.client_id;
  return model;
}

CacheStats cache_stats_of(const StatusPage& page) {
  CacheStats stats;
  if (page.cache_bytes == 0) return stats;
  const CacheCounters& counters = page.cache;
  stats.enabled = true;
  stats.budget_bytes = page.cache_bytes;
  stats.bytes_used = counters.bytes_used.load(std::memory_order_relaxed);
  stats.entries = counters.entries.load(std::memory_order_relaxed);
  stats.client_hits = counters.client_hits.load(std::memory_order_relaxed);
  stats.sidecar_hits = counters.sidecar_hits.load(std::memory_order_relaxed);
  stats.misses = counters.misses.load(std::memory_order_relaxed);
  stats.inserts = counters.inserts.load(std::memory_order_relaxed);
  stats.evictions = counters.evictions.load(std::memory_order_relaxed);
  stats.too_large = counters.too_large.load(std::memory_order_relaxed);
  stats.flushes = counters.flushes.load(std::memory_order_relaxed);
  stats.generation = counters.generation.load(std::memory_order_relaxed);
  stats.max_entry_bytes = counters.max_entry_bytes.load(std::memory_order_relaxed);
  return stats;
}

}  // namespace sidecar::detail
