#include "sidecar/client.hpp"

#include <unistd.h>

#include <algorithm>
#include <boost/interprocess/exceptions.hpp>
#include <cstring>
#include <map>
#include <thread>

#include "sidecar/shared/cache_reader.hpp"
#include "sidecar/shared/descriptor_check.hpp"
#include "sidecar/shared/output_region.hpp"
#include "sidecar/shared/process_identity.hpp"
#include "sidecar/shared/segment.hpp"

namespace sidecar {

std::string describe(DType dtype, std::span<const std::int64_t> shape) {
  std::string text = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i) text += ", ";
    text += std::to_string(shape[i]);
  }
  return text + "] " + std::string(dtype_name(dtype));
}

const char* error_code_name(ErrorCode code) noexcept {
  switch (code) {
    case ErrorCode::kOk: return "ok";
    case ErrorCode::kNotRunning: return "not running";
    case ErrorCode::kNotReady: return "not ready";
    case ErrorCode::kLayoutMismatch: return "layout mismatch";
    case ErrorCode::kNoFreeChannel: return "no free channel";
    case ErrorCode::kInvalidArgument: return "invalid argument";
    case ErrorCode::kRejected: return "rejected";
    case ErrorCode::kModelError: return "model error";
    case ErrorCode::kUnsupportedOutput: return "unsupported output";
    case ErrorCode::kOutputTooLarge: return "output too large";
    case ErrorCode::kTimeout: return "timeout";
    case ErrorCode::kSidecarGone: return "sidecar gone";
    case ErrorCode::kShuttingDown: return "shutting down";
    case ErrorCode::kDeadlineExceeded: return "deadline exceeded";
    case ErrorCode::kOverloaded: return "overloaded";
    case ErrorCode::kCancelled: return "cancelled";
    case ErrorCode::kBusy: return "busy";
    case ErrorCode::kProtocolError: return "protocol error";
  }
  return "unknown";
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

// CLOCK_MONOTONIC nanoseconds `timeout` from now; a huge timeout saturates instead of wrapping.
std::uint64_t deadline_after(std::chrono::microseconds timeout) {
  const std::uint64_t now = monotonic_ns();
  if (timeout.count() <= 0) return now;
  const auto micros = static_cast<std::uint64_t>(timeout.count());
  if (micros > (~0ull - now) / 1000u) return ~0ull;
  return now + micros * 1000u;
}

// How often a waiting call checks that the sidecar process still exists.
constexpr std::uint64_t kLivenessCheckNs = 50'000'000;

ErrorCode error_code_for(Status status) {
  switch (status) {
    case Status::kOk: return ErrorCode::kOk;
    case Status::kInvalidRequest: return ErrorCode::kRejected;
    case Status::kModelError: return ErrorCode::kModelError;
    case Status::kUnsupportedOutput: return ErrorCode::kUnsupportedOutput;
    case Status::kOutputTooLarge: return ErrorCode::kOutputTooLarge;
    case Status::kDeadlineExceeded: return ErrorCode::kDeadlineExceeded;
    case Status::kOverloaded: return ErrorCode::kOverloaded;
    case Status::kCancelled: return ErrorCode::kCancelled;
    case Status::kShuttingDown: return ErrorCode::kShuttingDown;
    case Status::kInternal: return ErrorCode::kProtocolError;
  }
  return ErrorCode::kProtocolError;
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

// Why a mapped cache segment must not be used by clients of the sidecar in `header`, or "". Anyone
// may create files in /dev/shm, and the pid and start time in a header are public: a cache counts
// as the sidecar's only if the sidecar's user owns it, as it owns the main segment, and nobody
// else may write it.
std::string cache_trust_problem(const SegmentMapping& cache_segment, const SegmentMapping& main_segment) {
  const std::string name = cache_segment.name();
  if (std::string problem = check_cache_layout(cache_segment.base(), cache_segment.size(), name); !problem.empty()) {
    return problem;
  }
  const SegmentHeader& header = *main_segment.header();
  const auto& cache_header = *reinterpret_cast<const CacheHeader*>(cache_segment.base());
  if (cache_header.sidecar_pid != header.sidecar_pid || cache_header.sidecar_start_time != header.sidecar_start_time) {
    return "cache segment " + name + " belongs to another sidecar process";
  }
  const std::optional<uid_t> sidecar_uid = process_uid(header.sidecar_pid);
  if (!sidecar_uid || cache_segment.owner_uid() != *sidecar_uid ||
      cache_segment.owner_uid() != main_segment.owner_uid()) {
    return "cache segment " + name + " is not owned by the sidecar's user; ignoring it";
  }
  if (cache_segment.mode_bits() & 0022) {
    return "cache segment " + name + " is writable by others than the sidecar; ignoring it";
  }
  return {};
}

}  // namespace

struct Client::Impl {
  SegmentMapping segment;
  std::string instance;
  ModelInfo model;
  std::uint32_t channel_index = 0;
  Channel* channel = nullptr;
  std::uint8_t* arena = nullptr;
  std::uint64_t arena_bytes = 0;
  SpscProducer<RequestRing> requests;
  SpscConsumer<ResponseRing> responses;
  std::uint64_t spin_ns = 0;

  // The sidecar's result cache, mapped read-only; not attached when it has none.
  SegmentMapping cache_segment;
  CacheView cache;
  CacheLookup cache_lookup = CacheLookup::kInClient;
  CacheOutcome last_cache_outcome = CacheOutcome::kNotUsed;
  SpscProducer<HitLogRing> hit_log;
  ServiceInfo last_service;

  std::uint64_t next_request_id = 1;
  // A request that timed out: the sidecar may still write its outputs into the arena, so the arena
  // is not reused until its answer arrives.
  std::uint64_t unanswered_request_id = 0;

  // Requests submitted with submit() (infer() too), by id: ids grow, so the map's order is the
  // order their arena regions were allocated in, which the allocator relies on.
  struct Submitted {
    std::uint64_t offset = 0;  // region in the arena: cancel word, inputs, outputs
    std::uint64_t bytes = 0;   // 0 once the answer is in (or for a hit found here): region free
    RequestDescriptor request{};
    bool done = false;
    bool abandoned = false;  // its wait() timed out: dropped when its answer comes
    bool cancelled = false;
    ErrorCode code = ErrorCode::kOk;
    std::string message;
    std::vector<Tensor> outputs;
    CacheOutcome cache_outcome = CacheOutcome::kNotUsed;
    ServiceInfo service;
  };
  std::map<std::uint64_t, Submitted> submitted;
  std::uint64_t submitted_in_flight = 0;  // entries whose answer has not come yet

  // The request being assembled by input_buffer().
  RequestDescriptor pending{};
  std::uint64_t arena_cursor = 0;

  // Outputs of the last run(): copies of the descriptors, views into the arena.
  std::vector<std::int64_t> output_dims;
  std::vector<TensorView> output_views;
  std::uint64_t last_liveness_check_ns = 0;

  ~Impl() {
    if (channel != nullptr) {
      channel->state.store(static_cast<std::uint32_t>(ChannelState::kDetaching), std::memory_order_release);
    }
  }

  // A stopping sidecar still finishes (or refuses with "shutting down") what it was given: only
  // the process being gone means no answer will come.
  bool sidecar_alive() const {
    const SegmentHeader& header = *segment.header();
    return process_alive(header.sidecar_pid, header.sidecar_start_time);
  }

  // Before the arena is reused: waits until `deadline_ns` for the answer to a request that timed
  // out earlier, whose outputs the sidecar may still write into the arena.
  std::pair<ErrorCode, std::string> settle_unanswered(std::uint64_t deadline_ns) {
    if (unanswered_request_id == 0) return {ErrorCode::kOk, {}};
    auto [code, message] = await_response(unanswered_request_id, deadline_ns);
    if (code == ErrorCode::kTimeout) {
      return {ErrorCode::kBusy, "an earlier request that timed out is still running in the sidecar"};
    }
    if (code != ErrorCode::kOk) return {code, message};
    responses.pop();
    unanswered_request_id = 0;
    return {ErrorCode::kOk, {}};
  }

  // Maps the sidecar's cache read-only, if it has one. Without it, the sidecar does the lookups.
  std::pair<ErrorCode, std::string> attach_cache() {
    const std::string name = cache_segment_name(instance);
    try {
      cache_segment = SegmentMapping::open(name, /*read_only=*/true);
    } catch (const std::exception&) {
      return {ErrorCode::kOk, {}};  // no cache (--cache-bytes 0)
    }
    const std::string problem = cache_trust_problem(cache_segment, segment);
    if (problem.rfind("layout version mismatch", 0) == 0) return {ErrorCode::kLayoutMismatch, problem};
    if (!problem.empty()) {
      // Stale (an earlier sidecar of this name, another model's results) or not the sidecar's:
      // look nothing up here; the sidecar still uses its own cache if it has one.
      cache_segment = SegmentMapping();
      return {ErrorCode::kOk, {}};
    }
    cache = CacheView(cache_segment.base());
    return {ErrorCode::kOk, {}};
  }

  // Once the sidecar is gone its cache may hold a model that is no longer served; and it pins
  // its memory in /dev/shm for as long as it is mapped.
  void forget_cache() {
    cache = CacheView();
    cache_segment = SegmentMapping();
  }

  bool looks_up_here(CachePolicy policy) const noexcept {
    return policy == CachePolicy::kUse && cache_lookup == CacheLookup::kInClient && cache.attached();
  }

  // Flags for a request that missed (or skipped) the lookup here.
  std::uint32_t cache_flags(CachePolicy policy) {
    if (!cache.attached()) {
      // The sidecar has no cache (or one this client cannot read, and then it looks up itself).
      last_cache_outcome = CacheOutcome::kNotUsed;
      return policy == CachePolicy::kBypass || cache_lookup == CacheLookup::kOff ? kRequestFlagBypassCache
                                                                                 : kRequestFlagNone;
    }
    if (policy == CachePolicy::kBypass || cache_lookup == CacheLookup::kOff) {
      last_cache_outcome = CacheOutcome::kNotUsed;
      return kRequestFlagBypassCache;
    }
    last_cache_outcome = CacheOutcome::kMiss;  // until the sidecar says it answered from its cache
    return looks_up_here(policy) ? kRequestFlagCacheChecked : kRequestFlagNone;
  }

  // A hit found here: counted, and reported so that the sidecar keeps the entry warm. Reports that
  // do not fit the log are dropped; they only inform the eviction order.
  void record_client_hit(const CacheHit& hit) {
    last_cache_outcome = CacheOutcome::kHitInClient;
    channel->cache_hits.store(channel->cache_hits.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    if (CacheHitRecord* record = hit_log.try_claim()) {
      *record = CacheHitRecord{hit.slot, 0, hit.sequence};
      hit_log.publish();
    }
  }

  // A hit needs no answer from the sidecar, so this is where a client notices a dead sidecar whose
  // cache it still maps: at most every kLivenessCheckNs.
  bool sidecar_alive_for_hits() {
    const std::uint64_t now = monotonic_ns();
    if (now - last_liveness_check_ns < kLivenessCheckNs) return true;
    last_liveness_check_ns = now;
    if (sidecar_alive()) return true;
    forget_cache();
    return false;
  }

  // Looks the pending request's inputs (in the arena) up and, on a hit, places the outputs in the
  // arena's output region as the sidecar would and points output_views at them.
  bool answer_pending_from_cache(const RequestDescriptor& request) {
    TensorBytes inputs[kMaxTensors];
    for (std::uint32_t i = 0; i < request.input_count; ++i) {
      inputs[i] = TensorBytes{request.inputs[i].shape, arena + request.inputs[i].offset, request.inputs[i].bytes};
    }
    TensorDescriptor outputs[kMaxTensors];
    std::uint32_t output_count = 0;
    const auto hit =
        lookup_into_arena(cache, std::span<const TensorBytes>(inputs, request.input_count), arena,
                          OutputRegion{request.output_offset, request.output_capacity}, outputs, output_count);
    if (!hit) return false;
    record_client_hit(*hit);
    set_output_views(outputs, output_count);
    return true;
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
                     arena + tensor.offset, tensor.bytes});
    }
  }

  // Posts `request` and waits for its answer, which is then at responses.front().
  std::pair<ErrorCode, std::string> post_and_await(RequestDescriptor& request, std::uint64_t deadline_ns) {
    request.request_id = next_request_id++;
    // The sidecar drops the request unrun once this passes: an abandoned request costs no forward.
    request.deadline_ns = deadline_ns;
    RequestDescriptor* slot = requests.try_claim();
    if (slot == nullptr) return {ErrorCode::kProtocolError, "the request ring is full or corrupt"};
    // Only the used part of the 832-byte descriptor: this is the hot path.
    std::memcpy(slot, &request, offsetof(RequestDescriptor, inputs) + sizeof(TensorDescriptor) * request.input_count);
    requests.publish();
    segment.header()->request_bell.ring();
    auto [code, message] = await_response(request.request_id, deadline_ns);
    if (code == ErrorCode::kTimeout) unanswered_request_id = request.request_id;
    return {code, message};
  }

  // A free region of `bytes` for a submitted request: after the newest region in use, wrapping to
  // the start of the arena, never over a region whose answer has not come (the sidecar may still
  // write its outputs there). The zero-copy path uses the whole arena and is not mixed with these.
  std::optional<std::uint64_t> allocate_region(std::uint64_t bytes) const {
    const Submitted* oldest = nullptr;
    const Submitted* newest = nullptr;
    for (const auto& [id, entry] : submitted) {
      if (entry.bytes == 0) continue;
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

  // Bytes the outputs of a request with these inputs take, from the shapes the sidecar published
  // (scaled by rows for a batchable signature); 0 when unknown.
  std::uint64_t expected_output_bytes(const RequestDescriptor& request) const {
    for (const ModelInfo::Signature& signature : model.signatures) {
      if (signature.inputs.size() != request.input_count) continue;
      bool exact = true;
      bool rows_match = model.max_batch > 1;
      const std::int64_t rows = request.inputs[0].shape.rank ? request.inputs[0].shape.dims[0] : 0;
      for (std::size_t i = 0; i < signature.inputs.size(); ++i) {
        const auto& [dtype, dims] = signature.inputs[i];
        const TensorShape& got = request.inputs[i].shape;
        const bool same_kind = static_cast<std::uint8_t>(dtype) == got.dtype && dims.size() == got.rank;
        exact = exact && same_kind && std::equal(dims.begin(), dims.end(), got.dims);
        rows_match = rows_match && same_kind && !dims.empty() && dims[0] == 1 && got.dims[0] == rows &&
                     std::equal(dims.begin() + 1, dims.end(), got.dims + 1);
      }
      if (!exact && !rows_match) continue;
      std::uint64_t sizes[kMaxTensors];
      std::uint32_t count = 0;
      for (const auto& [dtype, dims] : signature.outputs) {
        if (count == kMaxTensors) break;
        std::uint64_t size = dtype_size(dtype);
        for (std::size_t d = 0; d < dims.size(); ++d)
          size *= static_cast<std::uint64_t>(d == 0 && !exact ? rows : dims[d]);
        sizes[count++] = size;
      }
      return OutputRegion::packed_bytes(sizes, count);
    }
    return 0;
  }

  // Takes the answer at the front of the response ring for a submitted request: copies its outputs
  // out and frees its region. False when the answer is not for a submitted request.
  bool take_submitted_answer(const ResponseDescriptor& shared) {
    ResponseDescriptor response;
    std::memcpy(&response, &shared, offsetof(ResponseDescriptor, outputs));
    auto it = submitted.find(response.request_id);
    if (it == submitted.end() || it->second.done || it->second.bytes == 0) return false;
    Submitted& entry = it->second;
    entry.bytes = 0;
    --submitted_in_flight;
    if (entry.abandoned || entry.cancelled) {
      if (entry.abandoned)
        submitted.erase(it);
      else
        entry.done = true;  // wait() already answers "cancelled"; nothing to keep
      return true;
    }
    entry.done = true;
    entry.service = ServiceInfo{response.batch_size, response.service_order};
    if (response.flags & kResponseFlagFromCache) entry.cache_outcome = CacheOutcome::kHitInSidecar;
    const auto status = static_cast<Status>(response.status);
    if (status != Status::kOk) {
      entry.code = error_code_for(status);
      entry.message.assign(shared.message, std::min<std::size_t>(response.message_length, kMessageBytes));
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
    for (std::uint32_t i = 0; i < count; ++i) {
      const TensorDescriptor& tensor = response.outputs[i];
      std::string problem = check_tensor(tensor, arena_bytes);
      if (problem.empty() &&
          (tensor.offset < entry.request.output_offset ||
           tensor.offset + tensor.bytes > entry.request.output_offset + entry.request.output_capacity)) {
        problem = "outside the output region";
      }
      if (!problem.empty()) {
        entry.code = ErrorCode::kProtocolError;
        entry.message = "output " + std::to_string(i) + ": " + problem;
        entry.outputs.clear();
        return true;
      }
      Tensor& output = entry.outputs.emplace_back();
      output.dtype = static_cast<DType>(tensor.shape.dtype);
      output.shape.assign(tensor.shape.dims, tensor.shape.dims + tensor.shape.rank);
      output.data.resize(tensor.bytes);
      if (tensor.bytes) std::memcpy(output.data.data(), arena + tensor.offset, tensor.bytes);
    }
    return true;
  }

  // Takes every answer waiting in the response ring. Answers to a zero-copy request given up on
  // earlier are dropped here too.
  void pump() {
    bool took = false;
    while (const ResponseDescriptor* shared = responses.front()) {
      if (!take_submitted_answer(*shared) && shared->request_id == unanswered_request_id) unanswered_request_id = 0;
      responses.pop();
      took = true;
    }
    // The sidecar takes a request only when its answer has a free slot: after freeing slots with
    // requests still queued, tell it, rather than leave it to its idle timer.
    if (took && submitted_in_flight != 0) segment.header()->request_bell.ring();
  }

  // Waits for the answer to `request_id`; on success the response is at responses.front().
  std::pair<ErrorCode, std::string> await_response(std::uint64_t request_id, std::uint64_t deadline_ns) {
    std::uint64_t spin_until = monotonic_ns() + spin_ns;
    while (true) {
      if (const ResponseDescriptor* response = responses.front()) {
        if (response->request_id == request_id) return {ErrorCode::kOk, {}};
        take_submitted_answer(*response);  // or the answer to a request given up on earlier
        responses.pop();
        continue;
      }
      if (responses.corrupt()) return {ErrorCode::kProtocolError, "the response ring's indices are corrupt"};
      const std::uint64_t now = monotonic_ns();
      if (now >= deadline_ns)
        return {ErrorCode::kTimeout, "no answer from sidecar '" + instance + "' within the timeout"};
      if (now < spin_until) {
        cpu_relax();
        continue;
      }
      if (now - last_liveness_check_ns >= kLivenessCheckNs) {
        last_liveness_check_ns = now;
        if (!sidecar_alive()) {
          forget_cache();
          return {ErrorCode::kSidecarGone, "sidecar '" + instance + "' stopped while the request was in flight"};
        }
      }
      const std::uint64_t sleep = std::min(deadline_ns - now, kLivenessCheckNs);
      channel->response_bell.wait([&] { return responses.has_data(); }, std::chrono::nanoseconds(sleep));
    }
  }

  // Copies and checks the response at the front, fills output views, pops it.
  std::pair<ErrorCode, std::string> take_response(const RequestDescriptor& request) {
    const ResponseDescriptor* shared = responses.front();
    ResponseDescriptor response;
    std::memcpy(&response, shared, offsetof(ResponseDescriptor, outputs));
    const auto status = static_cast<Status>(response.status);
    if (status != Status::kOk) {
      const std::size_t length = std::min<std::size_t>(response.message_length, kMessageBytes);
      std::string message(shared->message, length);
      responses.pop();
      return {error_code_for(status), message.empty() ? "the sidecar reported an error" : message};
    }
    const std::uint32_t count = response.output_count;
    if (count > kMaxTensors) {
      responses.pop();
      return {ErrorCode::kProtocolError, "the sidecar answered with " + std::to_string(count) + " outputs"};
    }
    std::memcpy(response.outputs, shared->outputs, sizeof(TensorDescriptor) * count);
    responses.pop();
    for (std::uint32_t i = 0; i < count; ++i) {
      const TensorDescriptor& tensor = response.outputs[i];
      std::string problem = check_tensor(tensor, arena_bytes);
      if (problem.empty() && (tensor.offset < request.output_offset ||
                              tensor.offset + tensor.bytes > request.output_offset + request.output_capacity)) {
        problem = "outside the output region";
      }
      if (!problem.empty()) return {ErrorCode::kProtocolError, "output " + std::to_string(i) + ": " + problem};
    }
    if (response.flags & kResponseFlagFromCache) last_cache_outcome = CacheOutcome::kHitInSidecar;
    last_service = ServiceInfo{response.batch_size, response.service_order};
    set_output_views(response.outputs, count);
    return {ErrorCode::kOk, {}};
  }
};

Client::Client(std::unique_ptr<Impl> impl) noexcept : impl_(std::move(impl)) {}
Client::Client(Client&&) noexcept = default;
Client& Client::operator=(Client&&) noexcept = default;
Client::~Client() = default;

const ModelInfo& Client::model() const noexcept { return impl_->model; }
CacheOutcome Client::last_cache_outcome() const noexcept { return impl_->last_cache_outcome; }
ServiceInfo Client::last_service() const noexcept { return impl_->last_service; }
void Client::set_cache_lookup(CacheLookup lookup) noexcept { impl_->cache_lookup = lookup; }

void Client::reset_inputs() noexcept {
  impl_->pending.input_count = 0;
  impl_->arena_cursor = 0;
}
std::uint32_t Client::channel_index() const noexcept { return impl_->channel_index; }

Result<Client> Client::connect(const std::string& name, const ConnectOptions& options) {
  if (!is_valid_instance_name(name)) {
    return {ErrorCode::kInvalidArgument, "'" + name + "' is not a valid sidecar name"};
  }
  const std::string shm_name = segment_name(name);
  const auto deadline = std::chrono::steady_clock::now() + options.timeout;
  ErrorCode last_code = ErrorCode::kNotRunning;
  std::string last_message = "no sidecar named '" + name + "' is running (no segment " + shm_name + ")";
  auto impl = std::make_unique<Impl>();
  impl->instance = name;
  impl->spin_ns =
      static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(options.spin).count());

  // Wait for a live, ready sidecar.
  while (true) {
    try {
      impl->segment = SegmentMapping::open(shm_name);
      const std::string problem = check_segment_layout(impl->segment);
      const SegmentHeader& header = *impl->segment.header();
      if (problem.rfind("layout version mismatch", 0) == 0) return {ErrorCode::kLayoutMismatch, problem};
      if (!problem.empty()) {
        last_code = ErrorCode::kNotReady;
        last_message = problem;
      } else if (!process_alive(header.sidecar_pid, header.sidecar_start_time)) {
        last_code = ErrorCode::kNotRunning;
        last_message =
            "sidecar '" + name + "' (pid " + std::to_string(header.sidecar_pid) + ") is gone; its segment is stale";
      } else if (header.state.load(std::memory_order_acquire) != static_cast<std::uint32_t>(SidecarState::kReady)) {
        last_code = ErrorCode::kNotReady;
        last_message = "sidecar '" + name + "' is " + sidecar_state_name(header.state.load(std::memory_order_acquire)) +
                       ", not ready";
      } else {
        break;
      }
    } catch (const boost::interprocess::interprocess_exception&) {
      last_code = ErrorCode::kNotRunning;
      last_message = "no sidecar named '" + name + "' is running (no segment " + shm_name + ")";
    } catch (const std::exception& error) {
      last_code = ErrorCode::kNotRunning;
      last_message = "cannot map the segment of sidecar '" + name + "': " + error.what();
    }
    impl->segment = SegmentMapping();
    if (std::chrono::steady_clock::now() >= deadline) return {last_code, last_message};
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }

  SegmentHeader& header = *impl->segment.header();
  const SegmentGeometry geometry = SegmentGeometry::compute(header.channel_count, header.arena_bytes);
  ModelInfo& model = impl->model;
  model.model_path.assign(header.model.model_path, strnlen(header.model.model_path, kModelPathBytes));
  model.input_count = header.model.input_count;
  model.output_count = header.model.output_count;
  model.max_batch = std::max<std::uint32_t>(header.model.max_batch, 1);
  for (std::uint32_t s = 0; s < std::min(header.model.signature_count, kMaxSignatures); ++s) {
    model.signatures.push_back({to_pairs(header.model.signatures[s].inputs, header.model.input_count),
                                to_pairs(header.model.signatures[s].outputs, header.model.output_count)});
  }
  model.sidecar_pid = header.sidecar_pid;
  model.start_generation = header.start_generation;
  model.started_unix_ns = header.started_unix_ns;
  model.channel_count = header.channel_count;
  model.arena_bytes = geometry.arena_bytes;
  impl->cache_lookup = options.cache_lookup;
  if (auto [code, message] = impl->attach_cache(); code != ErrorCode::kOk) return {code, message};

  const std::uint64_t own_start_time = process_start_time(::getpid());
  // Claim a free channel: the CAS makes it ours; the sidecar recycles it when we detach or die.
  // When all are taken, wait (within the timeout) for the sidecar to recycle one of a client that
  // left: it checks every 100 ms.
  while (true) {
    for (std::uint32_t i = 0; i < header.channel_count; ++i) {
      auto* channel = reinterpret_cast<Channel*>(impl->segment.base() + geometry.channel_offset(i));
      std::uint32_t expected = static_cast<std::uint32_t>(ChannelState::kFree);
      if (channel->state.load(std::memory_order_relaxed) != expected) continue;
      if (!channel->state.compare_exchange_strong(expected, static_cast<std::uint32_t>(ChannelState::kClaimed),
                                                  std::memory_order_acq_rel)) {
        continue;
      }
      // Read before the claim, so that the window in which a claimed channel has no owner is two stores.
      channel->owner_start_time.store(own_start_time, std::memory_order_relaxed);
      channel->owner_pid.store(::getpid(), std::memory_order_release);
      impl->channel_index = i;
      impl->channel = channel;
      impl->arena = impl->segment.base() + geometry.arena_offset(i);
      impl->arena_bytes = geometry.arena_bytes;
      impl->requests = SpscProducer<RequestRing>(&channel->requests);
      impl->responses = SpscConsumer<ResponseRing>(&channel->responses);
      impl->hit_log = SpscProducer<HitLogRing>(&channel->cache_hit_log);
      header.active_channels[i / 64].fetch_or(1ull << (i % 64), std::memory_order_acq_rel);
      return Client(std::move(impl));
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      return {ErrorCode::kNoFreeChannel,
              "all " + std::to_string(header.channel_count) + " channels of sidecar '" + name + "' are in use"};
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

Result<std::span<std::byte>> Client::input_buffer(DType dtype, std::span<const std::int64_t> shape) {
  Impl& impl = *impl_;
  RequestDescriptor& request = impl.pending;
  // A refused input abandons the whole request being assembled, so run() cannot send half of it.
  auto refuse = [&](std::string message) -> Result<std::span<std::byte>> {
    impl.pending.input_count = 0;
    impl.arena_cursor = 0;
    return {ErrorCode::kInvalidArgument, std::move(message)};
  };
  if (request.input_count == 0) {
    // A new request: its inputs may only go where a late answer cannot land.
    auto [code, message] = impl.settle_unanswered(monotonic_ns());
    if (code != ErrorCode::kOk) return {code, message};
    impl.pump();
    if (impl.submitted_in_flight != 0) {
      return {ErrorCode::kBusy, std::to_string(impl.submitted_in_flight) +
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
  const std::uint64_t offset = align_up(impl.arena_cursor, kTensorAlignment);
  if (offset > impl.arena_bytes || bytes > impl.arena_bytes - offset) {
    return refuse("the inputs need more than the channel's " + std::to_string(impl.arena_bytes) +
                  " bytes of shared memory (sidecar --arena-bytes)");
  }
  tensor.offset = offset;
  tensor.bytes = bytes;
  impl.arena_cursor = offset + bytes;
  ++request.input_count;
  return std::span<std::byte>(reinterpret_cast<std::byte*>(impl.arena + offset), bytes);
}

Result<std::span<const TensorView>> Client::run(std::chrono::microseconds timeout, CachePolicy policy) {
  return send_pending(timeout, policy, /*looked_up=*/false);
}

Result<std::span<const TensorView>> Client::send_pending(std::chrono::microseconds timeout, CachePolicy policy,
                                                         bool looked_up) {
  Impl& impl = *impl_;
  const std::uint64_t deadline_ns = deadline_after(timeout);
  // The request is taken over from `pending`, which is left empty for the next one.
  RequestDescriptor& request = impl.pending;
  impl.arena_cursor = 0;
  struct ResetPending {
    RequestDescriptor& pending;
    ~ResetPending() { pending.input_count = 0; }
  } reset_pending{request};
  if (request.input_count == 0) return {ErrorCode::kInvalidArgument, "no inputs: call input_buffer() first"};
  // input_buffer() settled any earlier unanswered request before it handed out arena space.

  std::uint64_t inputs_end = 0;
  for (std::uint32_t i = 0; i < request.input_count; ++i) {
    inputs_end = std::max(inputs_end, request.inputs[i].offset + request.inputs[i].bytes);
  }
  request.output_offset = align_up(inputs_end, kTensorAlignment);
  request.output_capacity = request.output_offset < impl.arena_bytes ? impl.arena_bytes - request.output_offset : 0;
  if (request.output_capacity == 0) request.output_offset = 0;

  request.flags = impl.cache_flags(policy);
  impl.last_service = ServiceInfo{};
  if (impl.looks_up_here(policy) && !looked_up) {
    if (!impl.sidecar_alive_for_hits()) {
      return {ErrorCode::kSidecarGone, "sidecar '" + impl.instance + "' is gone"};
    }
    if (impl.answer_pending_from_cache(request)) return std::span<const TensorView>(impl.output_views);
  }

  auto [code, message] = impl.post_and_await(request, deadline_ns);
  if (code != ErrorCode::kOk) return {code, message};
  auto [taken, problem] = impl.take_response(request);
  if (taken != ErrorCode::kOk) return {taken, problem};
  return std::span<const TensorView>(impl.output_views);
}

Result<std::vector<Tensor>> Client::infer(std::span<const TensorView> inputs, std::chrono::microseconds timeout,
                                          CachePolicy policy) {
  Impl& impl = *impl_;
  bool looked_up = false;
  if (impl.looks_up_here(policy) && !inputs.empty() && inputs.size() <= kMaxTensors) {
    // The hot path of a hit: straight from the cache into the result, no request bookkeeping.
    if (auto hit = lookup_in_client(inputs); hit.has_value()) {
      impl.last_service = ServiceInfo{};
      return std::move(*hit);
    }
    looked_up = true;
  }
  auto handle = submit_request(inputs, SubmitOptions{timeout, policy}, looked_up);
  if (!handle.ok()) return {handle.code(), handle.message()};
  return wait(*handle, timeout);
}

Result<RequestHandle> Client::submit(std::span<const TensorView> inputs, const SubmitOptions& options) {
  return submit_request(inputs, options, /*looked_up=*/false);
}

Result<RequestHandle> Client::submit_request(std::span<const TensorView> inputs, const SubmitOptions& options,
                                             bool looked_up) {
  Impl& impl = *impl_;
  reset_inputs();
  const std::uint64_t deadline_ns = deadline_after(options.timeout);
  if (auto [code, message] = impl.settle_unanswered(monotonic_ns()); code != ErrorCode::kOk) return {code, message};
  impl.pump();
  if (inputs.empty() || inputs.size() > kMaxTensors) {
    return {ErrorCode::kInvalidArgument, "between 1 and " + std::to_string(kMaxTensors) + " inputs per request"};
  }
  if (impl.submitted_in_flight >= kRingCapacity) {
    // The bound that keeps a client from queueing without end: one ring's worth, all answerable.
    return {ErrorCode::kOverloaded,
            std::to_string(kRingCapacity) + " requests in flight on this client: wait for some first"};
  }
  const std::uint64_t id = impl.next_request_id++;
  impl.last_service = ServiceInfo{};

  if (impl.looks_up_here(options.cache) && !looked_up) {
    // Looked up in the caller's own buffers: a hit does not even copy the inputs to shared memory.
    if (auto hit = lookup_in_client(inputs); hit.has_value()) {
      if (!hit->ok()) return {hit->code(), hit->message()};
      Impl::Submitted& entry = impl.submitted[id];
      entry.done = true;
      entry.outputs = std::move(**hit);
      entry.cache_outcome = CacheOutcome::kHitInClient;
      return RequestHandle{id};
    }
  }

  // The region: the cancel word, then the inputs, then room for the outputs, each aligned.
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
    if (cursor > impl.arena_bytes) {
      return {ErrorCode::kInvalidArgument, "the inputs need more than the channel's " +
                                               std::to_string(impl.arena_bytes) +
                                               " bytes of shared memory (sidecar --arena-bytes)"};
    }
  }
  const std::uint64_t inputs_bytes = cursor;
  std::uint64_t output_bytes = impl.expected_output_bytes(request);
  std::optional<std::uint64_t> offset;
  if (output_bytes == 0) {
    // Outputs of unknown size: alone, the whole rest of the arena; beside others, a generous guess.
    output_bytes = impl.submitted_in_flight == 0 ? impl.arena_bytes - inputs_bytes
                                                 : std::max<std::uint64_t>(1 << 20, 2 * inputs_bytes);
  }
  const std::uint64_t region_bytes =
      std::min(impl.arena_bytes, align_up(inputs_bytes + output_bytes, kTensorAlignment));
  offset = impl.allocate_region(region_bytes);
  if (!offset) {
    return {ErrorCode::kOverloaded, "no room in the channel's arena beside the " +
                                        std::to_string(impl.submitted_in_flight) + " request(s) in flight"};
  }
  RequestDescriptor* slot = impl.requests.try_claim();
  if (slot == nullptr) {
    if (impl.requests.corrupt()) return {ErrorCode::kProtocolError, "the request ring's indices are corrupt"};
    return {ErrorCode::kOverloaded,
            std::to_string(kRingCapacity) + " requests in flight on this client: wait for some first"};
  }
  std::uint8_t* region = impl.arena + *offset;
  reinterpret_cast<std::atomic<std::uint64_t>*>(region)->store(0, std::memory_order_relaxed);
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    if (inputs[i].bytes) std::memcpy(region + request.inputs[i].offset, inputs[i].data, inputs[i].bytes);
    request.inputs[i].offset += *offset;
  }
  request.output_offset = *offset + inputs_bytes;
  request.output_capacity = region_bytes - inputs_bytes;
  request.cancel_offset = *offset;
  request.flags = impl.cache_flags(options.cache) | kRequestFlagCancellable;
  std::memcpy(slot, &request, offsetof(RequestDescriptor, inputs) + sizeof(TensorDescriptor) * request.input_count);
  impl.requests.publish();
  impl.segment.header()->request_bell.ring();

  Impl::Submitted& entry = impl.submitted[id];
  entry.offset = *offset;
  entry.bytes = region_bytes;
  entry.request = request;
  entry.cache_outcome = impl.last_cache_outcome;  // kMiss or kNotUsed until the answer says otherwise
  ++impl.submitted_in_flight;
  return RequestHandle{id};
}

namespace {
Result<std::vector<Tensor>> collect(Client::Impl& impl, std::map<std::uint64_t, Client::Impl::Submitted>::iterator it);
}

std::optional<Result<std::vector<Tensor>>> Client::try_get(RequestHandle handle) {
  Impl& impl = *impl_;
  impl.pump();
  auto it = impl.submitted.find(handle.id);
  if (it == impl.submitted.end() || it->second.abandoned) {
    return Result<std::vector<Tensor>>{ErrorCode::kInvalidArgument, "unknown request handle (collected already?)"};
  }
  if (it->second.cancelled) return collect(impl, it);
  if (!it->second.done) return std::nullopt;
  return collect(impl, it);
}

Result<std::vector<Tensor>> Client::wait(RequestHandle handle, std::chrono::microseconds timeout) {
  Impl& impl = *impl_;
  const std::uint64_t deadline_ns = deadline_after(timeout);
  auto it = impl.submitted.find(handle.id);
  if (it == impl.submitted.end() || it->second.abandoned) {
    return {ErrorCode::kInvalidArgument, "unknown request handle (collected already?)"};
  }
  std::uint64_t spin_until = monotonic_ns() + impl.spin_ns;
  while (!it->second.done && !it->second.cancelled) {
    impl.pump();
    if (it->second.done) break;
    if (impl.responses.corrupt()) return {ErrorCode::kProtocolError, "the response ring's indices are corrupt"};
    const std::uint64_t now = monotonic_ns();
    if (now >= deadline_ns) {
      // Its region stays reserved until the answer comes; the answer is then dropped.
      it->second.abandoned = true;
      return {ErrorCode::kTimeout, "no answer from sidecar '" + impl.instance + "' within the timeout"};
    }
    if (now < spin_until) {
      cpu_relax();
      continue;
    }
    if (now - impl.last_liveness_check_ns >= kLivenessCheckNs) {
      impl.last_liveness_check_ns = now;
      if (!impl.sidecar_alive()) {
        impl.forget_cache();
        it->second.abandoned = true;
        return {ErrorCode::kSidecarGone, "sidecar '" + impl.instance + "' stopped while the request was in flight"};
      }
    }
    const std::uint64_t sleep = std::min(deadline_ns - now, kLivenessCheckNs);
    impl.channel->response_bell.wait([&] { return impl.responses.has_data(); }, std::chrono::nanoseconds(sleep));
  }
  return collect(impl, it);
}

bool Client::cancel(RequestHandle handle) {
  Impl& impl = *impl_;
  auto it = impl.submitted.find(handle.id);
  if (it == impl.submitted.end() || it->second.done || it->second.abandoned || it->second.cancelled) return false;
  // The sidecar reads the word before it runs the request; one it has started runs to the end.
  reinterpret_cast<std::atomic<std::uint64_t>*>(impl.arena + it->second.offset)->store(1, std::memory_order_release);
  it->second.cancelled = true;
  return true;
}

std::size_t Client::in_flight() const noexcept { return impl_->submitted_in_flight; }

namespace {
// Hands a finished (or cancelled) request's result to the caller and forgets it; a cancelled one
// whose answer has not come stays listed, as abandoned, so its region is freed when it comes.
Result<std::vector<Tensor>> collect(Client::Impl& impl, std::map<std::uint64_t, Client::Impl::Submitted>::iterator it) {
  Client::Impl::Submitted& entry = it->second;
  impl.last_cache_outcome = entry.cache_outcome;
  impl.last_service = entry.service;
  if (entry.cancelled) {
    if (entry.bytes != 0)
      entry.abandoned = true;
    else
      impl.submitted.erase(it);
    return {ErrorCode::kCancelled, "cancelled"};
  }
  Result<std::vector<Tensor>> result = entry.code == ErrorCode::kOk
                                           ? Result<std::vector<Tensor>>(std::move(entry.outputs))
                                           : Result<std::vector<Tensor>>(entry.code, std::move(entry.message));
  impl.submitted.erase(it);
  return result;
}
}  // namespace

// nullopt: a miss (or inputs the normal path must refuse); else the hit's outputs, or an error.
std::optional<Result<std::vector<Tensor>>> Client::lookup_in_client(std::span<const TensorView> inputs) {
  Impl& impl = *impl_;
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
  if (!impl.sidecar_alive_for_hits()) {
    return Result<std::vector<Tensor>>{ErrorCode::kSidecarGone, "sidecar '" + impl.instance + "' is gone"};
  }
  const std::span<const TensorBytes> key_inputs(keyed, inputs.size());
  std::vector<Tensor> outputs;
  const std::uint64_t generation = impl.cache.generation();
  const auto hit =
      impl.cache.lookup(compute_cache_key(generation, key_inputs), generation, key_inputs,
                        [&](std::uint32_t count, const CacheTensor* found, std::uint8_t** where) {
                          outputs.resize(count);
                          for (std::uint32_t i = 0; i < count; ++i) {
                            outputs[i].dtype = static_cast<DType>(found[i].shape.dtype);
                            outputs[i].shape.assign(found[i].shape.dims, found[i].shape.dims + found[i].shape.rank);
                            outputs[i].data.resize(found[i].bytes);
                            where[i] = reinterpret_cast<std::uint8_t*>(outputs[i].data.data());
                          }
                          return true;
                        });
  if (!hit) return std::nullopt;
  impl.record_client_hit(*hit);
  return Result<std::vector<Tensor>>(std::move(outputs));
}

namespace {
CacheStats stats_of(const CacheHeader& header) {
  CacheStats stats;
  const CacheCounters& counters = header.counters;
  stats.enabled = true;
  stats.budget_bytes = header.segment_bytes;
  stats.max_entry_bytes = header.max_entry_bytes;
  stats.generation = header.generation.load(std::memory_order_acquire);
  stats.bytes_used = counters.bytes_used.load(std::memory_order_relaxed);
  stats.entries = counters.entries.load(std::memory_order_relaxed);
  stats.client_hits = counters.client_hits.load(std::memory_order_relaxed);
  stats.sidecar_hits = counters.sidecar_hits.load(std::memory_order_relaxed);
  stats.misses = counters.misses.load(std::memory_order_relaxed);
  stats.inserts = counters.inserts.load(std::memory_order_relaxed);
  stats.evictions = counters.evictions.load(std::memory_order_relaxed);
  stats.too_large = counters.too_large.load(std::memory_order_relaxed);
  stats.flushes = counters.flushes.load(std::memory_order_relaxed);
  return stats;
}
}  // namespace

CacheStats Client::cache_stats() const {
  if (!impl_->cache.attached()) return CacheStats{};
  return stats_of(impl_->cache.header());
}

Result<CacheStats> read_cache_stats(const std::string& name) {
  if (!is_valid_instance_name(name)) return {ErrorCode::kInvalidArgument, "'" + name + "' is not a valid sidecar name"};
  SegmentMapping main_segment;
  try {
    main_segment = SegmentMapping::open(segment_name(name), /*read_only=*/true);
  } catch (const std::exception&) {
    return {ErrorCode::kNotRunning,
            "no sidecar named '" + name + "' is running (no segment " + segment_name(name) + ")"};
  }
  if (std::string problem = check_segment_layout(main_segment); !problem.empty()) {
    return {problem.rfind("layout version mismatch", 0) == 0 ? ErrorCode::kLayoutMismatch : ErrorCode::kNotReady,
            problem};
  }
  const SegmentHeader& header = *main_segment.header();
  if (!process_alive(header.sidecar_pid, header.sidecar_start_time)) {
    return {ErrorCode::kNotRunning, "sidecar '" + name + "' (pid " + std::to_string(header.sidecar_pid) + ") is gone"};
  }
  const std::string cache_name = cache_segment_name(name);
  SegmentMapping cache_segment;
  try {
    cache_segment = SegmentMapping::open(cache_name, /*read_only=*/true);
  } catch (const std::exception&) {
    return CacheStats{};  // running without a cache
  }
  if (std::string problem = cache_trust_problem(cache_segment, main_segment); !problem.empty()) {
    if (problem.rfind("layout version mismatch", 0) == 0) return {ErrorCode::kLayoutMismatch, problem};
    return CacheStats{};  // stale, or not the sidecar's: this sidecar runs without a cache
  }
  return stats_of(*reinterpret_cast<const CacheHeader*>(cache_segment.base()));
}

Result<std::string> Client::flush_cache(std::chrono::microseconds timeout) {
  Impl& impl = *impl_;
  reset_inputs();
  const std::uint64_t deadline_ns = deadline_after(timeout);
  if (auto [code, message] = impl.settle_unanswered(deadline_ns); code != ErrorCode::kOk) return {code, message};
  RequestDescriptor request{};
  request.flags = kRequestFlagFlushCache;
  auto [code, message] = impl.post_and_await(request, deadline_ns);
  if (code != ErrorCode::kOk) return {code, message};
  const ResponseDescriptor* response = impl.responses.front();
  const auto status = static_cast<Status>(response->status);
  std::string text(response->message, std::min<std::size_t>(response->message_length, kMessageBytes));
  impl.responses.pop();
  if (status != Status::kOk) return {error_code_for(status), text};
  return text;
}

}  // namespace sidecar
