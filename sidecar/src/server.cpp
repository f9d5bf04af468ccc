#include "server.hpp"

#include <pthread.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>

#include "arena_fit.hpp"
#include "rate_limited_log.hpp"
#include "sidecar/shared/metrics_text.hpp"

namespace sidecar {
namespace {

constexpr auto kHousekeepingPeriod = std::chrono::milliseconds(100);

RateLimitedWarning broken_channel_warning;
RateLimitedWarning metrics_file_warning;

void name_this_thread(const std::string& name) { ::pthread_setname_np(::pthread_self(), name.substr(0, 15).c_str()); }

}  // namespace

Server::Server(SidecarOptions options, std::unique_ptr<ModelRunner> runner, std::string runtime_dir, InstanceLock lock)
    : options_(std::move(options)), runtime_dir_(std::move(runtime_dir)), lock_(std::move(lock)) {
  model_ = loaded_model(std::move(runner), options_.model_path);
}

std::shared_ptr<LoadedModel> Server::loaded_model(std::unique_ptr<ModelRunner> runner, std::string path) const {
  auto model = std::make_shared<LoadedModel>();
  model->rules = AdmissionRules::from(runner->input_count(), options_.accepted_signatures, options_.warmup_signatures,
                                      options_.max_batch);
  model->warmed = WarmedShapes(model->rules.warmup_plan());
  model->runner = std::move(runner);
  model->path = std::move(path);
  return model;
}

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
  identity.input_count = static_cast<std::uint32_t>(model_->runner->input_count());
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
      options_.channel_memory != 0
          ? options_.channel_memory
          : ChannelGeometry::compute(options_.arena_bytes).channel_bytes * options_.max_clients;
  table_ = std::make_unique<ChannelTable>(options_.max_clients, channel_memory, *wake_, page);
  executor_ = std::make_unique<Executor>(cache_.get(), *table_, *wake_, page);
  SchedulerSettings scheduling;
  scheduling.intra_op_threads = options_.intra_op_threads;
  scheduling.spin_ns = std::uint64_t{options_.spin_us} * 1000u;
  scheduling.max_queue_delay_ns = std::uint64_t{options_.max_queue_delay_us} * 1000u;
  scheduling.wake_ahead_ns = std::uint64_t{options_.wake_ahead_us} * 1000u;
  scheduler_ = std::make_unique<Scheduler>(scheduling, *table_, *wake_, page, *executor_);

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
  connections_->set_reload_handler([this](UniqueFd socket, std::string path, const PeerCredentials&) {
    auto held = std::make_shared<UniqueFd>(std::move(socket));
    request_reload(std::move(path), [this, held](const Result<std::string>& outcome) {
      connections_->answer_reload(std::move(*held), outcome);
    });
  });
  if (Done started = connections_->start(); !started.ok()) return started;
  spdlog::info(
      "listening on {} (mode {:04o}; admits {}); up to {} clients, {} bytes of arena each by default, {} bytes of "
      "channels in all",
      socket_path_, options_.socket_mode, admitted, options_.max_clients, identity.default_arena_bytes, channel_memory);
  return {};
}

Done Server::bound_outputs(LoadedModel& model) const {
  model.bounds = output_bounds(model.rules, model.warmup);
  const std::uint64_t default_arena = ChannelGeometry::compute(options_.arena_bytes).arena_bytes;
  return check_requests_fit_arena(model.bounds, model.rules.batchable.empty() ? 1 : options_.max_batch, default_arena);
}

WorkerPool::Settings Server::pool_settings(std::uint64_t number) const {
  WorkerPool::Settings settings;
  settings.workers = options_.workers;
  settings.warmup_iterations = options_.warmup_iterations;
  settings.number = number;
  return settings;
}

Done Server::start() {
  status_->set_state(SidecarState::kWarming);
  WorkerPool* pool = nullptr;
  {
    std::lock_guard lock(pools_mutex_);
    pool_ = std::make_unique<WorkerPool>(model_, *scheduler_, status_->page(), pool_settings(pools_made_++));
    pool = pool_.get();
  }
  Done warm = pool->wait_until_warm();
  if (warm.ok()) warm = bound_outputs(*model_);
  if (!warm.ok()) {
    stop();
    return warm;
  }
  pool->serve();
  housekeeper_ = std::thread([this] { housekeeper_main(); });
  reloader_ = std::thread([this] { reloader_main(); });
  return {};
}

void Server::mark_ready() {
  publish_model_description(*model_);
  status_->set_state(SidecarState::kReady);
  connections_->mark_ready();
}

