// The daemon assembled: status page, result cache, channel table, scheduler and workers, the
// socket and its connection thread. No LibTorch here: the model is reached through ModelRunner,
// so tests run a Server with a fake one.
//
// Threads: the workers (leader/follower, scheduler.hpp), the connection thread (connections.hpp)
// and a housekeeper that folds the clients' cache hits into the eviction order every 100 ms.
#pragma once

#include <condition_variable>
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
#include "model_runner.hpp"
#include "options.hpp"
#include "result_cache.hpp"
#include "runtime_files.hpp"
#include "scheduler.hpp"
#include "status_page.hpp"

namespace sidecar {

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

  const std::vector<WarmupResult>& warmup_results() const noexcept { return warmup_results_; }
  const std::string& socket_path() const noexcept { return socket_path_; }
  std::uint64_t start_generation() const noexcept { return lock_.start_generation(); }

 private:
  void worker_main(int index);
  void housekeeper_main();
  void drain_cache_hit_logs();
  void drop_broken_channels();
  void publish_model_description();

  SidecarOptions options_;
  std::unique_ptr<ModelRunner> runner_;
  std::string runtime_dir_;
  InstanceLock lock_;
  std::string socket_path_;
  AdmissionRules rules_;

  std::optional<StatusPageWriter> status_;
  std::unique_ptr<ResultCache> cache_;  // null when --cache-bytes is 0
  std::optional<LeaderWake> wake_;
  std::unique_ptr<ChannelTable> table_;
  std::unique_ptr<Executor> executor_;
  std::unique_ptr<Scheduler> scheduler_;
  std::optional<ListeningSocket> listening_;
  std::unique_ptr<ConnectionManager> connections_;

  std::vector<std::thread> workers_;
  std::thread housekeeper_;

  std::mutex warmup_mutex_;
  std::condition_variable warmup_done_;
  int warmed_workers_ = 0;
  std::string warmup_error_;
  std::vector<WarmupResult> warmup_results_;

  std::mutex housekeeper_mutex_;
  std::condition_variable housekeeper_wakeup_;
  bool stopped_ = false;
};

}  // namespace sidecar
