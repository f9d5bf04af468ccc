// The daemon's serving logic: owns the segment, the worker threads and the channel lifecycle.
// No LibTorch here: the model is reached through ModelRunner.
//
// Threads:
// - workers: leader/follower. One worker at a time (the leader) polls the request rings, spinning
//   for --spin-us before it sleeps on the segment's doorbell. When it takes a request it hands
//   leadership to the next worker and runs the request itself: no hand-off between threads on the
//   hot path, and only one thread spinning, which matters on a 2-core machine where the client
//   spins too.
// - the reaper: every 100 ms, finds channels whose client detached or died, so the leader can
//   recycle them; it reads /proc, which the leader must not do on the hot path.
#pragma once

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "model_runner.hpp"
#include "options.hpp"
#include "result_cache.hpp"
#include "sidecar/shared/segment.hpp"

namespace sidecar {

struct ChannelSlot;
struct OutputRegion;
struct TakenRequest;

class Server {
 public:
  Server(SidecarOptions options, std::unique_ptr<ModelRunner> runner);
  ~Server();  // stops if still running, removes the segment
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Creates the segment in state "starting". Throws std::runtime_error with one clear line when
  // another live sidecar has the name or the segment cannot be made.
  void create_segment();

  // Starts the workers; each warms the model up on every signature on its own thread, one after
  // the other. Returns once all are warm and serving; throws if warm-up failed on any of them.
  void start();

  // Publishes the model description and marks the segment ready. Call after start().
  void mark_ready();

  // Stops taking requests, lets the workers finish the ones they run, answers the ones still queued
  // with "shutting down", joins all threads and removes the segment. Idempotent.
  void stop();

  const std::vector<WarmupResult>& warmup_results() const noexcept { return warmup_results_; }
  const std::string& segment_name() const noexcept { return segment_.name(); }

 private:
  struct Work;

  void worker_main(int index);
  void reaper_main();
  bool lead_and_take(Work& work);
  void gather_batch(Work& work);
  std::uint32_t batch_rows_of(const RequestDescriptor& request) const;
  bool spinning_fits() const noexcept;
  bool poll_once(Work& work, const RequestDescriptor* batch_with);
  bool any_request_waiting();
  bool can_take_from(ChannelSlot& slot);
  bool recycle_possible();
  void recycle_flagged_channels();
  bool admit(TakenRequest& taken);
  void execute(Work& work, TakenRequest& taken);
  void execute_batch(Work& work);
  void run_alone(Work& work, TakenRequest& taken);
  bool run_batched(Work& work, std::span<TakenRequest*> batch);
  void finish(TakenRequest& taken);
  void create_cache();
  bool answer_from_cache(ChannelSlot& slot, const RequestDescriptor& request, const OutputRegion& region,
                         ResponseDescriptor& response);
  bool stage_inputs(Work& work, TakenRequest& taken);
  void store_in_cache(TakenRequest& taken);
  void flush_cache(ResponseDescriptor& response);
  void drain_cache_hit_logs();
  void answer_queued_with_shutdown();
  void publish_model_description();

  SidecarOptions options_;
  std::unique_ptr<ModelRunner> runner_;
  SegmentMapping segment_;
  SegmentGeometry geometry_;
  bool owns_segment_ = false;
  std::vector<std::unique_ptr<ChannelSlot>> channels_;
  std::unique_ptr<ResultCache> cache_;  // null when --cache-bytes is 0
  std::mutex hit_log_mutex_;            // the channels' hit-log consumers, and:
  std::uint64_t client_hits_of_recycled_channels_ = 0;
  std::atomic<std::uint64_t> last_flush_ns_{0};

  std::vector<std::thread> workers_;
  std::thread reaper_;
  std::mutex leader_mutex_;
  std::uint32_t poll_cursor_ = 0;         // guarded by leader_mutex_
  std::uint64_t next_service_order_ = 1;  // guarded by leader_mutex_
  // Declared signatures whose inputs all have a leading dim of 1: with --max-batch > 1, requests
  // of these shapes with 1..max_batch rows are batched.
  std::vector<InputSignature> batchable_signatures_;
  std::vector<InputSignature> warmup_plan_;  // the declared signatures, then the batch sizes
  std::uint64_t max_queue_delay_ns_ = 0;
  std::atomic<bool> stopping_{false};
  std::atomic<std::uint32_t> recycle_flagged_{0};
  std::uint64_t spin_ns_ = 0;
  int usable_cpus_ = 1;
  int cpus_kept_for_clients_ = 0;
  std::atomic<int> executing_{0};  // workers running a request

  std::mutex warmup_mutex_;
  std::condition_variable warmup_done_;
  int warmed_workers_ = 0;
  std::string warmup_error_;
  std::vector<WarmupResult> warmup_results_;

  std::mutex reaper_mutex_;
  std::condition_variable reaper_wakeup_;
  bool stopped_ = false;
};

}  // namespace sidecar
