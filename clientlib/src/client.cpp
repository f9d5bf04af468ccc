#include "sidecar/client.hpp"

#include <pthread.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>

#include "client_cache.hpp"
#include "connection.hpp"
#include "request_table.hpp"
#include "sidecar/shared/clock.hpp"
#include "sidecar/shared/descriptor_check.hpp"
#include "sidecar/shared/output_region.hpp"
#include "sidecar/shared/runtime_dir.hpp"
#include "sidecar/shared/signature.hpp"

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

namespace {

// How often, at most, a call checks that the sidecar's end of the socket is still open: a syscall
// that a client calling in a tight loop must not pay on every call.
constexpr std::uint64_t kLivenessCheckNs = 1'000'000;

// CLOCK_MONOTONIC nanoseconds `timeout` from now; a huge timeout saturates instead of wrapping.
std::uint64_t deadline_after(std::chrono::nanoseconds timeout) {
  const std::uint64_t now = monotonic_ns();
  if (timeout.count() <= 0) return now;
  const auto nanos = static_cast<std::uint64_t>(timeout.count());
  return nanos > ~0ull - now ? ~0ull : now + nanos;
}

DialSettings dial_settings(const ConnectOptions& options, ConnectKind kind) {
  DialSettings settings;
  settings.runtime_dir = options.runtime_dir;
  if (options.sidecar_uid) settings.expected_sidecar_uid = static_cast<uid_t>(*options.sidecar_uid);
  settings.arena_bytes = options.arena_bytes;
  settings.kind = kind;
  return settings;
}

std::vector<std::pair<DType, std::vector<std::int64_t>>> to_pairs(const TensorShape* shapes, std::uint32_t count) {
  std::vector<std::pair<DType, std::vector<std::int64_t>>> result;
  for (std::uint32_t i = 0; i < count && i < kMaxTensors; ++i) {
    const std::uint32_t rank = std::min<std::uint32_t>(shapes[i].rank, kMaxRank);
    result.emplace_back(static_cast<DType>(shapes[i].dtype),
                        std::vector<std::int64_t>(shapes[i].dims, shapes[i].dims + rank));
  }
  return result;
}

// What the status page says about the model (the signatures once the sidecar is ready).
ModelInfo model_info_of(const StatusPage& page, const ConnectReply& reply) {
  ModelInfo model;
  const ModelDescription& description = page.model;
  model.model_path.assign(description.model_path, strnlen(description.model_path, kModelPathBytes));
  model.input_count = std::min<std::uint32_t>(description.input_count, kMaxTensors);
  if (page.state.load(std::memory_order_acquire) >= static_cast<std::uint32_t>(SidecarState::kReady)) {
    model.output_count = std::min<std::uint32_t>(description.output_count, kMaxTensors);
    model.max_batch = std::max<std::uint32_t>(description.max_batch, 1);
    for (std::uint32_t s = 0; s < std::min(description.signature_count, kMaxSignatures); ++s) {
      model.signatures.push_back({to_pairs(description.signatures[s].inputs, description.input_count),
                                  to_pairs(description.signatures[s].outputs, description.output_count)});
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

}  // namespace

struct Client::Impl {
  std::string name;
  ConnectOptions options;
  // A Client connected before a fork() belongs to the parent: in the child it must not post into
  // the channel or read its answers (and its fds are closed there, see Connection).
  std::uint64_t forks_seen_at_connect = 0;
  std::unique_ptr<Connection> connection;  // null after the sidecar went, until the next call reconnects
  // The connection before the last reconnect, its fds closed and its memory still mapped, so that
  // views a caller got from it fault on nothing until the next reconnect.
  std::unique_ptr<Connection> retired;
  std::uint64_t connections = 0;
  RequestTable requests;
  ClientCache cache;
  ModelInfo model;
  ModelDescription description{};  // a private copy: output sizing must not read shared memory twice
  std::uint64_t spin_ns = 0;
  CacheLookup cache_lookup = CacheLookup::kInClient;
  CacheOutcome last_cache_outcome = CacheOutcome::kNotUsed;
  ServiceInfo last_service;
  std::uint64_t last_liveness_check_ns = 0;

  // The zero-copy request being assembled by input_buffer(), and the views run() hands out.
  RequestDescriptor pending{};
  std::uint64_t arena_cursor = 0;
  std::vector<std::int64_t> output_dims;
  std::vector<TensorView> output_views;

  Done usable() const {
    if (Connection::forks_seen() != forks_seen_at_connect) {
      return {ErrorCode::kInvalidArgument,
              "this client was connected before fork(): it belongs to the parent process; connect anew in the child"};
    }
    return {};
  }

  void adopt(std::unique_ptr<Connection> fresh) {
    retired.reset();
    connection = std::move(fresh);
    ++connections;
    requests.attach(*connection);
    cache.attach(*connection);
    std::memcpy(static_cast<void*>(&description), &connection->status().model, sizeof description);
    model = model_info_of(connection->status(), connection->reply());
    last_liveness_check_ns = monotonic_ns();
  }

  void disconnect(const std::string& why) {
    requests.fail_in_flight(ErrorCode::kSidecarGone, why);
    requests.detach();
    cache.detach();
    connection->close_socket();
    retired = std::move(connection);
    pending.input_count = 0;
    arena_cursor = 0;
  }

  // Before a new request: notices a sidecar that went (looking at the socket at most every
  // kLivenessCheckNs), answers what was in flight with kSidecarGone, and reconnects.
  Done ensure_connected(std::uint64_t call_deadline_ns) {
    const std::uint64_t now = monotonic_ns();
    if (connection) {
      const bool check = now - last_liveness_check_ns >= kLivenessCheckNs;
      if (check) last_liveness_check_ns = now;
      if (!connection->sidecar_gone(check)) return {};
      disconnect("sidecar '" + name + "' went away while the request was in flight");
    }
    if (!options.reconnect) {
      return {ErrorCode::kSidecarGone, "sidecar '" + name + "' went away (ConnectOptions::reconnect is off)"};
    }
    const std::uint64_t deadline = std::min(call_deadline_ns, deadline_after(options.timeout));
    Result<std::unique_ptr<Connection>> fresh = Connection::open(name, dial_settings(options, ConnectKind::kAttach), deadline);
    if (!fresh.ok()) return fresh.error();
    adopt(std::move(*fresh));
    return {};
  }

  Done sidecar_went(const Done& waited) {
    if (waited.code() == ErrorCode::kSidecarGone) disconnect(waited.message());
    return waited;
  }

  bool looks_up_here(CachePolicy policy) const noexcept {
    return policy == CachePolicy::kUse && cache_lookup == CacheLookup::kInClient && cache.attached();
  }

  // Flags for a request that missed (or skipped) the lookup here.
  std::uint32_t cache_flags(CachePolicy policy) {
    if (policy == CachePolicy::kBypass || cache_lookup == CacheLookup::kOff) {
      last_cache_outcome = CacheOutcome::kNotUsed;
      return kRequestFlagBypassCache;
    }
    if (connection->status().cache_bytes == 0) {
      last_cache_outcome = CacheOutcome::kNotUsed;
      return kRequestFlagNone;
    }
    last_cache_outcome = CacheOutcome::kMiss;  // until the sidecar says it answered from its cache
    return looks_up_here(policy) ? kRequestFlagCacheChecked : kRequestFlagNone;
  }

  // Bytes the outputs of a request with these inputs take, from the shapes the sidecar published;
  // 0 when unknown.
  std::uint64_t expected_output_bytes(const RequestDescriptor& request) const {
    TensorShape inputs[kMaxTensors];
    for (std::uint32_t i = 0; i < request.input_count; ++i) inputs[i] = request.inputs[i].shape;
    const std::uint32_t input_count = std::min<std::uint32_t>(description.input_count, kMaxTensors);
    const std::uint32_t output_count = std::min<std::uint32_t>(description.output_count, kMaxTensors);
    for (std::uint32_t s = 0; s < std::min(description.signature_count, kMaxSignatures); ++s) {
      const ModelSignature& signature = description.signatures[s];
      const std::uint64_t bytes = sidecar::expected_output_bytes(
          std::span<const TensorShape>(signature.inputs, input_count),
          std::span<const TensorShape>(signature.outputs, output_count),
          std::span<const TensorShape>(inputs, request.input_count), std::max<std::uint32_t>(description.max_batch, 1));
      if (bytes != 0) return bytes;
    }
    return 0;
  }

  void set_output_views(const TensorDescriptor* outputs, std::uint32_t count) {
    output_dims.assign(static_cast<std::size_t>(count) * kMaxRank, 0);
    output_views.clear();
    for (std::uint32_t i = 0; i < count; ++i) {
      const TensorDescriptor& tensor = outputs[i];
      std::copy(tensor.shape.dims, tensor.shape.dims + tensor.shape.rank, output_dims.begin() + i * kMaxRank);
      output_views.push_back(
          TensorView{static_cast<DType>(tensor.shape.dtype),
                     std::span<const std::int64_t>(output_dims.data() + i * kMaxRank, tensor.shape.rank),
                     connection->arena() + tensor.offset, tensor.bytes});
    }
  }

  // Hands a finished (or cancelled) request's result to the caller and forgets it; a cancelled one
  // whose answer has not come stays listed, as abandoned, so its region is freed when it comes.
  Result<std::vector<Tensor>> collect(std::uint64_t id) {
    RequestTable::Entry& entry = *requests.find(id);
    last_cache_outcome = entry.cache_outcome;
    last_service = entry.service;
    if (entry.cancelled) {
      if (entry.in_flight)
        entry.abandoned = true;
      else
        requests.erase(id);
      return {ErrorCode::kCancelled, "cancelled"};
    }
    Result<std::vector<Tensor>> result = entry.code == ErrorCode::kOk
                                             ? Result<std::vector<Tensor>>(std::move(entry.outputs))
                                             : Result<std::vector<Tensor>>(entry.code, std::move(entry.message));
    requests.erase(id);
    return result;
  }
};

Client::Client(std::unique_ptr<Impl> impl) noexcept : impl_(std::move(impl)) {}
Client::Client(Client&&) noexcept = default;
Client& Client::operator=(Client&&) noexcept = default;
// Closing the socket is the whole goodbye: the sidecar reclaims the channel on the hang-up. In a
// forked child, closing the inherited copies hangs nothing up while the parent holds its own.
Client::~Client() = default;

const ModelInfo& Client::model() const noexcept { return impl_->model; }
CacheOutcome Client::last_cache_outcome() const noexcept { return impl_->last_cache_outcome; }
ServiceInfo Client::last_service() const noexcept { return impl_->last_service; }
void Client::set_cache_lookup(CacheLookup lookup) noexcept { impl_->cache_lookup = lookup; }
std::uint32_t Client::client_id() const noexcept { return impl_->model.client_id; }
std::uint64_t Client::connections() const noexcept { return impl_->connections; }
std::size_t Client::in_flight() const noexcept { return impl_->requests.in_flight(); }

void Client::reset_inputs() noexcept {
  impl_->pending.input_count = 0;
  impl_->arena_cursor = 0;
}

Result<Client> Client::connect(const std::string& name, const ConnectOptions& options) {
  if (!is_valid_instance_name(name)) {
    return {ErrorCode::kInvalidArgument, "'" + name + "' is not a valid sidecar name"};
  }
  auto impl = std::make_unique<Impl>();
  impl->name = name;
  impl->options = options;
  impl->forks_seen_at_connect = Connection::forks_seen();
  impl->spin_ns = static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(options.spin).count());
  impl->cache_lookup = options.cache_lookup;
  Result<std::unique_ptr<Connection>> connection =
      Connection::open(name, dial_settings(options, ConnectKind::kAttach), deadline_after(options.timeout));
  if (!connection.ok()) return connection.error();
  impl->adopt(std::move(*connection));
  return Client(std::move(impl));
}

Result<SidecarStatus> read_status(const std::string& name, const ConnectOptions& options) {
  if (!is_valid_instance_name(name)) {
    return {ErrorCode::kInvalidArgument, "'" + name + "' is not a valid sidecar name"};
  }
  Result<std::unique_ptr<Connection>> connection =
      Connection::open(name, dial_settings(options, ConnectKind::kObserve), deadline_after(options.timeout));
  if (!connection.ok()) return connection.error();
  const StatusPage& page = (*connection)->status();
  SidecarStatus status;
  const std::uint32_t state = page.state.load(std::memory_order_acquire);
  status.state = sidecar_state_name(state);
  status.ready = state == static_cast<std::uint32_t>(SidecarState::kReady);
  status.model = model_info_of(page, (*connection)->reply());
  status.socket_path = (*connection)->socket_path();
  status.clients_connected = page.clients.connected.load(std::memory_order_relaxed);
  status.clients_admitted = page.clients.admitted.load(std::memory_order_relaxed);
  status.clients_refused = page.clients.refused.load(std::memory_order_relaxed);
  status.clients_reclaimed = page.clients.reclaimed.load(std::memory_order_relaxed);
  status.slowest_reclaim_ns = page.clients.slowest_reclaim_ns.load(std::memory_order_relaxed);
  status.requests = page.clients.requests.load(std::memory_order_relaxed);
  status.default_arena_bytes = page.default_arena_bytes;
  status.max_arena_bytes = page.max_arena_bytes;
  status.cache_per_user = page.cache_scope == static_cast<std::uint32_t>(CacheScope::kPerUser);
  status.cache = cache_stats_of(page);
  return status;
}

Result<CacheStats> read_cache_stats(const std::string& name, const ConnectOptions& options) {
  Result<SidecarStatus> status = read_status(name, options);
  if (!status.ok()) return status.error();
  return status->cache;
}

CacheStats Client::cache_stats() const {
  if (!impl_->connection) return CacheStats{};
  return cache_stats_of(impl_->connection->status());
}

Result<std::span<std::byte>> Client::input_buffer(DType dtype, std::span<const std::int64_t> shape) {
  Impl& impl = *impl_;
  if (Done usable = impl.usable(); !usable.ok()) return usable.error();
  RequestDescriptor& request = impl.pending;
  // A refused input abandons the whole request being assembled, so run() cannot send half of it.
  auto refuse = [&](std::string message) -> Result<std::span<std::byte>> {
    reset_inputs();
    return {ErrorCode::kInvalidArgument, std::move(message)};
  };
  if (request.input_count == 0) {
    if (Done connected = impl.ensure_connected(deadline_after(impl.options.timeout)); !connected.ok()) {
      return connected.error();
    }
    impl.requests.pump();
    // A new request takes the whole arena: only where no answer can still land.
    if (const std::uint64_t in_flight = impl.requests.in_flight(); in_flight != 0) {
      if (impl.requests.abandoned_in_flight() == in_flight) {
        return {ErrorCode::kBusy, "an earlier request that timed out is still running in the sidecar"};
      }
      return {ErrorCode::kBusy, std::to_string(in_flight) +
                                    " submitted request(s) still in flight: the zero-copy path needs the whole arena"};
    }
  }
  if (request.input_count >= kMaxTensors) {
    return refuse("at most " + std::to_string(kMaxTensors) + " inputs per request");
  }
  if (shape.size() > kMaxRank) {
    return refuse("rank " + std::to_string(shape.size()) + " exceeds the maximum of " + std::to_string(kMaxRank));
  }
  TensorDescriptor& tensor = request.inputs[request.input_count];
  tensor = TensorDescriptor{};
  tensor.shape.dtype = static_cast<std::uint8_t>(dtype);
  tensor.shape.rank = static_cast<std::uint8_t>(shape.size());
  std::copy(shape.begin(), shape.end(), tensor.shape.dims);
  std::uint64_t bytes = 0;
  if (!shape_byte_size(tensor.shape, bytes)) {
    return refuse("shape " + describe(dtype, shape) + " has a negative dimension or is too large");
  }
  const std::uint64_t arena_bytes = impl.connection->arena_bytes();
  const std::uint64_t offset = align_up(impl.arena_cursor, kTensorAlignment);
  if (offset > arena_bytes || bytes > arena_bytes - offset) {
    return refuse("the inputs need more than this client's " + std::to_string(arena_bytes) +
                  " bytes of shared memory (ConnectOptions::arena_bytes, within the sidecar's --max-arena-bytes)");
  }
  tensor.offset = offset;
  tensor.bytes = bytes;
  impl.arena_cursor = offset + bytes;
  ++request.input_count;
  return std::span<std::byte>(reinterpret_cast<std::byte*>(impl.connection->arena() + offset), bytes);
}

Result<std::span<const TensorView>> Client::run(std::chrono::microseconds timeout, CachePolicy policy) {
  Impl& impl = *impl_;
  if (Done usable = impl.usable(); !usable.ok()) return usable.error();
  const std::uint64_t deadline_ns = deadline_after(timeout);
  // The request is taken over from `pending`, which is left empty for the next one.
  RequestDescriptor request = impl.pending;
  reset_inputs();
  if (request.input_count == 0) return {ErrorCode::kInvalidArgument, "no inputs: call input_buffer() first"};
  if (!impl.connection || impl.connection->sidecar_gone(false)) {
    return {ErrorCode::kSidecarGone, "sidecar '" + impl.name + "' went away; write the inputs again"};
  }
  const std::uint64_t arena_bytes = impl.connection->arena_bytes();
  std::uint64_t inputs_end = 0;
  for (std::uint32_t i = 0; i < request.input_count; ++i) {
    inputs_end = std::max(inputs_end, request.inputs[i].offset + request.inputs[i].bytes);
  }
  request.output_offset = align_up(inputs_end, kTensorAlignment);
  request.output_capacity = request.output_offset < arena_bytes ? arena_bytes - request.output_offset : 0;
  if (request.output_capacity == 0) request.output_offset = 0;
  request.flags = impl.cache_flags(policy);
  impl.last_service = ServiceInfo{};
  if (impl.looks_up_here(policy)) {
    TensorDescriptor outputs[kMaxTensors];
    std::uint32_t count = 0;
    if (impl.cache.lookup_in_arena(request, impl.connection->arena(), outputs, count)) {
      impl.last_cache_outcome = CacheOutcome::kHitInClient;
      impl.set_output_views(outputs, count);
      return std::span<const TensorView>(impl.output_views);
    }
  }

  const std::uint64_t id = impl.requests.next_id();
  request.request_id = id;
  // The sidecar drops the request unrun once this passes: an abandoned request costs no forward.
  request.deadline_ns = deadline_ns;
  RequestTable::Entry& entry = impl.requests.add(id);
  entry.in_place = true;
  entry.offset = 0;
  entry.bytes = arena_bytes;
  entry.request = request;
  entry.cache_outcome = impl.last_cache_outcome;
  if (Done posted = impl.requests.post(entry); !posted.ok()) {
    impl.requests.erase(id);
    return posted.error();
  }
  Done waited = impl.sidecar_went(
      impl.requests.wait_until([&] { return entry.done; }, deadline_ns, impl.spin_ns));
  if (!waited.ok()) {
    if (waited.code() == ErrorCode::kTimeout) {
      entry.abandoned = true;  // its region (the whole arena) stays reserved until the answer comes
      return {ErrorCode::kTimeout, "no answer from sidecar '" + impl.name + "' within the timeout"};
    }
    if (RequestTable::Entry* left = impl.requests.find(id)) {
      if (left->in_flight) left->abandoned = true;
      else impl.requests.erase(id);
    }
    return waited.error();
  }
  impl.last_cache_outcome = entry.cache_outcome;
  impl.last_service = entry.service;
  if (entry.code != ErrorCode::kOk) {
    Error error{entry.code, entry.message};
    impl.requests.erase(id);
    return error;
  }
  impl.set_output_views(entry.placed, entry.placed_count);
  impl.requests.erase(id);
  return std::span<const TensorView>(impl.output_views);
}

Result<std::vector<Tensor>> Client::infer(std::span<const TensorView> inputs, std::chrono::microseconds timeout,
                                          CachePolicy policy) {
  Impl& impl = *impl_;
  if (Done usable = impl.usable(); !usable.ok()) return usable.error();
  bool looked_up = false;
  if (policy == CachePolicy::kUse && impl.cache_lookup == CacheLookup::kInClient && !inputs.empty() &&
      inputs.size() <= kMaxTensors) {
    // A hit must come from the cache of a sidecar that still runs.
    if (Done connected = impl.ensure_connected(deadline_after(timeout)); !connected.ok()) return connected.error();
    if (impl.looks_up_here(policy)) {
      // The hot path of a hit: straight from the cache into the result, no request bookkeeping.
      if (auto hit = impl.cache.lookup(inputs)) {
        impl.last_service = ServiceInfo{};
        impl.last_cache_outcome = CacheOutcome::kHitInClient;
        return std::move(*hit);
      }
      looked_up = true;
    }
  }
  auto handle = submit_request(inputs, SubmitOptions{timeout, policy}, looked_up);
  if (!handle.ok()) return handle.error();
  return wait(*handle, timeout);
}

Result<RequestHandle> Client::submit(std::span<const TensorView> inputs, const SubmitOptions& options) {
  return submit_request(inputs, options, /*looked_up=*/false);
}

Result<RequestHandle> Client::submit_request(std::span<const TensorView> inputs, const SubmitOptions& options,
                                             bool looked_up) {
  Impl& impl = *impl_;
  if (Done usable = impl.usable(); !usable.ok()) return usable.error();
  reset_inputs();
  const std::uint64_t deadline_ns = deadline_after(options.timeout);
  if (inputs.empty() || inputs.size() > kMaxTensors) {
    return {ErrorCode::kInvalidArgument, "between 1 and " + std::to_string(kMaxTensors) + " inputs per request"};
  }
  if (Done connected = impl.ensure_connected(deadline_ns); !connected.ok()) return connected.error();
  impl.requests.pump();
  if (impl.requests.in_flight() >= kRingCapacity) {
    // The bound that keeps a client from queueing without end: one ring's worth, all answerable.
    return {ErrorCode::kOverloaded,
            std::to_string(kRingCapacity) + " requests in flight on this client: wait for some first"};
  }
  const std::uint64_t id = impl.requests.next_id();
  impl.last_service = ServiceInfo{};

  if (impl.looks_up_here(options.cache) && !looked_up) {
    // Looked up in the caller's own buffers: a hit does not even copy the inputs to shared memory.
    if (auto hit = impl.cache.lookup(inputs)) {
      RequestTable::Entry& entry = impl.requests.add(id);
      entry.done = true;
      entry.outputs = std::move(*hit);
      entry.cache_outcome = CacheOutcome::kHitInClient;
      return RequestHandle{id};
    }
  }

  // The region: the cancel word, then the inputs, then room for the outputs, each aligned.
  const std::uint64_t arena_bytes = impl.connection->arena_bytes();
  RequestDescriptor request{};
  request.request_id = id;
  request.deadline_ns = deadline_ns;
  request.input_count = static_cast<std::uint16_t>(inputs.size());
  std::uint64_t cursor = kTensorAlignment;  // the cancel word's line
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    const TensorView& input = inputs[i];
    if (input.shape.size() > kMaxRank) {
      return {ErrorCode::kInvalidArgument, "input " + std::to_string(i) + ": rank " +
                                               std::to_string(input.shape.size()) + " exceeds the maximum of " +
                                               std::to_string(kMaxRank)};
    }
    TensorDescriptor& tensor = request.inputs[i];
    tensor.shape.dtype = static_cast<std::uint8_t>(input.dtype);
    tensor.shape.rank = static_cast<std::uint8_t>(input.shape.size());
    std::copy(input.shape.begin(), input.shape.end(), tensor.shape.dims);
    std::uint64_t bytes = 0;
    if (!shape_byte_size(tensor.shape, bytes)) {
      return {ErrorCode::kInvalidArgument, "input " + std::to_string(i) + ": shape " +
                                               describe(input.dtype, input.shape) +
                                               " has a negative dimension or is too large"};
    }
    if (bytes != input.bytes) {
      return {ErrorCode::kInvalidArgument, "input " + std::to_string(i) + ": " + std::to_string(input.bytes) +
                                               " bytes given, shape " + describe(input.dtype, input.shape) + " needs " +
                                               std::to_string(bytes)};
    }
    tensor.offset = cursor;  // relative to the region for now
    tensor.bytes = bytes;
    cursor = align_up(cursor + bytes, kTensorAlignment);
    if (cursor > arena_bytes) {
      return {ErrorCode::kInvalidArgument, "the inputs need more than this client's " + std::to_string(arena_bytes) +
                                               " bytes of shared memory (ConnectOptions::arena_bytes, within the "
                                               "sidecar's --max-arena-bytes)"};
    }
  }
  const std::uint64_t inputs_bytes = cursor;
  std::uint64_t output_bytes = impl.expected_output_bytes(request);
  if (output_bytes == 0) {
    // Outputs of unknown size: alone, the whole rest of the arena; beside others, a generous guess.
    output_bytes = impl.requests.in_flight() == 0 ? arena_bytes - inputs_bytes
                                                  : std::max<std::uint64_t>(1 << 20, 2 * inputs_bytes);
  }
  const std::uint64_t region_bytes = std::min(arena_bytes, align_up(inputs_bytes + output_bytes, kTensorAlignment));
  const std::optional<std::uint64_t> offset = impl.requests.allocate_region(region_bytes);
  if (!offset) {
    return {ErrorCode::kOverloaded, "no room in the channel's arena beside the " +
                                        std::to_string(impl.requests.in_flight()) + " request(s) in flight"};
  }
  std::uint8_t* region = impl.connection->arena() + *offset;
  reinterpret_cast<std::atomic<std::uint64_t>*>(region)->store(0, std::memory_order_relaxed);
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    if (inputs[i].bytes) std::memcpy(region + request.inputs[i].offset, inputs[i].data, inputs[i].bytes);
    request.inputs[i].offset += *offset;
  }
  request.output_offset = *offset + inputs_bytes;
  request.output_capacity = region_bytes - inputs_bytes;
  request.cancel_offset = *offset;
  request.flags = impl.cache_flags(options.cache) | kRequestFlagCancellable;

