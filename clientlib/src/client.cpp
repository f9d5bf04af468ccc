// The Client's calls on submitted requests (infer, submit, wait, try_get, cancel), connecting,
// and flushing the cache. The zero-copy path is in zero_copy.cpp, status reading in status.cpp.
#include "sidecar/client.hpp"

#include <algorithm>
#include <atomic>
#include <cstring>

#include "client_impl.hpp"
#include "sidecar/shared/descriptor_check.hpp"
#include "sidecar/shared/runtime_dir.hpp"

namespace sidecar {

using detail::deadline_after;
using detail::dial_settings;
using detail::kLivenessCheckNs;

Client::Client(std::unique_ptr<Impl> impl) noexcept : impl_(std::move(impl)) {}
Client::Client(Client&&) noexcept = default;
Client& Client::operator=(Client&&) noexcept = default;
// Closing the socket is the whole goodbye: the sidecar reclaims the channel on the hang-up. In a
// forked child, closing the inherited copies hangs nothing up while the parent holds its own.
Client::~Client() = default;

const ModelInfo& Client::model() const noexcept {
  impl_->refresh_model_if_reloaded();
  return impl_->model;
}
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
  if (Done valid = detail::check_name(name); !valid.ok()) return valid.error();
  auto impl = std::make_unique<Impl>();
  impl->name = name;
  impl->options = options;
  impl->forks_seen_at_connect = Connection::forks_seen();
  impl->requests.set_spin_budget(
      static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(options.spin).count()));
  impl->cache_lookup = options.cache_lookup;
  Result<std::unique_ptr<Connection>> connection =
      Connection::open(name, dial_settings(options, ConnectKind::kAttach), deadline_after(options.timeout));
  if (!connection.ok()) return connection.error();
  impl->adopt(std::move(*connection));
  return Client(std::move(impl));
}

Result<std::vector<Tensor>> Client::infer(std::span<const TensorView> inputs, std::chrono::microseconds timeout,
                                          CachePolicy policy) {
  Impl& impl = *impl_;
  if (Done usable = impl.usable(); !usable.ok()) return usable.error();
  bool looked_up = false;
  if (policy == CachePolicy::kUse && impl.cache_lookup == CacheLookup::kInClient && !inputs.empty() &&
      inputs.size() <= kMaxTensors) {
    // A hit must come from the cache of a sidecar that still runs.
    detail::CallClock call = detail::CallClock::after(timeout);
    if (Done connected = impl.ensure_connected(call); !connected.ok()) {
      return connected.error();
    }
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
  detail::CallClock call = detail::CallClock::after(options.timeout);
  if (inputs.empty() || inputs.size() > kMaxTensors) {
    return {ErrorCode::kInvalidArgument, "between 1 and " + std::to_string(kMaxTensors) + " inputs per request"};
  }
  if (Done connected = impl.ensure_connected(call); !connected.ok()) return connected.error();
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
  request.deadline_ns = call.deadline_ns;
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
  impl.refresh_model_if_reloaded();
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
  entry.cache_outcome = impl.last_cache_outcome;  // kMiss or kNotUsed until the answer says otherwise
  // Read anew: copying large inputs in takes long, and is no part of the request's wait.
  if (Done posted = impl.requests.post(entry, request, monotonic_ns()); !posted.ok()) {
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
  const detail::CallClock call = detail::CallClock::after(timeout);
  RequestTable::Entry* entry = impl.requests.find(handle.id);
  if (entry == nullptr || entry->abandoned) {
    return {ErrorCode::kInvalidArgument, "unknown request handle (collected already?)"};
  }
  if (!entry->done && !entry->cancelled) {
    Done waited = impl.sidecar_went(
        impl.requests.wait_until([&] { return entry->done || entry->cancelled; }, call));
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

}  // namespace sidecar