// Clients read the description while it may change (a reload): they copy it between two equal
// even readings of model_sequence.
void Server::publish_model_description(const LoadedModel& loaded) {
  StatusPage& page = status_->page();
  const std::uint64_t sequence = page.model_sequence.load(std::memory_order_relaxed);
  page.model_sequence.store(sequence + 1, std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_release);
  ModelDescription& model = page.model;
  model.input_count = static_cast<std::uint32_t>(loaded.runner->input_count());
  std::memset(model.model_path, 0, sizeof model.model_path);
  std::memcpy(model.model_path, loaded.path.data(), std::min<std::size_t>(loaded.path.size(), kModelPathBytes - 1));
  model.signature_count = static_cast<std::uint32_t>(std::min<std::size_t>(loaded.bounds.size(), kMaxSignatures));
  model.max_batch = loaded.rules.batchable.empty() ? 1 : options_.max_batch;
  model.output_count = loaded.warmup.empty() ? 0 : static_cast<std::uint32_t>(loaded.warmup[0].outputs.size());
  for (std::size_t s = 0; s < model.signature_count; ++s) {
    const OutputBound& bound = loaded.bounds[s];
    ModelSignature& signature = model.signatures[s];
    signature = ModelSignature{};
    std::copy_n(bound.accepted.begin(), std::min<std::size_t>(bound.accepted.size(), kMaxTensors), signature.inputs);
    std::copy_n(bound.outputs.begin(), std::min<std::size_t>(bound.outputs.size(), kMaxTensors), signature.outputs);
    signature.outputs_known = bound.known ? 1 : 0;
  }
  model.warmed_total = static_cast<std::uint32_t>(loaded.warmup.size());
  model.warmed_count = std::min<std::uint32_t>(model.warmed_total, kMaxWarmedShapes);
  for (std::uint32_t w = 0; w < model.warmed_count; ++w) {
    model.warmed[w] = WarmedShape{};
    const InputSignature& inputs = loaded.warmup[w].inputs;
    std::copy_n(inputs.begin(), std::min<std::size_t>(inputs.size(), kMaxTensors), model.warmed[w].inputs);
  }
  page.model_sequence.store(sequence + 2, std::memory_order_release);
}

void Server::request_reload(std::string path, ReloadReply reply) {
  {
    std::lock_guard lock(housekeeper_mutex_);
    if (!stopped_) {
      reloads_asked_.emplace_back(std::move(path), std::move(reply));
      reload_asked_.notify_all();
      return;
    }
  }
  reply(Error{ErrorCode::kShuttingDown, "the sidecar is stopping"});
}

void Server::reloader_main() {
  name_this_thread("sidecar-reload");
  std::unique_lock lock(housekeeper_mutex_);
  while (true) {
    reload_asked_.wait(lock, [&] { return stopped_.load() || !reloads_asked_.empty(); });
    if (stopped_) break;
    auto [path, reply] = std::move(reloads_asked_.front());
    reloads_asked_.pop_front();
    lock.unlock();
    if (reload_observer_) reload_observer_("reloading");
    const Result<std::string> outcome = reload(path);
    if (reload_observer_) reload_observer_("serving");
    reply(outcome);
    lock.lock();
  }
  // Asked for, never started: each still gets its answer.
  for (auto& [path, reply] : reloads_asked_) reply(Error{ErrorCode::kShuttingDown, "the sidecar is stopping"});
  reloads_asked_.clear();
}

