#include "server.hpp"

#include <pthread.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <boost/interprocess/exceptions.hpp>
#include <chrono>
#include <cstring>
#include <stdexcept>

#include "result_cache.hpp"
#include "sidecar/shared/descriptor_check.hpp"
#include "sidecar/shared/output_region.hpp"
#include "sidecar/shared/process_identity.hpp"

namespace sidecar {

// The sidecar's private state for one channel. Only the leader touches `requests` and `poisoned`;
// any worker may answer, so `responses` is guarded by `response_mutex`.
struct ChannelSlot {
  std::uint32_t index = 0;
  Channel* shared = nullptr;
  std::uint8_t* arena = nullptr;
  std::uint64_t arena_bytes = 0;  // the sidecar's own copy: never read back from shared memory

  SpscConsumer<RequestRing> requests;
  bool poisoned = false;  // the client broke the ring protocol; ignored until it goes away

  std::mutex response_mutex;
  SpscProducer<ResponseRing> responses;

  // Guarded by Server::hit_log_mutex_: drained by the reaper, reset when the channel is recycled.
  SpscConsumer<HitLogRing> hit_log;

  std::atomic<std::uint32_t> in_flight{0};  // taken from the ring, not yet answered
  std::atomic<bool> recycle_requested{false};
  // Reaper only: when it first saw this channel claimed with no owner pid yet.
  std::uint64_t ownerless_since_ns = 0;
};

namespace {
// Private copies of a call's outputs, for the cache.
struct CapturedOutputs {
  std::vector<std::uint8_t> bytes;
  TensorBytes tensors[kMaxTensors];
  std::uint32_t count = 0;
  std::uint64_t limit = 0;  // outputs larger in all are not captured: their entry would be over the cap
  bool captured = false;
};
}  // namespace

// One request taken from a ring.
struct TakenRequest {
  std::uint32_t channel = 0;
  RequestDescriptor request;  // a private copy: the client cannot change it under us
  std::uint64_t service_order = 0;
  ResponseDescriptor response;
  // For the cache: the key and generation of its inputs, computed before the forward.
  bool store_result = false;
  CacheKey key;
  std::uint64_t generation = 0;
  TensorBytes staged[kMaxTensors];  // its inputs in the private copy (a batch's rows, or its own)
  TensorBytes outputs[kMaxTensors];
  std::uint32_t output_count = 0;
};

struct Server::Work {
  // What the leader took: one request, or several compatible ones to run as one batch.
  std::vector<TakenRequest> taken;
  std::uint32_t batch_rows = 0;
  // A request whose result will be cached, and every batch, runs on a private copy of its inputs,
  // so that what is stored is exactly what the model saw: a client can rewrite its arena at any
  // moment. Reused from request to request.
  std::vector<std::uint8_t> staged_bytes;
  CapturedOutputs outputs;
};

namespace {

constexpr auto kIdleSleepLimit = std::chrono::milliseconds(100);
constexpr std::uint64_t kFlushIntervalNs = 1'000'000'000;
constexpr auto kReaperPeriod = std::chrono::milliseconds(100);
// A client writes its pid right after its claim; one that shows none for this long died in between.
constexpr std::uint64_t kOwnerlessGraceNs = 1'000'000'000;

// Anything a client can trigger is logged at most once a second, so a hostile client cannot fill
// the journal.
class RateLimitedWarning {
 public:
  template <typename... Args>
  void operator()(spdlog::format_string_t<Args...> format, Args&&... args) {
    const std::uint64_t now = monotonic_ns();
    std::uint64_t last = last_ns_.load(std::memory_order_relaxed);
    if (last != 0 && now - last < 1'000'000'000ull) {
      suppressed_.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    if (!last_ns_.compare_exchange_strong(last, now)) return;
    const auto suppressed = suppressed_.exchange(0);
    if (suppressed) spdlog::warn("({} similar messages suppressed)", suppressed);
    spdlog::warn(format, std::forward<Args>(args)...);
  }

 private:
  std::atomic<std::uint64_t> last_ns_{0};
  std::atomic<std::uint64_t> suppressed_{0};
};

RateLimitedWarning client_fault_warning;

bool same_shape(const TensorShape& a, const TensorShape& b) {
  if (a.dtype != b.dtype || a.rank != b.rank) return false;
  return std::equal(a.dims, a.dims + a.rank, b.dims);
}

std::string describe_inputs(const TensorDescriptor* inputs, std::size_t count) {
  std::string text;
  for (std::size_t i = 0; i < count; ++i) {
    if (i) text += ", ";
    text += describe_shape(inputs[i].shape);
  }
  return text;
}

// Empty when the inputs match one of the accepted signatures (or none are declared).
std::string match_signature(const RequestDescriptor& request, const std::vector<InputSignature>& accepted) {
  if (accepted.empty()) return {};
  for (const InputSignature& signature : accepted) {
    bool match = signature.size() == request.input_count;
    for (std::size_t i = 0; match && i < signature.size(); ++i)
      match = same_shape(signature[i], request.inputs[i].shape);
    if (match) return {};
  }
  if (accepted.size() == 1 && accepted[0].size() == 1) {
    return fmt::format("input 0: expected {}, got {}", describe_shape(accepted[0][0]),
                       describe_shape(request.inputs[0].shape));
  }
  std::string text = fmt::format("inputs ({}) match no accepted signature; expected ",
                                 describe_inputs(request.inputs, request.input_count));
  for (std::size_t i = 0; i < accepted.size(); ++i) {
    if (i) text += " or ";
    text += fmt::format("({})", describe_signature(accepted[i]));
  }
  return text;
}

// Writes a call's outputs into the client's output region; with `capture`, also keeps a private
// copy of them for the cache (the arena is the client's to change once the answer is posted).
class ArenaOutputSink final : public OutputSink {
 public:
  ArenaOutputSink(std::uint8_t* arena, OutputRegion region, ResponseDescriptor& response, CapturedOutputs* capture)
      : arena_(arena), region_(region), response_(response), capture_(capture) {}