  RequestTable::Entry& entry = impl.requests.add(id);
  entry.offset = *offset;
  entry.bytes = region_bytes;
  entry.request = request;
  entry.cache_outcome = impl.last_cache_outcome;  // kMiss or kNotUsed until the answer says otherwise
  if (Done posted = impl.requests.post(entry); !posted.ok()) {
    impl.requests.erase(id);
    return posted.error();
  }
  return RequestHandle{id};
}

std::optional<Result<std::vector<Tensor>>> Client::try_get(RequestHandle handle) {
  Impl& impl = *impl_;
  if (Done usable = impl.usable(); !usable.ok()) return Result<std::vector<Tensor>>(usable.error());
  if (impl.connection) {
    impl.requests.pump();
    const std::uint64_t now = monotonic_ns();
    const bool check = now - impl.last_liveness_check_ns >= kLivenessCheckNs;
    if (check) impl.last_liveness_check_ns = now;
    if (impl.connection->sidecar_gone(check)) {
      impl.disconnect("sidecar '" + impl.name + "' went away while the request was in flight");
    }
  }
  RequestTable::Entry* entry = impl.requests.find(handle.id);
  if (entry == nullptr || entry->abandoned) {
    return Result<std::vector<Tensor>>{ErrorCode::kInvalidArgument, "unknown request handle (collected already?)"};
  }
  if (!entry->done && !entry->cancelled) return std::nullopt;
  return impl.collect(handle.id);
}

