// Running what the leader took: each request admitted alone, then run alone or in a batch, its
// outputs written into the client's output region (split by rows for a batch), its result stored
// in the cache, and its answer posted. No LibTorch here: the model is reached through ModelRunner.
#pragma once

#include <atomic>
#include <cstdint>
#include <span>

#include "admission.hpp"
#include "channel_table.hpp"
#include "loaded_model.hpp"
#include "result_cache.hpp"
#include "sidecar/shared/protocol.hpp"
#include "work.hpp"

namespace sidecar {

class Executor {
 public:
  // `cache` may be null (--cache-bytes 0).
  Executor(ResultCache* cache, ChannelTable& table, LeaderWake& wake, StatusPage& status);

  // Runs and answers everything in `work` on work.model: one request, or a batch whose requests are
  // each admitted alone first (a bad one is answered at once and the others run).
  void execute(Work& work);

  // Answers a request with a status and no outputs, e.g. "shutting down", and settles its channel.
  void answer_without_running(ChannelSlot& slot, std::uint64_t request_id, Status status, const std::string& message);

 private:
  bool admit(const Work& work, TakenRequest& taken);
  void run_alone(Work& work, TakenRequest& taken);
  static void count_if_unwarmed(Work& work, const InputView* inputs, std::uint32_t count);
  bool run_batched(Work& work, std::span<TakenRequest*> batch);
  void finish(Work& work, TakenRequest& taken);
  void post_response(ChannelSlot& slot, const ResponseDescriptor& response);
  bool answer_from_cache(const TakenRequest& taken, ResponseDescriptor& response);
  bool stage_inputs(Work& work, TakenRequest& taken);
  void store_in_cache(TakenRequest& taken);
  void flush_cache(ResponseDescriptor& response);

  ResultCache* cache_;
  ChannelTable& table_;
  LeaderWake& wake_;
  StatusPage& status_;
  std::atomic<std::uint64_t> last_flush_ns_{0};
};

}  // namespace sidecar