  Status accept(std::span<const OutputView> outputs, std::string& message) override {
    std::uint64_t sizes[kMaxTensors];
    std::uint64_t offsets[kMaxTensors];
    const auto count = static_cast<std::uint32_t>(outputs.size());
    for (std::uint32_t i = 0; i < count; ++i) sizes[i] = outputs[i].bytes;
    if (!region_.place(sizes, count, offsets)) {
      message = "the outputs need " + std::to_string(OutputRegion::packed_bytes(sizes, count)) +
                " bytes; the request reserved " + std::to_string(region_.capacity);
      return Status::kOutputTooLarge;
    }
    for (std::uint32_t i = 0; i < count; ++i) {
      TensorDescriptor& descriptor = response_.outputs[i];
      descriptor = TensorDescriptor{};
      descriptor.shape = outputs[i].shape;
      descriptor.offset = offsets[i];
      descriptor.bytes = outputs[i].bytes;
      std::memcpy(arena_ + descriptor.offset, outputs[i].data, outputs[i].bytes);
    }
    response_.output_count = static_cast<std::uint16_t>(count);
    if (capture_ != nullptr) capture(outputs);
    return Status::kOk;
  }

 private:
  void capture(std::span<const OutputView> outputs) {
    std::uint64_t total = 0;
    for (const OutputView& output : outputs) total += output.bytes;
    capture_->captured = total <= capture_->limit;
    if (!capture_->captured) return;
    capture_->bytes.resize(total);
    std::uint64_t cursor = 0;
    for (std::size_t i = 0; i < outputs.size(); ++i) {
      std::memcpy(capture_->bytes.data() + cursor, outputs[i].data, outputs[i].bytes);
      capture_->tensors[i] = TensorBytes{outputs[i].shape, capture_->bytes.data() + cursor, outputs[i].bytes};
      cursor += outputs[i].bytes;
    }
    capture_->count = static_cast<std::uint32_t>(outputs.size());
  }

  std::uint8_t* arena_;
  OutputRegion region_;
  ResponseDescriptor& response_;
  CapturedOutputs* capture_;
};

// Zeroes the fixed part only: the tensor table and message are copied out up to their used length.
void clear_response_header(ResponseDescriptor& response, std::uint64_t request_id) {
  std::memset(&response, 0, offsetof(ResponseDescriptor, outputs));
  response.request_id = request_id;
  response.status = static_cast<std::uint32_t>(Status::kOk);
}

void set_message(ResponseDescriptor& response, const std::string& message) {
  const std::size_t length = std::min<std::size_t>(message.size(), kMessageBytes);
  std::memcpy(response.message, message.data(), length);
  response.message_length = static_cast<std::uint16_t>(length);
}

// Splits a batch's outputs back into each request's rows and writes them into each client's
// output region. Every output must have the batch's rows along dim 0; otherwise nothing is written
// and the requests run one by one.
class BatchOutputSink final : public OutputSink {
 public:
  BatchOutputSink(std::span<TakenRequest*> batch, std::uint64_t total_rows,
                  const std::vector<std::unique_ptr<ChannelSlot>>& channels, CapturedOutputs& capture)
      : batch_(batch), total_rows_(total_rows), channels_(channels), capture_(capture) {}

  Status accept(std::span<const OutputView> outputs, std::string& message) override {
    for (std::size_t i = 0; i < outputs.size(); ++i) {
      const TensorShape& shape = outputs[i].shape;
      if (shape.rank < 1 || static_cast<std::uint64_t>(shape.dims[0]) != total_rows_ ||
          outputs[i].bytes % total_rows_ != 0) {
        message = "output " + std::to_string(i) + " is " + describe_shape(shape) + ", not " +
                  std::to_string(total_rows_) + " rows like the batch's inputs: the model cannot be batched";
        return Status::kUnsupportedOutput;
      }
    }
    // Private copies of the whole outputs, for the entries the requests will store.
    bool any_stores = false;
    for (TakenRequest* taken : batch_) any_stores = any_stores || taken->store_result;
    const std::uint8_t* copies[kMaxTensors] = {};
    if (any_stores) {
      std::uint64_t total = 0;
      for (const OutputView& output : outputs) total += output.bytes;
      capture_.bytes.resize(total);
      std::uint64_t cursor = 0;
      for (std::size_t i = 0; i < outputs.size(); ++i) {
        std::memcpy(capture_.bytes.data() + cursor, outputs[i].data, outputs[i].bytes);
        copies[i] = capture_.bytes.data() + cursor;
        cursor += outputs[i].bytes;
      }
    }
    std::uint64_t row = 0;
    for (TakenRequest* taken : batch_) {
      const auto rows = static_cast<std::uint64_t>(taken->request.inputs[0].shape.dims[0]);
      ResponseDescriptor& response = taken->response;
      const OutputRegion region{taken->request.output_offset, taken->request.output_capacity};
      std::uint64_t sizes[kMaxTensors];
      std::uint64_t offsets[kMaxTensors];
      for (std::size_t i = 0; i < outputs.size(); ++i) sizes[i] = outputs[i].bytes / total_rows_ * rows;
      const auto count = static_cast<std::uint32_t>(outputs.size());
      if (!region.place(sizes, count, offsets)) {
        response.status = static_cast<std::uint32_t>(Status::kOutputTooLarge);
        set_message(response, "the outputs need " + std::to_string(OutputRegion::packed_bytes(sizes, count)) +
                                  " bytes; the request reserved " + std::to_string(region.capacity));
        taken->store_result = false;
        row += rows;
        continue;
      }
      std::uint8_t* arena = channels_[taken->channel]->arena;
      for (std::uint32_t i = 0; i < count; ++i) {
        const std::uint64_t row_bytes = outputs[i].bytes / total_rows_;
        TensorDescriptor& descriptor = response.outputs[i];
        descriptor = TensorDescriptor{};
        descriptor.shape = outputs[i].shape;
        descriptor.shape.dims[0] = static_cast<std::int64_t>(rows);
        descriptor.offset = offsets[i];
        descriptor.bytes = sizes[i];
        std::memcpy(arena + offsets[i], static_cast<const std::uint8_t*>(outputs[i].data) + row * row_bytes, sizes[i]);
        if (taken->store_result) {
          taken->outputs[i] = TensorBytes{descriptor.shape, copies[i] + row * row_bytes, sizes[i]};
        }
      }
      response.output_count = static_cast<std::uint16_t>(count);
      taken->output_count = count;
      row += rows;
    }
    return Status::kOk;
  }

