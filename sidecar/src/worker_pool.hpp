// The worker threads of one model: each prepares itself and warms the model up on every shape and
// batch size (TorchScript keeps what warm-up built per thread, so every thread that will run the
// model must warm it itself), one thread at a time, then waits to be told to serve. At start-up
// the first pool serves as soon as it is warm; a reload warms a new pool beside the serving one
// and retires the old one only once the new one is warm.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "loaded_model.hpp"
#include "scheduler.hpp"
#include "sidecar/shared/error.hpp"
#include "sidecar/shared/status_layout.hpp"

namespace sidecar {

class WorkerPool {
 public:
  struct Settings {
    int workers = 1;
    int warmup_iterations = 10;
    std::uint64_t number = 0;             // 0 at start-up, one more per reload
  };

  // Starts the threads; they warm up at once.
  WorkerPool(std::shared_ptr<LoadedModel> model, Scheduler& scheduler, StatusPage& page, const Settings& settings);
  ~WorkerPool();  // abandon() and join()
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  // Blocks until every worker is warm (fills model().warmup), one failed (its error), or the pool
  // was abandoned.
  Done wait_until_warm();
  // The warm workers start serving.
  void serve();
  // Workers not serving yet return (one warming up finishes that first). Any thread.
  void abandon();
  // Waits for every thread to return: after abandon(), or after the scheduler retired the pool.
  void join();

  const std::shared_ptr<LoadedModel>& model() const noexcept { return model_; }
  std::uint64_t number() const noexcept { return settings_.number; }

 private:
  void worker_main(int index);

  std::shared_ptr<LoadedModel> model_;
  Scheduler& scheduler_;
  StatusPage& page_;
  Settings settings_;
  std::vector<std::thread> threads_;

  std::mutex mutex_;
  std::condition_variable changed_;
  int warmed_ = 0;
  std::string error_;
  bool serving_ = false;
  bool abandoned_ = false;
};

}  // namespace sidecar
