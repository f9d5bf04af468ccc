#include <cstring>
#include <new>
#include <string>
#include <vector>

#include "sidecar/client.hpp"
#include "sidecar/sidecar_client.h"

static_assert(SIDECAR_OUT_OF_MEMORY == static_cast<int>(sidecar::ErrorCode::kOutOfMemory) &&
                  SIDECAR_PROTOCOL_ERROR == static_cast<int>(sidecar::ErrorCode::kProtocolError) &&
                  SIDECAR_TOO_MANY_CLIENTS == static_cast<int>(sidecar::ErrorCode::kTooManyClients),
              "sidecar_status and sidecar::ErrorCode must keep the same numbers");

struct sidecar_client {
  sidecar::Client client;
  std::string last_error;
  std::vector<sidecar::Tensor> last_outputs;  // what sidecar_wait/sidecar_try_get point into
};

namespace {
thread_local std::string connect_error;

sidecar_status fail(sidecar_client* handle, sidecar::ErrorCode code, const std::string& message) {
  handle->last_error = message;
  return static_cast<sidecar_status>(code);
}
}  // namespace

extern "C" {

sidecar_status sidecar_connect(const char* name, int64_t timeout_ms, sidecar_client** out) {
  if (name == nullptr || out == nullptr) {
    connect_error = "name and out must not be NULL";
    return SIDECAR_INVALID_ARGUMENT;
  }
  sidecar::ConnectOptions options;
  options.timeout = std::chrono::milliseconds(timeout_ms < 0 ? 0 : timeout_ms);
  auto connected = sidecar::Client::connect(name, options);
  if (!connected.ok()) {
    connect_error = connected.message();
    return static_cast<sidecar_status>(connected.code());
  }
  *out = new (std::nothrow) sidecar_client{std::move(connected).value(), {}, {}};
  if (*out == nullptr) {
    connect_error = "out of memory";
    return SIDECAR_INVALID_ARGUMENT;
  }
  connect_error.clear();
  return SIDECAR_OK;
}

const char* sidecar_connect_error(void) { return connect_error.c_str(); }

sidecar_status sidecar_infer(sidecar_client* client, const sidecar_tensor* inputs, size_t input_count,
                             sidecar_tensor* outputs, size_t* output_count, int64_t timeout_us) {
  if (client == nullptr) return SIDECAR_INVALID_ARGUMENT;
  if ((inputs == nullptr && input_count != 0) || output_count == nullptr ||
      (outputs == nullptr && *output_count != 0)) {
    return fail(client, sidecar::ErrorCode::kInvalidArgument, "inputs, outputs and output_count must not be NULL");
  }
  for (size_t i = 0; i < input_count; ++i) {
    const sidecar_tensor& input = inputs[i];
    if (input.rank < 0 || (input.rank > 0 && input.shape == nullptr) || (input.bytes > 0 && input.data == nullptr) ||
        !sidecar::is_known_dtype(static_cast<std::uint8_t>(input.dtype)) || input.dtype > 255) {
      return fail(client, sidecar::ErrorCode::kInvalidArgument,
                  "input " + std::to_string(i) + ": bad dtype, rank, shape or data");
    }
    auto buffer = client->client.input_buffer(static_cast<sidecar::DType>(input.dtype),
                                              std::span<const int64_t>(input.shape, static_cast<size_t>(input.rank)));
    if (!buffer.ok()) return fail(client, buffer.code(), "input " + std::to_string(i) + ": " + buffer.message());
    if (buffer->size() != input.bytes) {
      client->client.reset_inputs();
      return fail(client, sidecar::ErrorCode::kInvalidArgument,
                  "input " + std::to_string(i) + ": " + std::to_string(input.bytes) + " bytes given, the shape needs " +
                      std::to_string(buffer->size()));
    }
    if (input.bytes) std::memcpy(buffer->data(), input.data, input.bytes);
  }
  auto result = client->client.run(std::chrono::microseconds(timeout_us < 0 ? 0 : timeout_us));
  if (!result.ok()) return fail(client, result.code(), result.message());
  if (result->size() > *output_count) {
    *output_count = result->size();
    return fail(client, sidecar::ErrorCode::kInvalidArgument,
                "the model returned " + std::to_string(result->size()) + " outputs; the outputs array holds fewer");
  }
  for (size_t i = 0; i < result->size(); ++i) {
    const sidecar::TensorView& view = (*result)[i];
    outputs[i] = sidecar_tensor{static_cast<int32_t>(view.dtype), static_cast<int32_t>(view.shape.size()),
                                view.shape.data(), view.data, view.bytes};
  }
  *output_count = result->size();
  client->last_error.clear();
  return SIDECAR_OK;
}

sidecar_status sidecar_set_cache_lookup(sidecar_client* client, sidecar_cache_lookup lookup) {
  if (client == nullptr) return SIDECAR_INVALID_ARGUMENT;
  if (lookup != SIDECAR_CACHE_IN_CLIENT && lookup != SIDECAR_CACHE_IN_SIDECAR && lookup != SIDECAR_CACHE_OFF) {
    return fail(client, sidecar::ErrorCode::kInvalidArgument, "unknown cache lookup " + std::to_string(lookup));
  }
  client->client.set_cache_lookup(static_cast<sidecar::CacheLookup>(lookup));
  return SIDECAR_OK;
}

int sidecar_last_call_cached(const sidecar_client* client) {
  if (client == nullptr) return 0;
  const sidecar::CacheOutcome outcome = client->client.last_cache_outcome();
  return outcome == sidecar::CacheOutcome::kHitInClient || outcome == sidecar::CacheOutcome::kHitInSidecar;
}

namespace {
// Checks the C tensors and views them as the library's.
sidecar_status to_views(sidecar_client* client, const sidecar_tensor* inputs, size_t input_count,
                        std::vector<sidecar::TensorView>& views) {
  if (inputs == nullptr && input_count != 0) {
    return fail(client, sidecar::ErrorCode::kInvalidArgument, "inputs must not be NULL");
  }
  for (size_t i = 0; i < input_count; ++i) {
    const sidecar_tensor& input = inputs[i];
    if (input.rank < 0 || (input.rank > 0 && input.shape == nullptr) || (input.bytes > 0 && input.data == nullptr) ||
        input.dtype < 0 || input.dtype > 255 || !sidecar::is_known_dtype(static_cast<std::uint8_t>(input.dtype))) {
      return fail(client, sidecar::ErrorCode::kInvalidArgument,
                  "input " + std::to_string(i) + ": bad dtype, rank, shape or data");
    }
    views.push_back(sidecar::TensorView{static_cast<sidecar::DType>(input.dtype),
                                        std::span<const int64_t>(input.shape, static_cast<size_t>(input.rank)),
                                        input.data, input.bytes});
  }
  return SIDECAR_OK;
}

sidecar_status hand_out(sidecar_client* client, sidecar::Result<std::vector<sidecar::Tensor>>& result,
                        sidecar_tensor* outputs, size_t* output_count) {
  if (!result.ok()) return fail(client, result.code(), result.message());
  client->last_outputs = std::move(result).value();
  if (client->last_outputs.size() > *output_count) {
    *output_count = client->last_outputs.size();
    return fail(client, sidecar::ErrorCode::kInvalidArgument,
                "the model returned " + std::to_string(*output_count) + " outputs; the outputs array holds fewer");
  }
  for (size_t i = 0; i < client->last_outputs.size(); ++i) {
    const sidecar::Tensor& tensor = client->last_outputs[i];
    outputs[i] = sidecar_tensor{static_cast<int32_t>(tensor.dtype), static_cast<int32_t>(tensor.shape.size()),
                                tensor.shape.data(), tensor.data.data(), tensor.data.size()};
  }
  *output_count = client->last_outputs.size();
  client->last_error.clear();
  return SIDECAR_OK;
}
}  // namespace

sidecar_status sidecar_submit(sidecar_client* client, const sidecar_tensor* inputs, size_t input_count,
                              int64_t timeout_us, uint64_t* handle) {
  if (client == nullptr) return SIDECAR_INVALID_ARGUMENT;
  if (handle == nullptr) return fail(client, sidecar::ErrorCode::kInvalidArgument, "handle must not be NULL");
  std::vector<sidecar::TensorView> views;
  if (sidecar_status status = to_views(client, inputs, input_count, views); status != SIDECAR_OK) return status;
  sidecar::SubmitOptions options;
  options.timeout = std::chrono::microseconds(timeout_us < 0 ? 0 : timeout_us);
  auto submitted = client->client.submit(views, options);
  if (!submitted.ok()) return fail(client, submitted.code(), submitted.message());
  *handle = submitted->id;
  client->last_error.clear();
  return SIDECAR_OK;
}

sidecar_status sidecar_wait(sidecar_client* client, uint64_t handle, sidecar_tensor* outputs, size_t* output_count,
                            int64_t timeout_us) {
  if (client == nullptr) return SIDECAR_INVALID_ARGUMENT;
  if (output_count == nullptr || (outputs == nullptr && *output_count != 0)) {
    return fail(client, sidecar::ErrorCode::kInvalidArgument, "outputs and output_count must not be NULL");
  }
  auto result =
      client->client.wait(sidecar::RequestHandle{handle}, std::chrono::microseconds(timeout_us < 0 ? 0 : timeout_us));
  return hand_out(client, result, outputs, output_count);
}

sidecar_status sidecar_try_get(sidecar_client* client, uint64_t handle, sidecar_tensor* outputs, size_t* output_count) {
  if (client == nullptr) return SIDECAR_INVALID_ARGUMENT;
  if (output_count == nullptr || (outputs == nullptr && *output_count != 0)) {
    return fail(client, sidecar::ErrorCode::kInvalidArgument, "outputs and output_count must not be NULL");
  }
  auto result = client->client.try_get(sidecar::RequestHandle{handle});
  if (!result) return fail(client, sidecar::ErrorCode::kNotReady, "not answered yet");
  return hand_out(client, *result, outputs, output_count);
}

sidecar_status sidecar_cancel(sidecar_client* client, uint64_t handle) {
  if (client == nullptr) return SIDECAR_INVALID_ARGUMENT;
  if (!client->client.cancel(sidecar::RequestHandle{handle})) {
    return fail(client, sidecar::ErrorCode::kInvalidArgument, "not in flight: answered, collected or unknown");
  }
  client->last_error.clear();
  return SIDECAR_OK;
}

const char* sidecar_last_error(const sidecar_client* client) { return client ? client->last_error.c_str() : ""; }

const char* sidecar_status_name(sidecar_status status) {
  return sidecar::error_code_name(static_cast<sidecar::ErrorCode>(status));
}

void sidecar_close(sidecar_client* client) { delete client; }

}  // extern "C"