 private:
  std::span<TakenRequest*> batch_;
  std::uint64_t total_rows_;
  const std::vector<std::unique_ptr<ChannelSlot>>& channels_;
  CapturedOutputs& capture_;
};

RateLimitedWarning batch_fallbacks_warning;

// Copies only the parts of a response that are in use: the slot is 1.3 KB, a typical answer 160 B.
void post_response(ChannelSlot& slot, const ResponseDescriptor& response) {
  {
    std::lock_guard lock(slot.response_mutex);
    ResponseDescriptor* target = slot.responses.try_claim();
    if (target == nullptr) {
      // Cannot happen with an honest client: the leader takes a request only when a response slot
      // is free for it. A client that rewound the ring's head loses its answer.
      client_fault_warning("channel {}: response ring full or corrupt; dropping response {}", slot.index,
                           response.request_id);
      return;
    }
    std::memcpy(target, &response, offsetof(ResponseDescriptor, outputs));
    std::memcpy(target->outputs, response.outputs, sizeof(TensorDescriptor) * response.output_count);
    std::memcpy(target->message, response.message, response.message_length);
    slot.responses.publish();
  }
  slot.shared->response_bell.ring();
}

void name_this_thread(const std::string& name) { ::pthread_setname_np(::pthread_self(), name.substr(0, 15).c_str()); }

}  // namespace

Server::Server(SidecarOptions options, std::unique_ptr<ModelRunner> runner)
    : options_(std::move(options)), runner_(std::move(runner)) {
  spin_ns_ = static_cast<std::uint64_t>(options_.spin_us) * 1000u;
  usable_cpus_ = usable_cpu_count();
  // Sharing every CPU of the host with its clients, the sidecar keeps one for them (they spin
  // too); pinned apart from them, it may use all of its own.
  const auto online = static_cast<int>(std::thread::hardware_concurrency());
  cpus_kept_for_clients_ = usable_cpus_ >= online ? 1 : 0;
  max_queue_delay_ns_ = std::uint64_t{options_.max_queue_delay_us} * 1000u;
  // Warm-up covers every shape the batcher can form: each batchable signature at 1..max_batch rows.
  warmup_plan_ = options_.warmup_signatures;
  if (options_.max_batch > 1) {
    for (const InputSignature& signature : options_.warmup_signatures) {
      const bool batchable =
          !signature.empty() && std::all_of(signature.begin(), signature.end(),
                                            [](const TensorShape& s) { return s.rank >= 1 && s.dims[0] == 1; });
      if (!batchable) continue;
      batchable_signatures_.push_back(signature);
      for (std::uint32_t rows = 2; rows <= options_.max_batch; ++rows) {
        InputSignature batched = signature;
        for (TensorShape& shape : batched) shape.dims[0] = rows;
        warmup_plan_.push_back(std::move(batched));
      }
    }
  }
}

// A spinning leader must not take a core from a worker that runs a forward, nor from a spinning
// client: when the cores are all spoken for, the leader sleeps on the doorbell at once instead.
// Measured on 2 CPUs: a leader spinning beside a running worker and a spinning client raised the
// tiny model's p99 from ~15 us to ~4 ms.
bool Server::spinning_fits() const noexcept {
  const int busy = executing_.load(std::memory_order_relaxed) * options_.intra_op_threads;
  return busy + 1 + cpus_kept_for_clients_ <= usable_cpus_;
}

Server::~Server() { stop(); }

void Server::create_segment() {
  const std::string name = sidecar::segment_name(options_.name);
  geometry_ = SegmentGeometry::compute(options_.channels, options_.arena_bytes);
  std::uint64_t previous_generation = 0;
  try {
    SegmentMapping existing = SegmentMapping::open(name);
    if (existing.size() >= sizeof(SegmentHeader)) {
      const SegmentHeader& old = *existing.header();
      if (old.magic.load(std::memory_order_acquire) == kSegmentMagic &&
          process_alive(old.sidecar_pid, old.sidecar_start_time)) {
        throw std::runtime_error("another sidecar named '" + options_.name + "' is running (pid " +
                                 std::to_string(old.sidecar_pid) + ")");
      }
      if (old.magic.load(std::memory_order_acquire) == kSegmentMagic) previous_generation = old.start_generation;
    }
    SegmentMapping::remove(name);
    spdlog::warn("removed a stale segment {} left by a sidecar that is gone", name);
  } catch (const boost::interprocess::interprocess_exception&) {
    // No segment by that name: the usual case.
  }

  try {
    segment_ = SegmentMapping::create(name, geometry_.segment_bytes, options_.segment_mode);
  } catch (const std::exception& error) {
    throw std::runtime_error("cannot create shared-memory segment " + name + ": " + error.what());
  }
  owns_segment_ = true;

  SegmentHeader* header = new (segment_.base()) SegmentHeader;
  header->layout_version = kLayoutVersion;
  header->header_bytes = sizeof(SegmentHeader);
  header->segment_bytes = geometry_.segment_bytes;
  header->channel_count = options_.channels;
  header->ring_capacity = kRingCapacity;
  header->arena_bytes = geometry_.arena_bytes;
  header->channels_offset = geometry_.channels_offset;
  header->channel_stride = geometry_.channel_stride;
  header->arenas_offset = geometry_.arenas_offset;
  header->sidecar_pid = ::getpid();
  header->sidecar_start_time = process_start_time(::getpid());
  header->started_unix_ns = static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch())
          .count());
  header->start_generation = previous_generation + 1;
  header->state.store(static_cast<std::uint32_t>(SidecarState::kStarting), std::memory_order_relaxed);
  // What is loading is visible (sidecarctl status) while it warms up; shapes follow at ready.
  std::strncpy(header->model.model_path, options_.model_path.c_str(), kModelPathBytes - 1);
  header->model.input_count = static_cast<std::uint32_t>(runner_->input_count());