Result<std::vector<Tensor>> Client::wait(RequestHandle handle, std::chrono::microseconds timeout) {
  Impl& impl = *impl_;
  if (Done usable = impl.usable(); !usable.ok()) return usable.error();
  const std::uint64_t deadline_ns = deadline_after(timeout);
  RequestTable::Entry* entry = impl.requests.find(handle.id);
  if (entry == nullptr || entry->abandoned) {
    return {ErrorCode::kInvalidArgument, "unknown request handle (collected already?)"};
  }
  if (!entry->done && !entry->cancelled) {
    Done waited = impl.sidecar_went(
        impl.requests.wait_until([&] { return entry->done || entry->cancelled; }, deadline_ns, impl.spin_ns));
    if (!waited.ok() && waited.code() != ErrorCode::kSidecarGone) {
      // Its region stays reserved until the answer comes; the answer is then dropped.
      if (waited.code() == ErrorCode::kTimeout) {
        entry->abandoned = true;
        return {ErrorCode::kTimeout, "no answer from sidecar '" + impl.name + "' within the timeout"};
      }
      return waited.error();
    }
  }
  return impl.collect(handle.id);
}

bool Client::cancel(RequestHandle handle) {
  Impl& impl = *impl_;
  if (!impl.usable().ok() || !impl.connection) return false;
  RequestTable::Entry* entry = impl.requests.find(handle.id);
  if (entry == nullptr || entry->done || entry->abandoned || entry->cancelled || !entry->in_flight) return false;
  // The sidecar reads the word before it runs the request; one it has started runs to the end.
  reinterpret_cast<std::atomic<std::uint64_t>*>(impl.connection->arena() + entry->offset)
      ->store(1, std::memory_order_release);
  entry->cancelled = true;
  return true;
}

