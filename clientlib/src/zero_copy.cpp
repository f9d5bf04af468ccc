// The zero-copy path: input_buffer() hands out the arena itself to write inputs into, and run()
// hands back views of the outputs where the sidecar wrote them.
#include <algorithm>
#include <cstring>

#include "client_impl.hpp"
#include "sidecar/client.hpp"
#include "sidecar/shared/descriptor_check.hpp"

namespace sidecar {

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
    detail::CallClock call = detail::CallClock::after(impl.options.timeout);
    if (Done connected = impl.ensure_connected(call); !connected.ok()) {
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
  detail::CallClock call = detail::CallClock::after(timeout);
  // The request is taken over from `pending` (its used part: the rest is never read), which is left
  // empty for the next one.
  RequestDescriptor request;
  std::memcpy(&request, &impl.pending, request_bytes_used(impl.pending.input_count));
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
    call.now_ns = monotonic_ns();  // hashing large inputs takes long, and is no part of the wait
  }

  const std::uint64_t id = impl.requests.next_id();
  request.request_id = id;
  // The sidecar drops the request unrun once this passes: an abandoned request costs no forward.
  request.deadline_ns = call.deadline_ns;
  RequestTable::Entry& entry = impl.requests.add(id);
  entry.in_place = true;
  entry.offset = 0;
  entry.bytes = arena_bytes;
  entry.cache_outcome = impl.last_cache_outcome;
  if (Done posted = impl.requests.post(entry, request, call.now_ns); !posted.ok()) {
    impl.requests.erase(id);
    return posted.error();
  }
  Done waited = impl.sidecar_went(
      impl.requests.wait_until([&] { return entry.done; }, call));
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

}  // namespace sidecar