  channels_.reserve(options_.channels);
  for (std::uint32_t i = 0; i < options_.channels; ++i) {
    Channel* shared = new (segment_.base() + geometry_.channel_offset(i)) Channel;
    shared->requests.reset();
    shared->responses.reset();
    shared->cache_hit_log.reset();
    auto slot = std::make_unique<ChannelSlot>();
    slot->index = i;
    slot->shared = shared;
    slot->arena = segment_.base() + geometry_.arena_offset(i);
    slot->arena_bytes = geometry_.arena_bytes;
    slot->requests = SpscConsumer<RequestRing>(&shared->requests);
    slot->responses = SpscProducer<ResponseRing>(&shared->responses);
    slot->hit_log = SpscConsumer<HitLogRing>(&shared->cache_hit_log);
    channels_.push_back(std::move(slot));
  }
  create_cache();
  header->magic.store(kSegmentMagic, std::memory_order_release);
  spdlog::info("segment {}: {} channels, {} bytes of tensor arena each, {} MiB in all", name, options_.channels,
               geometry_.arena_bytes, geometry_.segment_bytes >> 20);
}

void Server::create_cache() {
  if (options_.cache_bytes == 0) {
    // A cache left by an earlier sidecar of this name must not be found by clients of this one.
    SegmentMapping::remove(cache_segment_name(options_.name));
    spdlog::info("result cache off (--cache-bytes 0)");
    return;
  }
  CacheSettings settings;
  settings.budget_bytes = options_.cache_bytes;
  settings.max_entry_bytes = options_.cache_max_entry_bytes;
  // Whoever may use the sidecar may read the cache; only the sidecar may write it.
  settings.mode = (options_.segment_mode & 0444) | 0600;
  cache_ = ResultCache::create(options_.name, settings);
  const CacheHeader& header = cache_->view().header();
  spdlog::info("result cache {}: {} bytes, {} slots, {} bytes of metadata, entries up to {} bytes",
               cache_->segment_name(), header.segment_bytes, header.bucket_count * kCacheWays, header.heap_offset,
               header.max_entry_bytes);
}

void Server::start() {
  segment_.header()->state.store(static_cast<std::uint32_t>(SidecarState::kWarming), std::memory_order_release);
  for (int i = 0; i < options_.workers; ++i) workers_.emplace_back([this, i] { worker_main(i); });
  std::unique_lock lock(warmup_mutex_);
  warmup_done_.wait(lock, [&] { return warmed_workers_ == options_.workers || !warmup_error_.empty(); });
  if (!warmup_error_.empty()) {
    const std::string error = warmup_error_;
    lock.unlock();
    stop();
    throw std::runtime_error(error);
  }
  reaper_ = std::thread([this] { reaper_main(); });
}

void Server::mark_ready() {
  publish_model_description();
  segment_.header()->state.store(static_cast<std::uint32_t>(SidecarState::kReady), std::memory_order_release);
}

void Server::publish_model_description() {
  ModelDescription& model = segment_.header()->model;
  model.signature_count = static_cast<std::uint32_t>(warmup_results_.size());
  model.max_batch = batchable_signatures_.empty() ? 1 : options_.max_batch;
  model.output_count = warmup_results_.empty() ? 0 : static_cast<std::uint32_t>(warmup_results_[0].outputs.size());
  for (std::size_t s = 0; s < warmup_results_.size() && s < kMaxSignatures; ++s) {
    const WarmupResult& result = warmup_results_[s];
    std::copy(result.inputs.begin(), result.inputs.end(), model.signatures[s].inputs);
    std::copy_n(result.outputs.begin(), std::min<std::size_t>(result.outputs.size(), kMaxTensors),
                model.signatures[s].outputs);
  }
}

void Server::worker_main(int index) {
  name_this_thread("sidecar-w" + std::to_string(index));
  adopt_torch_threads_on_this_thread();
  {
    // One worker warms up at a time, so the first-call and warmed latencies it logs are not
    // inflated by the others competing for the cores.
    std::unique_lock lock(warmup_mutex_);
    if (!warmup_error_.empty()) return;
    try {
      auto results = runner_->warm_up(warmup_plan_, options_.warmup_iterations);
      for (const WarmupResult& result : results) {
        spdlog::info("worker {} warmed ({}): first call {:.1f} us, warmed {:.1f} us", index,
                     describe_signature(result.inputs), result.first_call_us, result.warmed_call_us);
      }
      // The model description lists the declared shapes; batch sizes are implied by max_batch.
      results.resize(std::min(results.size(), options_.warmup_signatures.size()));
      if (warmup_results_.empty()) warmup_results_ = std::move(results);
      ++warmed_workers_;
    } catch (const std::exception& error) {
      warmup_error_ = error.what();
    }
    warmup_done_.notify_all();
    if (!warmup_error_.empty()) return;
  }

  Work work;
  work.taken.reserve(options_.max_batch);
  while (true) {
    std::unique_lock lead(leader_mutex_);
    if (!lead_and_take(work)) break;
    executing_.fetch_add(1, std::memory_order_relaxed);
    lead.unlock();  // a follower becomes the leader while this worker runs the request
    if (work.taken.size() == 1) {
      execute(work, work.taken[0]);
    } else {
      execute_batch(work);
    }
    executing_.fetch_sub(1, std::memory_order_relaxed);
  }
}

