// The client library's insides: the state behind a Client (its connection, its requests in flight,
// the cache it maps, what it knows of the model) and the helpers the library's files share.
// Private to clientlib/src.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "client_cache.hpp"
#include "connection.hpp"
#include "request_table.hpp"
#include "sidecar/client.hpp"
#include "sidecar/shared/clock.hpp"
#include "sidecar/shared/signature.hpp"

namespace sidecar::detail {

// How often, at most, a call checks that the sidecar's end of the socket is still open: a syscall
// that a client calling in a tight loop must not pay on every call.
inline constexpr std::uint64_t kLivenessCheckNs = 1'000'000;

DialSettings dial_settings(const ConnectOptions& options, ConnectKind kind);
// kInvalidArgument unless `name` is one a sidecar can have (the socket's file name).
Done check_name(const std::string& name);
// A watching connection to sidecar `name` (its status page only), within options.timeout.
Result<std::unique_ptr<Connection>> observe(const std::string& name, const ConnectOptions& options);
// What the status page says about the model (the signatures once the sidecar is ready).
// `description`: a consistent copy of the page's (copy_model_description).
ModelInfo model_info_of(const StatusPage& page, const ModelDescription& description, const ConnectReply& reply);
CacheStats cache_stats_of(const StatusPage& page);

}  // namespace sidecar::detail

namespace sidecar {

struct Client::Impl {
  std::string name;
  ConnectOptions options;
  // A Client connected before a fork() belongs to the parent: in the child it must not post into
  // the channel or read its answers (and its fds are closed there, see Connection).
  std::uint64_t forks_seen_at_connect = 0;
  std::unique_ptr<Connection> connection;  // null after the sidecar went, until the next call reconnects
  // The connection before the last reconnect, its fds closed and its memory still mapped, so that
  // views a caller got from it fault on nothing until the next reconnect.
  std::unique_ptr<Connection> retired;
  std::uint64_t connections = 0;
  RequestTable requests;
  ClientCache cache;
  ModelInfo model;
  ModelDescription description{};  // a private copy: output sizing must not read shared memory twice
  std::uint64_t model_sequence = 0;  // the status page's model_sequence when `description` was copied
  CacheLookup cache_lookup = CacheLookup::kInClient;
  CacheOutcome last_cache_outcome = CacheOutcome::kNotUsed;
  ServiceInfo last_service;
  std::uint64_t last_liveness_check_ns = 0;

  // The zero-copy request being assembled by input_buffer(), and the views run() hands out.
  RequestDescriptor pending{};
  std::uint64_t arena_cursor = 0;
  std::vector<std::int64_t> output_dims;
  std::vector<TensorView> output_views;

  Done usable() const {
    if (Connection::forks_seen() != forks_seen_at_connect) {
      return {ErrorCode::kInvalidArgument,
              "this client was connected before fork(): it belongs to the parent process; connect anew in the child"};
    }
    return {};
  }

  void adopt(std::unique_ptr<Connection> fresh) {
    retired.reset();
    connection = std::move(fresh);
    ++connections;
    requests.attach(*connection);
    cache.attach(*connection);
    copy_model();
    last_liveness_check_ns = monotonic_ns();
  }

  void copy_model() {
    model_sequence = copy_model_description(connection->status(), description);
    model = detail::model_info_of(connection->status(), description, connection->reply());
  }

  // After a reload the sidecar serves another model: its description replaces ours before the
  // next request is sized by it. One read of a line the sidecar writes only then.
  void refresh_model_if_reloaded() {
    if (connection && connection->status().model_sequence.load(std::memory_order_acquire) != model_sequence) {
      copy_model();
    }
  }

  void disconnect(const std::string& why) {
    requests.fail_in_flight(ErrorCode::kSidecarGone, why);
    requests.detach();
    cache.detach();
    connection->close_socket();
    retired = std::move(connection);
    pending.input_count = 0;
    arena_cursor = 0;
  }

