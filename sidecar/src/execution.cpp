#include "execution.hpp"

#include <algorithm>
#include <cstring>
#include <vector>

#include "output_sinks.hpp"
#include "rate_limited_log.hpp"
#include "sidecar/shared/clock.hpp"
#include "sidecar/shared/output_region.hpp"

namespace sidecar {
namespace {

constexpr std::uint64_t kFlushIntervalNs = 1'000'000'000;

RateLimitedWarning client_fault_warning;
RateLimitedWarning batch_fallback_warning;

// Latencies from a request's post are kept only when the client's clock reading is plausible: a
// client that sends none (0) or one from the future counts its status alone.
void record_metrics(MetricsRecorder& metrics, const TakenRequest& taken) noexcept {
  metrics.count_status(taken.response.status);
  // A flush or a health probe's ping is no inference: its latency would only blur the histograms.
  if (taken.request.flags & (kRequestFlagFlushCache | kRequestFlagPing)) return;
  SignatureLatencies* latencies = metrics.latencies(taken.signature_row);
  if (latencies == nullptr) return;
  if (taken.forward_ns != 0) metrics.record(latencies->inference, taken.forward_ns);
  const std::uint64_t posted = taken.request.posted_ns;
  if (posted == 0 || posted > taken.admitted_ns) return;
  metrics.record(latencies->queue_wait, taken.admitted_ns - posted);
  const std::uint64_t answered = taken.forward_ns != 0 ? taken.forward_end_ns : taken.admitted_ns;
  metrics.record(latencies->end_to_end, answered - posted);
}

}  // namespace

Executor::Executor(ResultCache* cache, ChannelTable& table, LeaderWake& wake, StatusPage& status)
    : cache_(cache), table_(table), wake_(wake), status_(status) {}

void Executor::execute(Work& work) {
  if (work.taken.size() == 1) {
    TakenRequest& taken = work.taken[0];
    if (admit(work, taken)) run_alone(work, taken);
    finish(work, taken);
    return;
  }
  std::vector<TakenRequest*> runnable;
  runnable.reserve(work.taken.size());
  for (TakenRequest& taken : work.taken) {
    if (admit(work, taken)) {
      runnable.push_back(&taken);
    } else {
      finish(work, taken);  // one bad request does not hold up, or fail, the others
    }
  }
  if (runnable.size() > 1 && !run_batched(work, runnable)) {
    // One by one, each finished before the next runs: a request's private copies of its inputs
    // and outputs (for the cache) live in the worker's buffers, which the next one reuses.
    for (TakenRequest* taken : runnable) {
      run_alone(work, *taken);
      finish(work, *taken);
    }
    return;
  }
  if (runnable.size() == 1) run_alone(work, *runnable[0]);
  for (TakenRequest* taken : runnable) finish(work, *taken);
}

// Answers a request without the model when it can: errors, a flush, a cancellation, a hit in the
// cache (the lookup left to us). True when the model must run.
bool Executor::admit(const Work& work, TakenRequest& taken) {
  ChannelSlot& slot = *taken.slot;
  const RequestDescriptor& request = taken.request;
  ResponseDescriptor& response = taken.response;
  clear_response_header(response, request.request_id);
  taken.store_result = false;
  taken.output_count = 0;
  taken.forward_ns = 0;
  taken.admitted_ns = monotonic_ns();

  const AdmissionVerdict verdict = admit_request(request, slot.arena_bytes, work.model->rules, taken.admitted_ns);
  taken.signature_row = verdict.signature_row;
  if (verdict.kind == AdmissionVerdict::Kind::kFlushCache) {
    flush_cache(response);
    return false;
  }
  if (verdict.kind == AdmissionVerdict::Kind::kPing) {
    set_message(response, "ready");
    return false;
  }
  if (verdict.kind == AdmissionVerdict::Kind::kRefuse) {
    response.status = static_cast<std::uint32_t>(verdict.status);
    set_message(response, verdict.message);
    warn_request_failed(slot, verdict.status, verdict.message);
    return false;
  }
  if (request.flags & kRequestFlagCancellable) {
    // In the client's arena, at an offset admission checked against the sidecar's own bounds.
    const auto* word = reinterpret_cast<const std::atomic<std::uint64_t>*>(slot.arena + request.cancel_offset);
    if (word->load(std::memory_order_acquire) != 0) {
      response.status = static_cast<std::uint32_t>(Status::kCancelled);
      set_message(response, "cancelled by the client");
      return false;
    }
  }
  const bool use_cache = cache_ != nullptr && !(request.flags & kRequestFlagBypassCache);
  if (use_cache && !(request.flags & kRequestFlagCacheChecked) && answer_from_cache(taken, response)) return false;
  if (use_cache) cache_->count_miss();
  taken.store_result = use_cache;  // until staging finds the entry too large
  return true;
}

void Executor::count_if_unwarmed(Work& work, const InputView* inputs, std::uint32_t count) {
  TensorShape shapes[kMaxTensors];
  for (std::uint32_t i = 0; i < count; ++i) shapes[i] = inputs[i].shape;
  const std::span<const TensorShape> these(shapes, count);
  // Forwards mostly repeat the shapes of the one before: one comparison instead of a lookup.
  if (same_shapes(these, work.last_warmed)) return;
  if (work.model->warmed.contains(these)) {
    work.last_warmed.assign(these.begin(), these.end());
  } else {
    work.metrics.count_unwarmed_forward();
  }
}

// Runs one request's forward by itself.
void Executor::run_alone(Work& work, TakenRequest& taken) {
  ChannelSlot& slot = *taken.slot;
  const RequestDescriptor& request = taken.request;
  ResponseDescriptor& response = taken.response;
  clear_response_header(response, request.request_id);
  response.batch_size = 1;
  if (taken.store_result) taken.store_result = stage_inputs(work, taken);
  InputView inputs[kMaxTensors];
  for (std::uint32_t i = 0; i < request.input_count; ++i) {
    inputs[i].shape = request.inputs[i].shape;
    inputs[i].data =
        taken.store_result ? const_cast<void*>(taken.staged[i].data) : slot.arena + request.inputs[i].offset;
  }
  if (taken.store_result) {
    taken.generation = cache_->generation();
    taken.key = compute_cache_key(taken.generation, slot.cache_scope,
                                  std::span<const TensorBytes>(taken.staged, request.input_count));
  }
  ArenaOutputSink sink(slot.arena, OutputRegion{request.output_offset, request.output_capacity}, response,
                       taken.store_result ? &work.outputs : nullptr);
  count_if_unwarmed(work, inputs, request.input_count);
  const std::uint64_t forward_start_ns = monotonic_ns();
  CallOutcome outcome = work.model->runner->run(std::span<const InputView>(inputs, request.input_count), sink);
  taken.forward_end_ns = monotonic_ns();
  taken.forward_ns = taken.forward_end_ns - forward_start_ns;
  work.metrics.count_forward(1);
  if (outcome.status != Status::kOk) {
    response.status = static_cast<std::uint32_t>(outcome.status);
    response.output_count = 0;
    set_message(response, outcome.message);
    warn_request_failed(slot, outcome.status, outcome.message);
    taken.store_result = false;
  } else if (taken.store_result) {
    taken.store_result = work.outputs.captured;
    if (!work.outputs.captured) cache_->count_too_large();
    taken.output_count = work.outputs.count;
    std::copy_n(work.outputs.tensors, work.outputs.count, taken.outputs);
  }
}

// Several compatible requests, already admitted, as one forward: their rows concatenated along dim
// 0 in a private buffer, the outputs split back by rows. False when the forward failed or its
// outputs cannot be split by rows; then no request has been answered and each must run alone.
bool Executor::run_batched(Work& work, std::span<TakenRequest*> batch) {
  const RequestDescriptor& first = batch[0]->request;
  const std::uint32_t input_count = first.input_count;
  std::uint64_t total_rows = 0;
  for (TakenRequest* taken : batch) total_rows += static_cast<std::uint64_t>(taken->request.inputs[0].shape.dims[0]);

  // Inputs: one section per model input, each kTensorAlignment-aligned, rows in batch order.
  std::uint64_t row_bytes[kMaxTensors];
  std::uint64_t section_bytes = 0;
  for (std::uint32_t i = 0; i < input_count; ++i) {
    row_bytes[i] = first.inputs[i].bytes / static_cast<std::uint64_t>(first.inputs[0].shape.dims[0]);
    section_bytes += align_up(row_bytes[i] * total_rows, kTensorAlignment);
  }
  work.staged_bytes.resize(section_bytes + kTensorAlignment);
  std::uint8_t* base = work.staged_bytes.data();
  base += align_up(reinterpret_cast<std::uintptr_t>(base), kTensorAlignment) - reinterpret_cast<std::uintptr_t>(base);
  InputView inputs[kMaxTensors];
  std::uint8_t* section = base;
  for (std::uint32_t i = 0; i < input_count; ++i) {
    inputs[i].shape = first.inputs[i].shape;
    inputs[i].shape.dims[0] = static_cast<std::int64_t>(total_rows);
    inputs[i].data = section;
    std::uint8_t* cursor = section;
    for (TakenRequest* taken : batch) {
      const TensorDescriptor& input = taken->request.inputs[i];
      std::memcpy(cursor, taken->slot->arena + input.offset, input.bytes);
      taken->staged[i] = TensorBytes{input.shape, cursor, input.bytes};
      cursor += input.bytes;
    }
    section += align_up(row_bytes[i] * total_rows, kTensorAlignment);
  }
  for (TakenRequest* taken : batch) {
    clear_response_header(taken->response, taken->request.request_id);
    taken->response.batch_size = static_cast<std::uint16_t>(batch.size());
    if (!taken->store_result) continue;
    std::uint64_t bytes = 0;
    for (std::uint32_t i = 0; i < input_count; ++i) bytes += taken->staged[i].bytes;
    if (cache_->output_room(bytes, input_count) == 0) {
      cache_->count_too_large();
      taken->store_result = false;
      continue;
    }
    taken->generation = cache_->generation();
    taken->key = compute_cache_key(taken->generation, taken->slot->cache_scope,
                                   std::span<const TensorBytes>(taken->staged, input_count));
  }

  BatchOutputSink sink(batch, total_rows, work.outputs);
  count_if_unwarmed(work, inputs, input_count);
  const std::uint64_t forward_start_ns = monotonic_ns();
  CallOutcome outcome = work.model->runner->run(std::span<const InputView>(inputs, input_count), sink);
  const std::uint64_t forward_end_ns = monotonic_ns();
  work.metrics.count_forward(batch.size());
  for (TakenRequest* taken : batch) {
    taken->forward_end_ns = forward_end_ns;
    taken->forward_ns = forward_end_ns - forward_start_ns;
  }
  if (outcome.status != Status::kOk) {
    batch_fallback_warning("a batch of {} requests failed ({}); running them one by one", batch.size(),
                           outcome.message.substr(0, 200));
    return false;
  }
  return true;
}

// Stores the result (before the answer goes out: a client that sends the same inputs again as soon
// as it has the answer finds them), posts the answer, and settles the channel's books.
void Executor::finish(Work& work, TakenRequest& taken) {
  if (taken.store_result) store_in_cache(taken);
  taken.response.service_order = taken.service_order;
  ChannelSlot& slot = *taken.slot;
  if (taken.response.output_count != 0) {
    slot.last_output_bytes.store(taken.response.outputs[0].bytes, std::memory_order_relaxed);
  }
  record_metrics(work.metrics, taken);
  // Up to the answer being ready, not sent: the wake-up that posting may cost is not the model's.
  if (taken.taken_ns != 0) slot.last_service_ns.store(monotonic_ns() - taken.taken_ns, std::memory_order_relaxed);
  post_response(slot, taken.response);
  // The last answer of a channel waiting to be reclaimed: wake the leader to reclaim it. Sequentially
  // consistent with the reclaim request, so that this worker or the leader sees the other.
  if (slot.in_flight.fetch_sub(1, std::memory_order_seq_cst) == 1 &&
      slot.reclaim_requested.load(std::memory_order_seq_cst)) {
    wake_.kick();
  }
}

void Executor::answer_without_running(ChannelSlot& slot, std::uint64_t request_id, Status status,
                                      const std::string& message) {
  ResponseDescriptor response;
  clear_response_header(response, request_id);
  response.status = static_cast<std::uint32_t>(status);
  set_message(response, message);
  post_response(slot, response);
}

// Copies only the parts of a response that are in use (the slot is 1.3 KB, a typical answer 160 B),
// then wakes the client if it sleeps.
void Executor::post_response(ChannelSlot& slot, const ResponseDescriptor& response) {
  {
    std::lock_guard lock(slot.response_mutex);
    ResponseDescriptor* target = slot.responses.try_claim();
    if (target == nullptr) {
      // Cannot happen with an honest client: the leader takes a request only when a response slot
      // is free for it. A client that rewound the ring's head loses its answer.
      client_fault_warning("client {} (pid {}): response ring full or corrupt; dropping response {}", slot.index,
                           slot.peer_pid, response.request_id);
      return;
    }
    std::memcpy(target, &response, offsetof(ResponseDescriptor, outputs));
    std::memcpy(target->outputs, response.outputs, sizeof(TensorDescriptor) * response.output_count);
    std::memcpy(target->message, response.message, response.message_length);
    slot.responses.publish();
    slot.responses_posted.store(slot.responses.published(), std::memory_order_release);
  }
  status_.clients.requests.fetch_add(1, std::memory_order_relaxed);
  // Pairs with the fence after the client's store of client_waiting, before its last look at the
  // ring: either it sees this response or this sees its flag. Taking the flag back means one
  // wake-up per sleep, however many answers land meanwhile.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  wake_client_if_sleeping(slot);
}

// The client left the lookup to us. Its inputs are read where they are, in its arena: a client that
// changes them meanwhile can only get itself a wrong answer, never put one in the cache.
bool Executor::answer_from_cache(const TakenRequest& taken, ResponseDescriptor& response) {
  const ChannelSlot& slot = *taken.slot;
  const RequestDescriptor& request = taken.request;
  TensorBytes inputs[kMaxTensors];
  for (std::uint32_t i = 0; i < request.input_count; ++i) {
    inputs[i] = TensorBytes{request.inputs[i].shape, slot.arena + request.inputs[i].offset, request.inputs[i].bytes};
  }
  std::uint32_t output_count = 0;
  const auto hit = lookup_into_arena(cache_->view(), slot.cache_scope,
                                     std::span<const TensorBytes>(inputs, request.input_count), slot.arena,
                                     OutputRegion{request.output_offset, request.output_capacity}, response.outputs,
                                     output_count);
  if (!hit) return false;
  response.output_count = static_cast<std::uint16_t>(output_count);
  response.flags |= kResponseFlagFromCache;
  cache_->count_sidecar_hit();
  cache_->touch(hit->slot, hit->sequence);
  return true;
}

// Copies the inputs out of the client's arena for a result that will be cached. False when the
// entry would exceed the size cap anyway: then there is nothing to copy for.
bool Executor::stage_inputs(Work& work, TakenRequest& taken) {
  const RequestDescriptor& request = taken.request;
  const std::uint8_t* arena = taken.slot->arena;
  std::uint64_t total = 0;
  for (std::uint32_t i = 0; i < request.input_count; ++i) total += request.inputs[i].bytes;
  const std::uint64_t output_room = cache_->output_room(total, request.input_count);
  if (output_room == 0) {
    cache_->count_too_large();
    return false;
  }
  // Each input at kTensorAlignment, as in the arena: the model sees the same alignment either way.
  work.staged_bytes.resize(total + (kTensorAlignment - 1) * (request.input_count + 1));
  std::uint8_t* base = work.staged_bytes.data();
  std::uint64_t cursor =
      align_up(reinterpret_cast<std::uintptr_t>(base), kTensorAlignment) - reinterpret_cast<std::uintptr_t>(base);
  for (std::uint32_t i = 0; i < request.input_count; ++i) {
    const TensorDescriptor& input = request.inputs[i];
    std::memcpy(base + cursor, arena + input.offset, input.bytes);
    taken.staged[i] = TensorBytes{input.shape, base + cursor, input.bytes};
    cursor = align_up(cursor + input.bytes, kTensorAlignment);
  }
  work.outputs.limit = output_room;
  return true;
}

void Executor::store_in_cache(TakenRequest& taken) {
  const std::span<const TensorBytes> inputs(taken.staged, taken.request.input_count);
  // A model may write into its inputs (in-place ops): then the result does not belong to the key.
  if (compute_cache_key(taken.generation, taken.slot->cache_scope, inputs) != taken.key) return;
  cache_->insert(taken.key, taken.generation, inputs, std::span<const TensorBytes>(taken.outputs, taken.output_count));
}

void Executor::flush_cache(ResponseDescriptor& response) {
  if (cache_ == nullptr) {
    response.status = static_cast<std::uint32_t>(Status::kInvalidRequest);
    set_message(response, "this sidecar has no result cache (--cache-bytes 0)");
    return;
  }
  // Any client may flush, and a flush drops every result being computed: at most one a second, so
  // that a client flushing in a loop cannot turn the cache off for everyone.
  const std::uint64_t now = monotonic_ns();
  const std::uint64_t last = last_flush_ns_.load(std::memory_order_relaxed);
  if (last != 0 && now - last < kFlushIntervalNs) {
    response.status = static_cast<std::uint32_t>(Status::kOverloaded);
    set_message(response, "the cache was flushed less than a second ago; try again");
    return;
  }
  last_flush_ns_.store(now, std::memory_order_relaxed);
  const ResultCache::Flushed flushed = cache_->flush();
  spdlog::info("result cache flushed on request: {} entries, {} bytes", flushed.entries, flushed.bytes);
  set_message(response, "flushed " + std::to_string(flushed.entries) + " entries (" + std::to_string(flushed.bytes) +
                            " bytes); cache generation is now " + std::to_string(cache_->generation()));
}

}  // namespace sidecar