bool Server::lead_and_take(Work& work) {
  work.taken.clear();
  work.batch_rows = 0;
  std::uint64_t spin_until = monotonic_ns() + spin_ns_;
  while (!stopping_.load(std::memory_order_acquire)) {
    if (recycle_possible()) recycle_flagged_channels();
    if (poll_once(work, nullptr)) {
      gather_batch(work);
      return true;
    }
    if (spin_ns_ != 0 && monotonic_ns() < spin_until && spinning_fits()) {
      cpu_relax();
      continue;
    }
    segment_.header()->request_bell.wait(
        [&] { return stopping_.load(std::memory_order_acquire) || recycle_possible() || any_request_waiting(); },
        kIdleSleepLimit);
    spin_until = monotonic_ns() + spin_ns_;
  }
  return false;
}

// Rows of a request that could join a batch: its inputs match a batchable signature except for a
// shared leading dim of 1..max_batch. 0 when it cannot be batched. Reads only the private copy.
std::uint32_t Server::batch_rows_of(const RequestDescriptor& request) const {
  if (options_.max_batch <= 1 || request.flags & kRequestFlagFlushCache) return 0;
  if (request.input_count == 0 || request.input_count > kMaxTensors) return 0;
  const std::int64_t rows = request.inputs[0].shape.rank >= 1 ? request.inputs[0].shape.dims[0] : 0;
  if (rows < 1 || rows > options_.max_batch) return 0;
  for (const InputSignature& signature : batchable_signatures_) {
    bool match = signature.size() == request.input_count;
    for (std::size_t i = 0; match && i < signature.size(); ++i) {
      const TensorShape& want = signature[i];
      const TensorShape& got = request.inputs[i].shape;
      match = got.dtype == want.dtype && got.rank == want.rank && got.rank <= kMaxRank && got.dims[0] == rows &&
              std::equal(want.dims + 1, want.dims + want.rank, got.dims + 1);
    }
    if (match) return static_cast<std::uint32_t>(rows);
  }
  return 0;
}

// Two requests can share a forward: same input count, dtypes and trailing dims.
static bool same_trailing_shapes(const RequestDescriptor& a, const RequestDescriptor& b) {
  if (a.input_count != b.input_count) return false;
  for (std::uint32_t i = 0; i < a.input_count && i < kMaxTensors; ++i) {
    const TensorShape& x = a.inputs[i].shape;
    const TensorShape& y = b.inputs[i].shape;
    if (x.dtype != y.dtype || x.rank != y.rank || !std::equal(x.dims + 1, x.dims + x.rank, y.dims + 1)) return false;
  }
  return true;
}

// The leader has taken a request. If it can be batched, the leader keeps taking compatible
// requests, round-robin over the channels, until the batch has max_batch rows or
// max_queue_delay_us has passed since the first was taken; then it runs them as one forward.
void Server::gather_batch(Work& work) {
  const std::uint32_t first_rows = batch_rows_of(work.taken[0].request);
  if (first_rows == 0) return;
  work.batch_rows = first_rows;
  // A copy: poll_once appends to work.taken, which may move its elements.
  const RequestDescriptor first = work.taken[0].request;
  const std::uint64_t until = monotonic_ns() + max_queue_delay_ns_;
  while (work.batch_rows < options_.max_batch && !stopping_.load(std::memory_order_acquire)) {
    if (poll_once(work, &first)) continue;
    const std::uint64_t now = monotonic_ns();
    if (now >= until) break;
    if (spinning_fits()) {
      cpu_relax();
      continue;
    }
    // No core to spare (a forward runs beside us): wait for the next request asleep, not spinning,
    // or the gathering itself would slow the batch that is running.
    segment_.header()->request_bell.wait(
        [&] { return stopping_.load(std::memory_order_acquire) || any_request_waiting(); },
        std::chrono::nanoseconds(until - now));
  }
}

// Takes the request at the front of the next channel (round-robin) into work.taken. With
// `batch_with`, only a request that can join that batch (and fits in it); others stay queued.
bool Server::poll_once(Work& work, const RequestDescriptor* batch_with) {
  SegmentHeader& header = *segment_.header();
  const std::uint32_t count = options_.channels;
  const std::uint32_t words = (count + 63) / 64;
  const std::uint32_t start = poll_cursor_ % count;
  // Round-robin from the channel after the last one served, so a busy channel cannot starve others.
  for (std::uint32_t step = 0; step <= words; ++step) {
    const std::uint32_t word = (start / 64 + step) % words;
    std::uint64_t bits = header.active_channels[word].load(std::memory_order_acquire);
    if (step == 0) bits &= ~0ull << (start % 64);
    if (step == words) bits &= (start % 64) ? ~(~0ull << (start % 64)) : 0ull;
    while (bits != 0) {
      const std::uint32_t index = word * 64 + static_cast<std::uint32_t>(__builtin_ctzll(bits));
      bits &= bits - 1;
      if (index >= count) break;
      ChannelSlot& slot = *channels_[index];
      if (!can_take_from(slot)) continue;
      TakenRequest& taken = work.taken.emplace_back();
      const RequestDescriptor* front = slot.requests.front();
      std::memcpy(&taken.request, front, offsetof(RequestDescriptor, inputs));
      const std::uint32_t inputs = std::min<std::uint32_t>(taken.request.input_count, kMaxTensors);
      std::memcpy(taken.request.inputs, front->inputs, sizeof(TensorDescriptor) * inputs);
      if (batch_with != nullptr) {
        const std::uint32_t rows = batch_rows_of(taken.request);
        if (rows == 0 || work.batch_rows + rows > options_.max_batch ||
            !same_trailing_shapes(*batch_with, taken.request)) {
          work.taken.pop_back();
          continue;
        }
        work.batch_rows += rows;
      }
      slot.requests.pop();
      slot.in_flight.fetch_add(1, std::memory_order_acq_rel);
      taken.channel = index;
      taken.service_order = next_service_order_++;
      poll_cursor_ = index + 1;
      return true;
    }
  }
  return false;
}