Result<std::string> Server::reload(const std::string& asked_path) {
  LifecycleCounters& counters = status_->page().lifecycle;
  const auto refuse = [&](const std::string& why) -> Result<std::string> {
    counters.failed_reloads.fetch_add(1, std::memory_order_relaxed);
    spdlog::error("reload refused, the old model serves on: {}", why);
    return Error{ErrorCode::kModelError, why};
  };
  if (!loader_) return refuse("this sidecar cannot load models (no loader)");
  std::string path = asked_path;
  if (path.empty() && model_path_source_) path = model_path_source_();
  if (path.empty()) {
    std::lock_guard lock(pools_mutex_);
    path = model_->path;
  }
  spdlog::info("reloading: loading {}", path);
  std::shared_ptr<LoadedModel> model;
  try {
    model = loaded_model(loader_(path), path);
  } catch (const std::exception& error) {
    return refuse(error.what());
  }
  spdlog::info("reloading: loaded {} ({}); warming up {} new workers", path, model->runner->preparation(),
               options_.workers);

  std::unique_ptr<WorkerPool> pool;
  {
    std::lock_guard lock(pools_mutex_);
    if (stopped_) return Error{ErrorCode::kShuttingDown, "the sidecar is stopping"};
    pool = std::make_unique<WorkerPool>(model, *scheduler_, status_->page(), pool_settings(pools_made_++));
    warming_pool_ = pool.get();
  }
  Done warm = pool->wait_until_warm();
  if (!warm.ok()) {
    warm = Error{warm.code(), "warming up " + path + " failed: " + warm.message()};
  } else if (Done fits = bound_outputs(*model); !fits.ok()) {
    warm = Error{fits.code(), path + ": " + fits.message()};
  }
  std::unique_ptr<WorkerPool> old;
  {
    std::lock_guard lock(pools_mutex_);
    warming_pool_ = nullptr;
    if (stopped_) {
      // Not the new model's failure: the stop abandoned its warm-up.
      pool->abandon();
      return Error{ErrorCode::kShuttingDown, "the sidecar is stopping"};
    }
    if (!warm.ok()) {
      pool->abandon();
    } else {
      // From here the new workers take requests beside the old ones, which finish what they run
      // and return: each request runs wholly on one model.
      pool->serve();
      scheduler_->retire_pools_before(pool->number());
      old = std::move(pool_);
      pool_ = std::move(pool);
      model_ = model;
    }
  }
  if (!warm.ok()) return refuse(warm.message());
  old->join();
  // No request of the old model runs now: what it put in the cache goes, and nothing it computes
  // can be stored after this.
  std::uint64_t dropped = 0;
  if (cache_) dropped = cache_->flush().entries;
  publish_model_description(*model);
  counters.reloads.fetch_add(1, std::memory_order_relaxed);
  counters.last_reload_unix_ns.store(static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                                                    std::chrono::system_clock::now().time_since_epoch())
                                                                    .count()),
                                     std::memory_order_relaxed);
  const std::string message = "reloaded " + path + " (" + model->runner->preparation() + "); " +
                              std::to_string(dropped) + " cache entries dropped";
  spdlog::info("{}", message);
  return message;
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
// would forbid the client's writes too), such a client is dropped when it is seen. Every page of a
// channel was allocated when it was made, and a hole gives some back, which the file's block count
// shows at once; looking for the hole itself walks every page (most of an idle sidecar's CPU when
// it was done on every look), so it is done only to name the place in the log.
void Server::drop_broken_channels() {
  bool dropped = false;
  {
    std::lock_guard lock(table_->housekeeping_mutex);
    table_->visit_active_from(0, [&](ChannelSlot& slot) {
      if (!slot.memory.mapping || slot.drop_requested.load(std::memory_order_relaxed)) return false;
      struct stat info {};
      if (::fstat(slot.memory.fd.get(), &info) != 0 ||
          static_cast<std::uint64_t>(info.st_blocks) * 512 >= slot.memory.mapping.size()) {
        return false;
      }
      const off_t hole = ::lseek(slot.memory.fd.get(), 0, SEEK_HOLE);
      if (hole >= 0 && static_cast<std::uint64_t>(hole) < slot.memory.mapping.size()) {
        broken_channel_warning("client {} (pid {}) punched a hole in its channel at byte {}; dropping it", slot.index,
                               slot.peer_pid, hole);
        slot.drop_requested.store(true, std::memory_order_relaxed);
        dropped = true;
      }
      return false;
    });
  }
  if (dropped) connections_->poke();
}

// Written beside the target and renamed over it, so that a reader (node_exporter) never sees half
// a file. A failure is logged once per kind and retried next time.
void Server::write_metrics_file() {
  const std::string text = metrics_as_prometheus(snapshot_metrics(status_->page(), options_.name));
  const std::string temporary = options_.metrics_file + ".tmp";
  FILE* file = std::fopen(temporary.c_str(), "w");
  bool written = file != nullptr && std::fwrite(text.data(), 1, text.size(), file) == text.size();
  if (file != nullptr) written = std::fclose(file) == 0 && written;
  if (written && std::rename(temporary.c_str(), options_.metrics_file.c_str()) == 0) return;
  metrics_file_warning("cannot write the metrics file {}: {}", options_.metrics_file, std::strerror(errno));
  ::unlink(temporary.c_str());
}

void Server::housekeeper_main() {
  name_this_thread("sidecar-house");
  const auto metrics_every = std::chrono::milliseconds(options_.metrics_interval_ms);
  auto metrics_due = std::chrono::steady_clock::now();
  std::unique_lock lock(housekeeper_mutex_);
  while (!housekeeper_wakeup_.wait_for(lock, kHousekeepingPeriod, [&] { return stopped_.load(); })) {
    lock.unlock();
    drain_cache_hit_logs();
    drop_broken_channels();
    if (!options_.metrics_file.empty() && std::chrono::steady_clock::now() >= metrics_due) {
      write_metrics_file();
      metrics_due = std::chrono::steady_clock::now() + metrics_every;
    }
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
  reload_asked_.notify_all();
  {
    std::lock_guard lock(pools_mutex_);
    if (warming_pool_ != nullptr) warming_pool_->abandon();
  }
  if (reloader_.joinable()) reloader_.join();
  if (housekeeper_.joinable()) housekeeper_.join();
  if (status_) status_->set_state(SidecarState::kStopping);
  if (connections_) connections_->begin_stopping();
  // Clients stop finding results the moment the sidecar stops.
  if (cache_) cache_->close();
  if (scheduler_) scheduler_->stop();
  {
    std::lock_guard lock(pools_mutex_);
    if (pool_) {
      pool_->abandon();
      pool_->join();
    }
  }
  if (scheduler_) scheduler_->answer_queued_with_shutdown();
  if (connections_) connections_->stop();
  if (listening_) listening_->remove_file();
}

}  // namespace sidecar
