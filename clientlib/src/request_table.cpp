#include "request_table.hpp"

#include <algorithm>
#include <cstring>

#include "sidecar/shared/descriptor_check.hpp"

namespace sidecar {

void RequestTable::attach(Connection& connection) {
  connection_ = &connection;
  requests_ = SpscProducer<RequestRing>(&connection.channel().requests);
  responses_ = SpscConsumer<ResponseRing>(&connection.channel().responses);
  woke_sidecar_at_post_ = false;
  // Offsets in the last connection's arena: a new one may be smaller.
  last_inputs_ = ArenaSpan{};
  last_outputs_ = ArenaSpan{};
}

void RequestTable::fail_in_flight(ErrorCode code, const std::string& message) {
  for (auto it = entries_.begin(); it != entries_.end();) {
    Entry& entry = it->second;
    if (!entry.in_flight) {
      ++it;
      continue;
    }
    entry.in_flight = false;
    if (entry.abandoned) {
      it = entries_.erase(it);
      continue;
    }
    entry.done = true;
    if (!entry.cancelled) {
      entry.code = code;
      entry.message = message;
    }
    ++it;
  }
  in_flight_ = 0;
}

RequestTable::Entry& RequestTable::add(std::uint64_t id) {
  if (spare_.empty()) return entries_.try_emplace(entries_.end(), id)->second;
  spare_.key() = id;
  Entry& entry = spare_.mapped();
  static_cast<EntryState&>(entry) = EntryState{};
  entry.message.clear();
  entry.outputs.clear();
  return entries_.insert(entries_.end(), std::move(spare_))->second;
}

void RequestTable::erase(std::uint64_t id) {
  auto node = entries_.extract(id);
  if (spare_.empty()) spare_ = std::move(node);
}

RequestTable::Entry* RequestTable::find(std::uint64_t id) {
  auto it = entries_.find(id);
  return it == entries_.end() ? nullptr : &it->second;
}

std::uint64_t RequestTable::abandoned_in_flight() const {
  std::uint64_t count = 0;
  for (const auto& [id, entry] : entries_) count += entry.in_flight && entry.abandoned;
  return count;
}

std::optional<std::uint64_t> RequestTable::allocate_region(std::uint64_t bytes) const {
  const std::uint64_t arena_bytes = connection_->arena_bytes();
  const Entry* oldest = nullptr;
  const Entry* newest = nullptr;
  for (const auto& [id, entry] : entries_) {
    if (!entry.in_flight || entry.bytes == 0) continue;
    if (oldest == nullptr) oldest = &entry;
    newest = &entry;
  }
  if (oldest == nullptr) return bytes <= arena_bytes ? std::optional<std::uint64_t>(0) : std::nullopt;
  const std::uint64_t end = align_up(newest->offset + newest->bytes, kTensorAlignment);
  if (newest->offset >= oldest->offset) {
    if (end <= arena_bytes && bytes <= arena_bytes - end) return end;
    if (bytes <= oldest->offset) return 0;
    return std::nullopt;
  }
  if (end <= oldest->offset && bytes <= oldest->offset - end) return end;
  return std::nullopt;
}

Done RequestTable::post(Entry& entry, const RequestDescriptor& request, std::uint64_t call_began_ns) {
  RequestDescriptor* slot = requests_.try_claim();
  if (slot == nullptr) {
    if (requests_.corrupt()) return {ErrorCode::kProtocolError, "the request ring's indices are corrupt"};
    return {ErrorCode::kOverloaded, std::to_string(kRingCapacity) + " requests in flight on this client: wait for some first"};
  }
  // Only the used part of the 832-byte descriptor: this is the hot path.
  std::memcpy(slot, &request, request_bytes_used(request.input_count));
  if (request.input_count != 0) last_inputs_ = {request.inputs[0].offset, request.inputs[0].bytes};
  slot->posted_ns = call_began_ns;  // for the sidecar's latency metrics
  entry.outputs_allowed = OutputRegion{request.output_offset, request.output_capacity};
  requests_.publish();
  woke_sidecar_at_post_ = connection_->wake_sidecar();
  entry.in_flight = true;
  ++in_flight_;
  return {};
}

void RequestTable::pump() {
  if (connection_ == nullptr) return;
  bool took = false;
  while (const ResponseDescriptor* shared = responses_.front()) {
    // Beside the rest of the response's lines: the outputs are most likely where the last were.
    prefetch_for_read(connection_->arena() + last_outputs_.offset, last_outputs_.bytes);
    take_answer(*shared);
    responses_.pop();
    took = true;
  }
  // Nothing in flight: the sidecar is done with the arena and the next request's cell, which the
  // next call most likely writes where the last one did. Taken over now, while the caller reads
  // its outputs, they are not waited for then.
  if (took && in_flight_ == 0) {
    prefetch_for_write(requests_.next_cell(), sizeof requests_.next_cell()->fills + request_bytes_used(1));
    prefetch_for_write(connection_->arena() + last_inputs_.offset, last_inputs_.bytes);
  }
  // The sidecar takes a request only when its answer has a free slot: after freeing slots with
  // requests still queued, tell it, rather than leave it to its idle timer.
  if (took && in_flight_ != 0) connection_->wake_sidecar();
}

// Copies the answer at the front of the ring out and checks it: the status, the output count and
// every output's place (inside the arena and inside the region its request reserved).
bool RequestTable::take_answer(const ResponseDescriptor& shared) {
  ResponseDescriptor response;
  std::memcpy(&response, &shared, offsetof(ResponseDescriptor, outputs));
  auto it = entries_.find(response.request_id);
  if (it == entries_.end() || !it->second.in_flight) return false;
  Entry& entry = it->second;
  entry.in_flight = false;
  --in_flight_;
  if (entry.abandoned) {
    entries_.erase(it);
    return true;
  }
  entry.done = true;
  if (entry.cancelled) return true;  // wait() answers "cancelled"; nothing to keep
  entry.service = ServiceInfo{response.batch_size, response.service_order};
  if (response.flags & kResponseFlagFromCache) entry.cache_outcome = CacheOutcome::kHitInSidecar;
  const auto status = static_cast<Status>(response.status);
  entry.message.assign(shared.message, std::min<std::size_t>(response.message_length, kMessageBytes));
  if (status != Status::kOk) {
    entry.code = error_code_for(status);
    if (entry.message.empty()) entry.message = "the sidecar reported an error";
    return true;
  }
  const std::uint32_t count = response.output_count;
  if (count > kMaxTensors) {
    entry.code = ErrorCode::kProtocolError;
    entry.message = "the sidecar answered with " + std::to_string(count) + " outputs";
    return true;
  }
  std::memcpy(response.outputs, shared.outputs, sizeof(TensorDescriptor) * count);
  const std::uint64_t arena_bytes = connection_->arena_bytes();
  const std::uint8_t* arena = connection_->arena();
  for (std::uint32_t i = 0; i < count; ++i) {
    const TensorDescriptor& tensor = response.outputs[i];
    std::string problem = check_tensor(tensor, arena_bytes);
    if (problem.empty() && !entry.outputs_allowed.contains(tensor.offset, tensor.bytes)) {
      problem = "outside the output region";
    }
    if (!problem.empty()) {
      entry.code = ErrorCode::kProtocolError;
      entry.message = "output " + std::to_string(i) + ": " + problem;
      entry.outputs.clear();
      entry.placed_count = 0;
      return true;
    }
    if (i == 0) last_outputs_ = {tensor.offset, tensor.bytes};
    if (entry.in_place) {
      entry.placed[i] = tensor;
      continue;
    }
    Tensor& output = entry.outputs.emplace_back();
    output.dtype = static_cast<DType>(tensor.shape.dtype);
    output.shape.assign(tensor.shape.dims, tensor.shape.dims + tensor.shape.rank);
    output.data.resize(tensor.bytes);
    if (tensor.bytes) std::memcpy(output.data.data(), arena + tensor.offset, tensor.bytes);
  }
  if (entry.in_place) entry.placed_count = count;
  return true;
}

}  // namespace sidecar