// A request waits on this channel and the leader may take it now. poll_once and the idle wait
// share this test: a wait that wakes for a request poll_once would skip spins the leader.
bool Server::can_take_from(ChannelSlot& slot) {
  if (slot.poisoned || slot.recycle_requested.load(std::memory_order_relaxed)) return false;
  if (slot.shared->state.load(std::memory_order_acquire) != static_cast<std::uint32_t>(ChannelState::kClaimed))
    return false;
  if (!slot.requests.has_data()) {
    if (slot.requests.corrupt()) {
      slot.poisoned = true;
      client_fault_warning(
          "channel {} (pid {}): request ring indices corrupt; ignoring the channel until its client goes", slot.index,
          slot.shared->owner_pid.load());
    }
    return false;
  }
  // Take a request only when its answer will have a response slot.
  const std::uint64_t client_head = slot.shared->responses.head.load(std::memory_order_acquire);
  const std::uint64_t posted = slot.responses.published();
  const std::uint64_t unread = client_head <= posted ? posted - client_head : kRingCapacity;
  return unread + slot.in_flight.load(std::memory_order_acquire) < kRingCapacity;
}

bool Server::recycle_possible() {
  if (recycle_flagged_.load(std::memory_order_acquire) == 0) return false;
  for (auto& owned : channels_) {
    if (owned->recycle_requested.load(std::memory_order_relaxed) &&
        owned->in_flight.load(std::memory_order_acquire) == 0) {
      return true;
    }
  }
  return false;
}

bool Server::any_request_waiting() {
  SegmentHeader& header = *segment_.header();
  for (std::uint32_t word = 0; word < (options_.channels + 63) / 64; ++word) {
    std::uint64_t bits = header.active_channels[word].load(std::memory_order_acquire);
    while (bits != 0) {
      const std::uint32_t index = word * 64 + static_cast<std::uint32_t>(__builtin_ctzll(bits));
      bits &= bits - 1;
      if (index >= options_.channels) break;
      if (can_take_from(*channels_[index])) return true;
    }
  }
  return false;
}

// Checks a request and answers it without the model when it can: errors, a flush, a passed
// deadline, a cancellation, a hit in the cache (the lookup left to us). True when the model must run.
bool Server::admit(TakenRequest& taken) {
  ChannelSlot& slot = *channels_[taken.channel];
  const RequestDescriptor& request = taken.request;
  ResponseDescriptor& response = taken.response;
  clear_response_header(response, request.request_id);
  taken.store_result = false;
  taken.output_count = 0;
  auto fail = [&](Status status, const std::string& message) {
    response.status = static_cast<std::uint32_t>(status);
    response.output_count = 0;
    set_message(response, message);
    return false;
  };

  if (request.flags & ~kRequestFlagsKnown) {
    return fail(Status::kInvalidRequest,
                "unknown request flags " + std::to_string(request.flags & ~kRequestFlagsKnown) +
                    " (this sidecar speaks layout version " + std::to_string(kLayoutVersion) + ")");
  }
  if (request.flags & kRequestFlagFlushCache) {
    flush_cache(response);
    return false;
  }
  if (std::string problem = check_request(request, slot.arena_bytes); !problem.empty()) {
    return fail(Status::kInvalidRequest, problem);
  }
  if (request.flags & kRequestFlagCancellable) {
    // The cancel word is the client's, in its own arena: bounds and alignment are checked here.
    if (request.cancel_offset % 8 != 0 || request.cancel_offset > slot.arena_bytes - 8) {
      return fail(Status::kInvalidRequest, "cancel word at offset " + std::to_string(request.cancel_offset) +
                                               " is outside the channel's arena or not 8-byte aligned");
    }
    const auto* word = reinterpret_cast<const std::atomic<std::uint64_t>*>(slot.arena + request.cancel_offset);
    if (word->load(std::memory_order_acquire) != 0) return fail(Status::kCancelled, "cancelled by the client");
  }
  if (request.deadline_ns != 0 && monotonic_ns() > request.deadline_ns) {
    return fail(Status::kDeadlineExceeded, "the deadline passed before the request ran");
  }
  if (request.input_count != runner_->input_count()) {
    return fail(Status::kInvalidRequest, "the model takes " + std::to_string(runner_->input_count()) +
                                             " input tensor(s), the request has " +
                                             std::to_string(request.input_count));
  }
  if (batch_rows_of(request) == 0) {
    if (std::string problem = match_signature(request, options_.warmup_signatures); !problem.empty()) {
      return fail(Status::kInvalidRequest, problem);
    }
  }
  const bool use_cache = cache_ != nullptr && !(request.flags & kRequestFlagBypassCache);
  if (use_cache && !(request.flags & kRequestFlagCacheChecked) &&
      answer_from_cache(slot, request, OutputRegion{request.output_offset, request.output_capacity}, response)) {
    return false;
  }
  if (use_cache) cache_->count_miss();
  taken.store_result = use_cache;  // until staging finds the entry too large
  return true;
}