  // Before a new request: notices a sidecar that went (looking at the socket at most every
  // detail::kLivenessCheckNs), answers what was in flight with kSidecarGone, and reconnects (and
  // then reads the call's clock again: a reconnect is no part of the wait for an answer).
  Done ensure_connected(detail::CallClock& call) {
    if (connection) {
      const bool check = call.now_ns - last_liveness_check_ns >= detail::kLivenessCheckNs;
      if (check) last_liveness_check_ns = call.now_ns;
      if (!connection->sidecar_gone(check)) return {};
      disconnect("sidecar '" + name + "' went away while the request was in flight");
    }
    if (!options.reconnect) {
      return {ErrorCode::kSidecarGone, "sidecar '" + name + "' went away (ConnectOptions::reconnect is off)"};
    }
    const std::uint64_t deadline = std::min(call.deadline_ns, detail::deadline_after(call.now_ns, options.timeout));
    Result<std::unique_ptr<Connection>> fresh = Connection::open(name, detail::dial_settings(options, ConnectKind::kAttach), deadline);
    if (!fresh.ok()) return fresh.error();
    adopt(std::move(*fresh));
    call.now_ns = monotonic_ns();
    return {};
  }

  Done sidecar_went(const Done& waited) {
    if (waited.code() == ErrorCode::kSidecarGone) disconnect(waited.message());
    return waited;
  }

  bool looks_up_here(CachePolicy policy) const noexcept {
    return policy == CachePolicy::kUse && cache_lookup == CacheLookup::kInClient && cache.attached();
  }

  // Flags for a request that missed (or skipped) the lookup here.
  std::uint32_t cache_flags(CachePolicy policy) {
    if (policy == CachePolicy::kBypass || cache_lookup == CacheLookup::kOff) {
      last_cache_outcome = CacheOutcome::kNotUsed;
      return kRequestFlagBypassCache;
    }
    if (connection->status().cache_bytes == 0) {
      last_cache_outcome = CacheOutcome::kNotUsed;
      return kRequestFlagNone;
    }
    last_cache_outcome = CacheOutcome::kMiss;  // until the sidecar says it answered from its cache
    return looks_up_here(policy) ? kRequestFlagCacheChecked : kRequestFlagNone;
  }

  // The most bytes the outputs of a request with these inputs take, from the shapes the sidecar
  // published; 0 when unknown (no signature, or one with a dim of any size).
  std::uint64_t expected_output_bytes(const RequestDescriptor& request) const {
    TensorShape inputs[kMaxTensors];
    for (std::uint32_t i = 0; i < request.input_count; ++i) inputs[i] = request.inputs[i].shape;
    const std::uint32_t input_count = std::min<std::uint32_t>(description.input_count, kMaxTensors);
    const std::uint32_t output_count = std::min<std::uint32_t>(description.output_count, kMaxTensors);
    for (std::uint32_t s = 0; s < std::min(description.signature_count, kMaxSignatures); ++s) {
      const ModelSignature& signature = description.signatures[s];
      if (!signature.outputs_known) continue;
      const std::uint64_t bytes = sidecar::expected_output_bytes(
          std::span<const ShapeRange>(signature.inputs, input_count),
          std::span<const TensorShape>(signature.outputs, output_count),
          std::span<const TensorShape>(inputs, request.input_count), std::max<std::uint32_t>(description.max_batch, 1));
      if (bytes != 0) return bytes;
    }
    return 0;
  }

  void set_output_views(const TensorDescriptor* outputs, std::uint32_t count) {
    output_dims.assign(static_cast<std::size_t>(count) * kMaxRank, 0);
    output_views.clear();
    for (std::uint32_t i = 0; i < count; ++i) {
      const TensorDescriptor& tensor = outputs[i];
      std::copy(tensor.shape.dims, tensor.shape.dims + tensor.shape.rank, output_dims.begin() + i * kMaxRank);
      output_views.push_back(
          TensorView{static_cast<DType>(tensor.shape.dtype),
                     std::span<const std::int64_t>(output_dims.data() + i * kMaxRank, tensor.shape.rank),
                     connection->arena() + tensor.offset, tensor.bytes});
    }
  }

  // Hands a finished (or cancelled) request's result to the caller and forgets it; a cancelled one
  // whose answer has not come stays listed, as abandoned, so its region is freed when it comes.
  Result<std::vector<Tensor>> collect(std::uint64_t id) {
    RequestTable::Entry& entry = *requests.find(id);
    last_cache_outcome = entry.cache_outcome;
    last_service = entry.service;
    if (entry.cancelled) {
      if (entry.in_flight)
        entry.abandoned = true;
      else
        requests.erase(id);
      return {ErrorCode::kCancelled, "cancelled"};
    }
    Result<std::vector<Tensor>> result = entry.code == ErrorCode::kOk
                                             ? Result<std::vector<Tensor>>(std::move(entry.outputs))
                                             : Result<std::vector<Tensor>>(entry.code, std::move(entry.message));
    requests.erase(id);
    return result;
  }
};


}  // namespace sidecar