Result<std::string> Client::flush_cache(std::chrono::microseconds timeout) {
  Impl& impl = *impl_;
  if (Done usable = impl.usable(); !usable.ok()) return usable.error();
  reset_inputs();
  const std::uint64_t deadline_ns = deadline_after(timeout);
  if (Done connected = impl.ensure_connected(deadline_ns); !connected.ok()) return connected.error();
  const std::uint64_t id = impl.requests.next_id();
  RequestTable::Entry& entry = impl.requests.add(id);
  entry.request.request_id = id;
  entry.request.deadline_ns = deadline_ns;
  entry.request.flags = kRequestFlagFlushCache;
  if (Done posted = impl.requests.post(entry); !posted.ok()) {
    impl.requests.erase(id);
    return posted.error();
  }
  Done waited = impl.sidecar_went(impl.requests.wait_until([&] { return entry.done; }, deadline_ns, impl.spin_ns));
  if (!waited.ok()) {
    if (RequestTable::Entry* left = impl.requests.find(id)) {
      if (left->in_flight) left->abandoned = true;
      else impl.requests.erase(id);
    }
    return waited.error();
  }
  Result<std::string> result =
      entry.code == ErrorCode::kOk ? Result<std::string>(entry.message) : Result<std::string>(entry.code, entry.message);
  impl.requests.erase(id);
  return result;
}

}  // namespace sidecar