void Server::execute(Work& work, TakenRequest& taken) {
  if (admit(taken)) run_alone(work, taken);
  finish(taken);
}

// Runs one request's forward by itself.
void Server::run_alone(Work& work, TakenRequest& taken) {
  ChannelSlot& slot = *channels_[taken.channel];
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
    taken.key = compute_cache_key(taken.generation, std::span<const TensorBytes>(taken.staged, request.input_count));
  }
  ArenaOutputSink sink(slot.arena, OutputRegion{request.output_offset, request.output_capacity}, response,
                       taken.store_result ? &work.outputs : nullptr);
  CallOutcome outcome = runner_->run(std::span<const InputView>(inputs, request.input_count), sink);
  if (outcome.status != Status::kOk) {
    response.status = static_cast<std::uint32_t>(outcome.status);
    response.output_count = 0;
    set_message(response, outcome.message);
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
bool Server::run_batched(Work& work, std::span<TakenRequest*> batch) {
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
      std::memcpy(cursor, channels_[taken->channel]->arena + input.offset, input.bytes);
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
    taken->key = compute_cache_key(taken->generation, std::span<const TensorBytes>(taken->staged, input_count));
  }

  BatchOutputSink sink(batch, total_rows, channels_, work.outputs);
  CallOutcome outcome = runner_->run(std::span<const InputView>(inputs, input_count), sink);
  if (outcome.status != Status::kOk) {
    batch_fallbacks_warning("a batch of {} requests failed ({}); running them one by one", batch.size(),
                            outcome.message.substr(0, 200));
    return false;
  }
  return true;
}

void Server::execute_batch(Work& work) {
  std::vector<TakenRequest*> runnable;
  runnable.reserve(work.taken.size());
  for (TakenRequest& taken : work.taken) {
    if (admit(taken)) {
      runnable.push_back(&taken);
    } else {
      finish(taken);  // one bad request does not hold up, or fail, the others
    }
  }
  if (runnable.size() > 1 && !run_batched(work, runnable)) {
    for (TakenRequest* taken : runnable) run_alone(work, *taken);
  } else if (runnable.size() == 1) {
    run_alone(work, *runnable[0]);
  }
  for (TakenRequest* taken : runnable) finish(*taken);
}

// Stores the result (before the answer goes out: a client that sends the same inputs again as soon
// as it has the answer finds them), posts the answer, and settles the channel's books.
void Server::finish(TakenRequest& taken) {
  ChannelSlot& slot = *channels_[taken.channel];
  if (taken.store_result) store_in_cache(taken);
  taken.response.service_order = taken.service_order;
  post_response(slot, taken.response);
  // The last answer of a channel waiting to be recycled: wake the leader to recycle it.
  if (slot.in_flight.fetch_sub(1, std::memory_order_acq_rel) == 1 &&
      slot.recycle_requested.load(std::memory_order_acquire)) {
    segment_.header()->request_bell.ring();
  }
}

// The client left the lookup to us. Its inputs are read where they are, in its arena: a client that
// changes them meanwhile can only get itself a wrong answer, never put one in the cache.
bool Server::answer_from_cache(ChannelSlot& slot, const RequestDescriptor& request, const OutputRegion& region,
                               ResponseDescriptor& response) {
  TensorBytes inputs[kMaxTensors];
  for (std::uint32_t i = 0; i < request.input_count; ++i) {
    inputs[i] = TensorBytes{request.inputs[i].shape, slot.arena + request.inputs[i].offset, request.inputs[i].bytes};
  }
  std::uint32_t output_count = 0;
  const auto hit = lookup_into_arena(cache_->view(), std::span<const TensorBytes>(inputs, request.input_count),
                                     slot.arena, region, response.outputs, output_count);
  if (!hit) return false;
  response.output_count = static_cast<std::uint16_t>(output_count);
  response.flags |= kResponseFlagFromCache;
  cache_->count_sidecar_hit();
  cache_->touch(hit->slot, hit->sequence);
  return true;
}

