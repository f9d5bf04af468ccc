#include "worker_pool.hpp"

#include <pthread.h>
#include <spdlog/spdlog.h>

#include <algorithm>

namespace sidecar {

WorkerPool::WorkerPool(std::shared_ptr<LoadedModel> model, Scheduler& scheduler, StatusPage& page,
                       const Settings& settings)
    : model_(std::move(model)), scheduler_(scheduler), page_(page), settings_(settings) {
  for (int i = 0; i < settings_.workers; ++i) threads_.emplace_back([this, i] { worker_main(i); });
}

WorkerPool::~WorkerPool() {
  abandon();
  join();
}

Done WorkerPool::wait_until_warm() {
  std::unique_lock lock(mutex_);
  changed_.wait(lock, [&] { return warmed_ == settings_.workers || !error_.empty() || abandoned_; });
  if (!error_.empty()) return {ErrorCode::kModelError, error_};
  if (abandoned_) return {ErrorCode::kShuttingDown, "warm-up abandoned: the sidecar is stopping"};
  return {};
}

void WorkerPool::serve() {
  std::lock_guard lock(mutex_);
  serving_ = true;
  changed_.notify_all();
}

void WorkerPool::abandon() {
  std::lock_guard lock(mutex_);
  abandoned_ = true;
  changed_.notify_all();
}

void WorkerPool::join() {
  for (std::thread& thread : threads_) {
    if (thread.joinable()) thread.join();
  }
}

void WorkerPool::worker_main(int index) {
  const std::string name = "sidecar-w" + std::to_string(settings_.number) + "." + std::to_string(index);
  ::pthread_setname_np(::pthread_self(), name.substr(0, 15).c_str());
  model_->runner->prepare_worker_thread();
  std::unique_lock lock(mutex_);
  // One worker warms up at a time, so that the first-call and warmed latencies it logs are not
  // inflated by the others competing for the cores (and, in a reload, so that the workers still
  // serving keep as many cores as they can).
  if (abandoned_ || !error_.empty()) return;
  try {
    auto results = model_->runner->warm_up(model_->warmed.plan(), settings_.warmup_iterations);
    for (const WarmupResult& result : results) {
      spdlog::info("worker {}.{} warmed ({}): first call {:.1f} us, warmed {:.1f} us", settings_.number, index,
                   describe_signature(result.inputs), result.first_call_us, result.warmed_call_us);
    }
    if (model_->warmup.empty()) model_->warmup = std::move(results);
    ++warmed_;
  } catch (const std::exception& error) {
    error_ = error.what();
  }
  changed_.notify_all();
  changed_.wait(lock, [&] { return serving_ || abandoned_ || !error_.empty(); });
  if (!serving_ || abandoned_) return;
  lock.unlock();
  // Each worker writes its own shard; consecutive pools (serving side by side during a reload) get
  // different ones while 2 x workers fit in the page's shards.
  const std::uint64_t shard = (settings_.number * static_cast<std::uint64_t>(settings_.workers) + index) % kMetricShards;
  const bool exclusive = 2 * static_cast<std::uint64_t>(settings_.workers) <= kMetricShards;
  scheduler_.serve(*model_, MetricsRecorder(page_.metrics[shard], exclusive), settings_.number);
}

}  // namespace sidecar
