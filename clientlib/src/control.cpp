// Asking things of a sidecar that are not inferences: control requests on a client's own rings
// (flush the cache, ping), the metrics through a watching connection, and a model reload.
#include "client_impl.hpp"
#include "sidecar/client.hpp"
#include "sidecar/shared/metrics_text.hpp"

namespace sidecar {

Result<std::string> Client::control_request(std::uint32_t flags, std::chrono::microseconds timeout) {
  Impl& impl = *impl_;
  if (Done usable = impl.usable(); !usable.ok()) return usable.error();
  reset_inputs();
  detail::CallClock call = detail::CallClock::after(timeout);
  if (Done connected = impl.ensure_connected(call); !connected.ok()) return connected.error();
  const std::uint64_t id = impl.requests.next_id();
  RequestTable::Entry& entry = impl.requests.add(id);
  RequestDescriptor request{};
  request.request_id = id;
  request.deadline_ns = call.deadline_ns;
  request.flags = flags;
  if (Done posted = impl.requests.post(entry, request, call.now_ns); !posted.ok()) {
    impl.requests.erase(id);
    return posted.error();
  }
  Done waited = impl.sidecar_went(impl.requests.wait_until([&] { return entry.done; }, call));
  if (!waited.ok()) {
    if (RequestTable::Entry* left = impl.requests.find(id)) {
      if (left->in_flight) left->abandoned = true;
      else impl.requests.erase(id);
    }
    return waited.error();
  }
  Result<std::string> result =
      entry.code == ErrorCode::kOk ? Result<std::string>(entry.message) : Result<std::string>(entry.code, entry.message);
  impl.requests.erase(id);
  return result;
}

Result<std::string> Client::flush_cache(std::chrono::microseconds timeout) {
  return control_request(kRequestFlagFlushCache, timeout);
}

Done Client::ping(std::chrono::microseconds timeout) {
  Result<std::string> answer = control_request(kRequestFlagPing, timeout);
  if (!answer.ok()) return answer.error();
  return {};
}

Result<std::string> read_metrics(const std::string& name, MetricsFormat format, const ConnectOptions& options) {
  Result<std::unique_ptr<Connection>> connection = detail::observe(name, options);
  if (!connection.ok()) return connection.error();
  const MetricsSnapshot metrics = snapshot_metrics((*connection)->status(), name);
  switch (format) {
    case MetricsFormat::kText: return metrics_as_text(metrics);
    case MetricsFormat::kJson: return metrics_as_json(metrics);
    case MetricsFormat::kPrometheus: return metrics_as_prometheus(metrics);
  }
  return {ErrorCode::kInvalidArgument, "unknown metrics format"};
}

Result<std::string> reload_model(const std::string& name, const std::string& model_path, const ConnectOptions& options) {
  if (Done valid = detail::check_name(name); !valid.ok()) return valid.error();
  DialSettings settings = detail::dial_settings(options, ConnectKind::kReload);
  settings.reload_model_path = model_path;
  Result<std::unique_ptr<Connection>> connection =
      Connection::open(name, settings, detail::deadline_after(options.timeout));
  if (!connection.ok()) return connection.error();
  return reply_message((*connection)->reply());
}

}  // namespace sidecar