// Copies the inputs out of the client's arena for a result that will be cached. False when the
// entry would exceed the size cap anyway: then there is nothing to copy for.
bool Server::stage_inputs(Work& work, TakenRequest& taken) {
  const RequestDescriptor& request = taken.request;
  const std::uint8_t* arena = channels_[taken.channel]->arena;
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

void Server::store_in_cache(TakenRequest& taken) {
  const std::span<const TensorBytes> inputs(taken.staged, taken.request.input_count);
  // A model may write into its inputs (in-place ops): then the result does not belong to the key.
  if (compute_cache_key(taken.generation, inputs) != taken.key) return;
  cache_->insert(taken.key, taken.generation, inputs, std::span<const TensorBytes>(taken.outputs, taken.output_count));
}

void Server::flush_cache(ResponseDescriptor& response) {
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

// Recency from the clients' own hits, and their hit counts for the statistics.
void Server::drain_cache_hit_logs() {
  if (cache_ == nullptr) return;
  std::lock_guard lock(hit_log_mutex_);
  std::uint64_t client_hits = client_hits_of_recycled_channels_;
  for (auto& owned : channels_) {
    ChannelSlot& slot = *owned;
    // Detaching channels too: their last hits count until the channel is recycled and folded in.
    const auto state = slot.shared->state.load(std::memory_order_acquire);
    if (state != static_cast<std::uint32_t>(ChannelState::kClaimed) &&
        state != static_cast<std::uint32_t>(ChannelState::kDetaching))
      continue;
    client_hits += slot.shared->cache_hits.load(std::memory_order_relaxed);
    // One ring's worth at most: a client that keeps reporting cannot keep the reaper here.
    for (std::uint32_t n = 0; n < kHitLogCapacity; ++n) {
      const CacheHitRecord* record = slot.hit_log.front();
      if (record == nullptr) break;
      const CacheHitRecord hit = *record;
      slot.hit_log.pop();
      cache_->touch(hit.slot, hit.sequence);
    }
  }
  cache_->set_client_hits(client_hits);
}

void Server::reaper_main() {
  name_this_thread("sidecar-reaper");
  std::unique_lock lock(reaper_mutex_);
  while (!reaper_wakeup_.wait_for(lock, kReaperPeriod, [&] { return stopped_; })) {
    bool flagged = false;
    for (auto& owned : channels_) {
      ChannelSlot& slot = *owned;
      if (slot.recycle_requested.load(std::memory_order_relaxed)) continue;
      const auto state = static_cast<ChannelState>(slot.shared->state.load(std::memory_order_acquire));
      bool recycle = state == ChannelState::kDetaching;
      if (state == ChannelState::kClaimed) {
        const pid_t pid = slot.shared->owner_pid.load(std::memory_order_acquire);
        if (pid == 0) {
          // Claimed a moment ago and the pid is not written yet, or the client died in between.
          const std::uint64_t now = monotonic_ns();
          if (slot.ownerless_since_ns == 0) slot.ownerless_since_ns = now;
          recycle = now - slot.ownerless_since_ns > kOwnerlessGraceNs;
          if (recycle) spdlog::info("channel {}: claimed but no owner for a second; recycling the channel", slot.index);
        } else {
          slot.ownerless_since_ns = 0;
          recycle = !process_alive(pid, slot.shared->owner_start_time.load(std::memory_order_acquire));
          if (recycle) spdlog::info("channel {}: client pid {} is gone; recycling the channel", slot.index, pid);
        }
      } else if (state != ChannelState::kFree && state != ChannelState::kDetaching) {
        recycle = true;  // a value no honest client writes
      }
      if (recycle) {
        slot.ownerless_since_ns = 0;
        slot.recycle_requested.store(true, std::memory_order_relaxed);
        recycle_flagged_.fetch_add(1, std::memory_order_release);
        flagged = true;
      }
    }
    if (flagged) segment_.header()->request_bell.ring();
    lock.unlock();
    drain_cache_hit_logs();
    lock.lock();
  }
}

void Server::recycle_flagged_channels() {
  SegmentHeader& header = *segment_.header();
  for (auto& owned : channels_) {
    ChannelSlot& slot = *owned;
    if (!slot.recycle_requested.load(std::memory_order_relaxed)) continue;
    // Answers still being computed will write into the arena: wait for them.
    if (slot.in_flight.load(std::memory_order_acquire) != 0) continue;
    {
      std::lock_guard lock(slot.response_mutex);
      slot.shared->requests.reset();
      slot.shared->responses.reset();
      slot.requests = SpscConsumer<RequestRing>(&slot.shared->requests);
      slot.responses = SpscProducer<ResponseRing>(&slot.shared->responses);
    }
    {
      std::lock_guard lock(hit_log_mutex_);
      client_hits_of_recycled_channels_ += slot.shared->cache_hits.load(std::memory_order_relaxed);
      slot.shared->cache_hits.store(0, std::memory_order_relaxed);
      slot.shared->cache_hit_log.reset();
      slot.hit_log = SpscConsumer<HitLogRing>(&slot.shared->cache_hit_log);
    }
    slot.poisoned = false;
    header.active_channels[slot.index / 64].fetch_and(~(1ull << (slot.index % 64)), std::memory_order_acq_rel);
    // A client killed inside its wait leaves itself counted as a sleeper.
    slot.shared->response_bell.sleepers.store(0, std::memory_order_relaxed);
    slot.shared->owner_pid.store(0, std::memory_order_relaxed);
    slot.shared->owner_start_time.store(0, std::memory_order_relaxed);
    slot.shared->generation.fetch_add(1, std::memory_order_relaxed);
    slot.shared->state.store(static_cast<std::uint32_t>(ChannelState::kFree), std::memory_order_release);
    slot.recycle_requested.store(false, std::memory_order_relaxed);
    recycle_flagged_.fetch_sub(1, std::memory_order_acq_rel);
  }
}

void Server::answer_queued_with_shutdown() {
  for (auto& owned : channels_) {
    ChannelSlot& slot = *owned;
    if (slot.poisoned) continue;
    // At most one ring's worth: a client that keeps posting must not hold the shutdown up.
    for (std::uint32_t answered = 0; answered < kRingCapacity; ++answered) {
      const RequestDescriptor* front = slot.requests.front();
      if (front == nullptr) break;
      ResponseDescriptor response;
      clear_response_header(response, front->request_id);
      response.status = static_cast<std::uint32_t>(Status::kShuttingDown);
      set_message(response, "the sidecar is shutting down");
      slot.requests.pop();
      post_response(slot, response);
    }
  }
}

void Server::stop() {
  if (stopped_) return;
  if (owns_segment_) {
    segment_.header()->state.store(static_cast<std::uint32_t>(SidecarState::kStopping), std::memory_order_release);
  }
  stopping_.store(true, std::memory_order_release);
  // Clients stop finding results the moment the sidecar stops, not when its segment goes.
  if (cache_) cache_->close();
  if (owns_segment_) segment_.header()->request_bell.ring();
  for (auto& worker : workers_) {
    if (worker.joinable()) worker.join();
  }
  {
    std::lock_guard lock(reaper_mutex_);
    stopped_ = true;
  }
  reaper_wakeup_.notify_all();
  if (reaper_.joinable()) reaper_.join();
  if (owns_segment_) {
    answer_queued_with_shutdown();
    SegmentMapping::remove(segment_.name());
    owns_segment_ = false;
  }
  cache_.reset();  // removes the cache segment
}

}  // namespace sidecar
