// Where a forward's outputs go: into the client's output region (ArenaOutputSink), or split by
// rows into each batched request's region (BatchOutputSink). Both keep private copies for the
// result cache when asked, since the arena is the client's to change once the answer is posted.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "model_runner.hpp"
#include "sidecar/shared/output_region.hpp"
#include "work.hpp"

namespace sidecar {

// Zeroes the fixed part only: the tensor table and message are copied out up to their used length.
void clear_response_header(ResponseDescriptor& response, std::uint64_t request_id);
void set_message(ResponseDescriptor& response, const std::string& message);

class ArenaOutputSink final : public OutputSink {
 public:
  // `capture` null: no copy for the cache.
  ArenaOutputSink(std::uint8_t* arena, OutputRegion region, ResponseDescriptor& response, CapturedOutputs* capture)
      : arena_(arena), region_(region), response_(response), capture_(capture) {}

  Status accept(std::span<const OutputView> outputs, std::string& message) override;

 private:
  void capture(std::span<const OutputView> outputs);

  std::uint8_t* arena_;
  OutputRegion region_;
  ResponseDescriptor& response_;
  CapturedOutputs* capture_;
};

// Every output must have the batch's rows along dim 0; otherwise nothing is written and the
// requests run one by one.
class BatchOutputSink final : public OutputSink {
 public:
  BatchOutputSink(std::span<TakenRequest*> batch, std::uint64_t total_rows, CapturedOutputs& capture)
      : batch_(batch), total_rows_(total_rows), capture_(capture) {}

  Status accept(std::span<const OutputView> outputs, std::string& message) override;

 private:
  std::span<TakenRequest*> batch_;
  std::uint64_t total_rows_;
  CapturedOutputs& capture_;
};

}  // namespace sidecar
