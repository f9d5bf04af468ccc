#include "server.hpp"

#include <pthread.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>

#include "arena_fit.hpp"
#include "rate_limited_log.hpp"

namespace sidecar {
namespace {

constexpr auto kHousekeepingPeriod = std::chrono::milliseconds(100);

RateLimitedWarning broken_channel_warning;

void name_this_thread(const std::string& name) { ::pthread_setname_np(::pthread_self(), name.substr(0, 15).c_str()); }

}  // namespace

Server::Server(SidecarOptions options, std::unique_ptr<ModelRunner> runner, std::string runtime_dir,
               InstanceLock lock)
    : options_(std::move(options)),
      runner_(std::move(runner)),
      runtime_dir_(std::move(runtime_dir)),
      lock_(std::move(lock)),
      rules_(AdmissionRules::from(runner_->input_count(), options_.warmup_signatures, options_.max_batch)) {}

Server::~Server() { stop(); }

Done Server::open() {
  StatusIdentity identity;
  identity.start_generation = lock_.start_generation();
  identity.max_clients = options_.max_clients;
  identity.cache_scope = options_.cache_scope;
  identity.default_arena_bytes = ChannelGeometry::compute(options_.arena_bytes).arena_bytes;
  identity.max_arena_bytes = options_.max_arena_bytes;
  identity.cache_bytes = options_.cache_bytes;
  identity.model_path = options_.model_path;
  identity.input_count = static_cast<std::uint32_t>(runner_->input_count());
  Result<StatusPageWriter> status = StatusPageWriter::create(identity);
  if (!status.ok()) return status.error();
  status_.emplace(std::move(*status));
  StatusPage& page = status_->page();

  if (options_.cache_bytes != 0) {
    CacheSettings settings;
    settings.budget_bytes = options_.cache_bytes;
    settings.max_entry_bytes = options_.cache_max_entry_bytes;
    Result<std::unique_ptr<ResultCache>> cache = ResultCache::create(settings, page.cache);
    if (!cache.ok()) return cache.error();
    cache_ = std::move(*cache);
    const CacheHeader& header = cache_->view().header();
    spdlog::info("result cache: {} bytes, {} slots, {} bytes of metadata, entries up to {} bytes, scope {}",
                 header.segment_bytes, header.bucket_count * kCacheWays, header.heap_offset, header.max_entry_bytes,
                 options_.cache_scope == CacheScope::kShared ? "shared" : "per-user");
  } else {
    spdlog::info("result cache off (--cache-bytes 0)");
  }

  Result<LeaderWake> wake = LeaderWake::create();
  if (!wake.ok()) return wake.error();
  wake_.emplace(std::move(*wake));
  const std::uint64_t channel_memory =
      options_.channel_memory != 0 ? options_.channel_memory
                                   : ChannelGeometry::compute(options_.arena_bytes).channel_bytes * options_.max_clients;
  table_ = std::make_unique<ChannelTable>(options_.max_clients, channel_memory, *wake_, page);
  executor_ = std::make_unique<Executor>(*runner_, cache_.get(), rules_, *table_, *wake_, page);
  SchedulerSettings scheduling;
  scheduling.intra_op_threads = options_.intra_op_threads;
  scheduling.spin_ns = std::uint64_t{options_.spin_us} * 1000u;
  scheduling.max_queue_delay_ns = std::uint64_t{options_.max_queue_delay_us} * 1000u;
  scheduling.wake_ahead_ns = std::uint64_t{options_.wake_ahead_us} * 1000u;
  scheduler_ = std::make_unique<Scheduler>(scheduling, rules_, *table_, *wake_, page, *executor_);

  Result<AccessPolicy> policy = AccessPolicy::resolve(options_.allow_users, options_.allow_groups);
  if (!policy.ok()) return policy.error();
  const std::string admitted = policy->describe();
  Result<ListeningSocket> listening = ListeningSocket::bind(runtime_dir_, options_.name, options_.socket_mode);
  if (!listening.ok()) return listening.error();
  listening_.emplace(std::move(*listening));
  socket_path_ = listening_->path();
  ConnectionSettings settings;
  settings.default_arena_bytes = options_.arena_bytes;
  settings.max_arena_bytes = options_.max_arena_bytes;
  settings.cache_scope = options_.cache_scope;
  connections_ =
      std::make_unique<ConnectionManager>(settings, std::move(*policy), *listening_, *table_, *status_, cache_.get());
  if (Done started = connections_->start(); !started.ok()) return started;
  spdlog::info(
      "listening on {} (mode {:04o}; admits {}); up to {} clients, {} bytes of arena each by default, {} bytes of "
      "channels in all",
      socket_path_, options_.socket_mode, admitted, options_.max_clients, identity.default_arena_bytes, channel_memory);
  return {};
}

Done Server::start() {
  status_->set_state(SidecarState::kWarming);
  for (int i = 0; i < options_.workers; ++i) workers_.emplace_back([this, i] { worker_main(i); });
  std::unique_lock lock(warmup_mutex_);
  warmup_done_.wait(lock, [&] { return warmed_workers_ == options_.workers || !warmup_error_.empty(); });
  if (!warmup_error_.empty()) {
    const std::string error = warmup_error_;
    lock.unlock();
    stop();
    return {ErrorCode::kModelError, error};
  }
  const std::uint64_t default_arena = ChannelGeometry::compute(options_.arena_bytes).arena_bytes;
  if (Done fits = check_requests_fit_arena(warmup_results_, rules_.batchable.empty() ? 1 : options_.max_batch,
                                           default_arena);
      !fits.ok()) {
    lock.unlock();
    stop();
    return fits;
  }
  housekeeper_ = std::thread([this] { housekeeper_main(); });
  return {};
}

void Server::mark_ready() {
  publish_model_description();
  status_->set_state(SidecarState::kReady);
  connections_->mark_ready();
}

void Server::publish_model_description() {
  ModelDescription& model = status_->page().model;
  model.signature_count = static_cast<std::uint32_t>(std::min<std::size_t>(warmup_results_.size(), kMaxSignatures));
  model.max_batch = rules_.batchable.empty() ? 1 : options_.max_batch;
  model.output_count = warmup_results_.empty() ? 0 : static_cast<std::uint32_t>(warmup_results_[0].outputs.size());
  for (std::size_t s = 0; s < model.signature_count; ++s) {
    const WarmupResult& result = warmup_results_[s];
    std::copy(result.inputs.begin(), result.inputs.end(), model.signatures[s].inputs);
    std::copy_n(result.outputs.begin(), std::min<std::size_t>(result.outputs.size(), kMaxTensors),
                model.signatures[s].outputs);
  }
}

void Server::worker_main(int index) {
  name_this_thread("sidecar-w" + std::to_string(index));
  runner_->prepare_worker_thread();
  {
    // One worker warms up at a time, so the first-call and warmed latencies it logs are not
    // inflated by the others competing for the cores.
    std::unique_lock lock(warmup_mutex_);
    if (!warmup_error_.empty()) return;
    try {
      auto results = runner_->warm_up(rules_.warmup_plan(), options_.warmup_iterations);
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
  scheduler_->serve();
}

// Recency from the clients' own hits, and their hit counts for the statistics.
void Server::drain_cache_hit_logs() {
  if (cache_ == nullptr) return;
  std::lock_guard lock(table_->housekeeping_mutex);
  std::uint64_t client_hits = table_->client_hits_of_reclaimed;
  table_->visit_active_from(0, [&](ChannelSlot& slot) {
    if (!slot.memory.mapping) return false;  // being reclaimed
    client_hits += slot.shared->cache_hits.load(std::memory_order_relaxed);
    // One ring's worth at most: a client that keeps reporting cannot keep the housekeeper here.
    for (std::uint32_t n = 0; n < kHitLogCapacity; ++n) {
      const CacheHitRecord* record = slot.hit_log.front();
      if (record == nullptr) break;
      const CacheHitRecord hit = *record;
      slot.hit_log.pop();
      cache_->touch(hit.slot, hit.sequence);
    }
    return false;
  });
  cache_->set_client_hits(client_hits);
}

// A client that punches holes in its channel (fallocate) frees pages the sidecar then faults back
// in when it writes there, charged to the sidecar's memory: short of a seal that forbids it (which
// would forbid the client's writes too), such a client is dropped when it is seen.
void Server::drop_broken_channels() {
  bool dropped = false;
  {
    std::lock_guard lock(table_->housekeeping_mutex);
    table_->visit_active_from(0, [&](ChannelSlot& slot) {
      if (!slot.memory.mapping || slot.drop_requested.load(std::memory_order_relaxed)) return false;
      const off_t hole = ::lseek(slot.memory.fd.get(), 0, SEEK_HOLE);
      if (hole >= 0 && static_cast<std::uint64_t>(hole) < slot.memory.mapping.size()) {
        broken_channel_warning("client {} (pid {}) punched a hole in its channel at byte {}; dropping it",
                               slot.index, slot.peer_pid, hole);
        slot.drop_requested.store(true, std::memory_order_relaxed);
        dropped = true;
      }
      return false;
    });
  }
  if (dropped) connections_->poke();
}

void Server::housekeeper_main() {
  name_this_thread("sidecar-house");
  std::unique_lock lock(housekeeper_mutex_);
  while (!housekeeper_wakeup_.wait_for(lock, kHousekeepingPeriod, [&] { return stopped_; })) {
    lock.unlock();
    drain_cache_hit_logs();
    drop_broken_channels();
    lock.lock();
  }
}

void Server::stop() {
  {
    std::lock_guard lock(housekeeper_mutex_);
    if (stopped_) return;
    stopped_ = true;
  }
  housekeeper_wakeup_.notify_all();
  if (housekeeper_.joinable()) housekeeper_.join();
  if (status_) status_->set_state(SidecarState::kStopping);
  if (connections_) connections_->begin_stopping();
  // Clients stop finding results the moment the sidecar stops.
  if (cache_) cache_->close();
  if (scheduler_) scheduler_->stop();
  for (auto& worker : workers_) {
    if (worker.joinable()) worker.join();
  }
  if (scheduler_) scheduler_->answer_queued_with_shutdown();
  if (connections_) connections_->stop();
  if (listening_) listening_->remove_file();
}

}  // namespace sidecar
