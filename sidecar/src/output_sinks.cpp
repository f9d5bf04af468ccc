#include "output_sinks.hpp"

#include <algorithm>
#include <cstring>

namespace sidecar {

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

Status ArenaOutputSink::accept(std::span<const OutputView> outputs, std::string& message) {
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

void ArenaOutputSink::capture(std::span<const OutputView> outputs) {
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

Status BatchOutputSink::accept(std::span<const OutputView> outputs, std::string& message) {
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
    std::uint8_t* arena = taken->slot->arena;
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

}  // namespace sidecar
