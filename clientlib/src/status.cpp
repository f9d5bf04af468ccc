// What a sidecar says about itself, read from its status page (through a watching connection for
// read_status, through a client's own connection for cache_stats), and the library's names.
#include <cstring>

#include "client_impl.hpp"
#include "sidecar/client.hpp"
#include "sidecar/shared/runtime_dir.hpp"

namespace sidecar {

std::string describe(DType dtype, std::span<const std::int64_t> shape) {
  std::string text = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i) text += ", ";
    text += std::to_string(shape[i]);
  }
  return text + "] " + std::string(dtype_name(dtype));
}

const char* cache_outcome_name(CacheOutcome outcome) noexcept {
  switch (outcome) {
    case CacheOutcome::kNotUsed: return "not used";
    case CacheOutcome::kMiss: return "miss";
    case CacheOutcome::kHitInClient: return "hit in client";
    case CacheOutcome::kHitInSidecar: return "hit in sidecar";
  }
  return "unknown";
}

Result<SidecarStatus> read_status(const std::string& name, const ConnectOptions& options) {
  Result<std::unique_ptr<Connection>> connection = detail::observe(name, options);
  if (!connection.ok()) return connection.error();
  const StatusPage& page = (*connection)->status();
  SidecarStatus status;
  const std::uint32_t state = page.state.load(std::memory_order_acquire);
  status.state = sidecar_state_name(state);
  status.ready = state == static_cast<std::uint32_t>(SidecarState::kReady);
  ModelDescription description;
  copy_model_description(page, description);
  status.model = detail::model_info_of(page, description, (*connection)->reply());
  status.socket_path = (*connection)->socket_path();
  status.clients_connected = page.clients.connected.load(std::memory_order_relaxed);
  status.clients_admitted = page.clients.admitted.load(std::memory_order_relaxed);
  status.clients_refused = page.clients.refused.load(std::memory_order_relaxed);
  status.clients_reclaimed = page.clients.reclaimed.load(std::memory_order_relaxed);
  status.slowest_reclaim_ns = page.clients.slowest_reclaim_ns.load(std::memory_order_relaxed);
  status.requests = page.clients.requests.load(std::memory_order_relaxed);
  status.requests_woken_ahead = page.clients.woken_ahead.load(std::memory_order_relaxed);
  status.default_arena_bytes = page.default_arena_bytes;
  status.max_arena_bytes = page.max_arena_bytes;
  status.cache_per_user = page.cache_scope == static_cast<std::uint32_t>(CacheScope::kPerUser);
  status.cache = detail::cache_stats_of(page);
  status.reloads = page.lifecycle.reloads.load(std::memory_order_relaxed);
  status.failed_reloads = page.lifecycle.failed_reloads.load(std::memory_order_relaxed);
  return status;
}

Result<CacheStats> read_cache_stats(const std::string& name, const ConnectOptions& options) {
  Result<SidecarStatus> status = read_status(name, options);
  if (!status.ok()) return status.error();
  return status->cache;
}

CacheStats Client::cache_stats() const {
  if (!impl_->connection) return CacheStats{};
  return detail::cache_stats_of(impl_->connection->status());
}

}  // namespace sidecar
