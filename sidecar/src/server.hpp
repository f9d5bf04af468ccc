// The daemon assembled: status page, result cache, channel table, scheduler and workers, the
// socket and its connection thread. No LibTorch here: the model is reached through ModelRunner,
// so tests run a Server with a fake one.
//
// Threads: the workers (leader/follower, scheduler.hpp; a WorkerPool per model), the connection
// thread (connections.hpp), a housekeeper that folds the clients' cache hits into the eviction
// order every 100 ms and writes the metrics file, and a reloader that swaps models.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "access_policy.hpp"
#include "admission.hpp"
#include "channel_table.hpp"
#include "connections.hpp"
#include "execution.hpp"
#include "leader_wake.hpp"
#include "loaded_model.hpp"
#include "model_runner.hpp"
#include "options.hpp"
#include "result_cache.hpp"
#include "runtime_files.hpp"
#include "scheduler.hpp"
#include "status_page.hpp"
#include "worker_pool.hpp"

namespace sidecar {

// Loads a model file into a runner (ModelRunner::load in the daemon; a fake in tests). Throws
// std::runtime_error with one line saying what is wrong.
using ModelLoader = std::function<std::unique_ptr<ModelRunner>(const std::string& path)>;
// Told of a reload's progress: "reloading" as it starts, "serving" when it ended (either way).
using ReloadObserver = std::function<void(const char* state)>;
// Gets a reload's outcome: what was loaded, or why the old model still serves.
using ReloadReply = std::function<void(const Result<std::string>& outcome)>;

class Server {
 public:
  // `lock` is the instance lock of options.name in `runtime_dir`, taken before the model was
  // loaded, so that a second sidecar of the name is refused before it spends seconds loading.
  Server(SidecarOptions options, std::unique_ptr<ModelRunner> runner, std::string runtime_dir, InstanceLock lock);
  ~Server();  // stops if still running
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Makes the status page, the cache and the channel table, and opens the socket, where clients
  // can see the sidecar warm up. Errors are startup errors: one line, exit 1.
  Done open();
  // Starts the workers; each warms the model up on every shape and batch size on its own thread,
  // one after the other. Returns once all are warm; an error when warm-up failed on any of them.
  Done start();
  // Publishes the model description, marks the sidecar ready and hands channels to clients.
  void mark_ready();
  // Stops taking requests, lets the workers finish the ones they run, answers the ones still
  // queued with "shutting down", closes every connection and removes the socket. Idempotent.
  void stop();

  // Reloading: loads `path` (empty: the model's current file again) beside the serving model, warms
  // it up on new workers, swaps it in, empties the cache and publishes the new description; the
  // requests in flight finish on the old model, which is then released. If loading or warm-up
  // fails, the old model serves on and `reply` gets the reason. One reload at a time, in the
  // order asked, on the reloader thread. Any thread, after start().
  void set_model_loader(ModelLoader loader) { loader_ = std::move(loader); }
  void set_reload_observer(ReloadObserver observer) { reload_observer_ = std::move(observer); }
  // Where a reload that names no file finds one: the settings read again (a changed `model` in the
  // config file takes effect). Empty result, or none set: the file served now.
  void set_model_path_source(std::function<std::string()> source) { model_path_source_ = std::move(source); }
  void request_reload(std::string path, ReloadReply reply);

  const std::string& socket_path() const noexcept { return socket_path_; }
  const StatusPage& status_page() const noexcept { return status_->page(); }
  std::uint64_t start_generation() const noexcept { return lock_.start_generation(); }

 private:
  void housekeeper_main();
  void write_metrics_file();
  void reloader_main();
  Result<std::string> reload(const std::string& path);
  void drain_cache_hit_logs();
  void drop_broken_channels();
  void publish_model_description(const LoadedModel& model);
  WorkerPool::Settings pool_settings(std::uint64_t number) const;
  // The outputs of every warmed shape fit the default arena beside their inputs.
  std::shared_ptr<LoadedModel> loaded_model(std::unique_ptr<ModelRunner> runner, std::string path) const;
  // Sets the model's output bounds from its warm-up; an error when its largest requests cannot fit
  // a client's default arena.
  Done bound_outputs(LoadedModel& model) const;

  SidecarOptions options_;
  std::string runtime_dir_;
  InstanceLock lock_;
  std::string socket_path_;
  ModelLoader loader_;
  ReloadObserver reload_observer_;
  std::function<std::string()> model_path_source_;

  std::optional<StatusPageWriter> status_;
  std::unique_ptr<ResultCache> cache_;  // null when --cache-bytes is 0
  std::optional<LeaderWake> wake_;
  std::unique_ptr<ChannelTable> table_;
  std::unique_ptr<Executor> executor_;
  std::unique_ptr<Scheduler> scheduler_;
  std::optional<ListeningSocket> listening_;
  std::unique_ptr<ConnectionManager> connections_;

  // The pool serving now and its model; a reload's new pool while it warms up. Guarded by
  // pools_mutex_ (the pools' own threads never take it).
  std::mutex pools_mutex_;
  std::shared_ptr<LoadedModel> model_;
  std::unique_ptr<WorkerPool> pool_;
  WorkerPool* warming_pool_ = nullptr;
  std::uint64_t pools_made_ = 0;

  std::thread housekeeper_;
  std::thread reloader_;
  std::deque<std::pair<std::string, ReloadReply>> reloads_asked_;  // guarded by housekeeper_mutex_

  std::mutex housekeeper_mutex_;
  std::condition_variable housekeeper_wakeup_;
  std::condition_variable reload_asked_;
  std::atomic<bool> stopped_{false};  // set under housekeeper_mutex_, read anywhere
};

}  // namespace sidecar
