#include "info.hpp"

#include <string>

#include "errors.hpp"

namespace sidecar::python {
namespace {

py::list tensor_signatures(const std::vector<std::pair<DType, std::vector<std::int64_t>>>& tensors) {
  py::list list;
  for (const auto& [dtype, shape] : tensors) {
    py::tuple dims(shape.size());
    for (std::size_t i = 0; i < shape.size(); ++i) dims[i] = py::int_(shape[i]);
    list.append(py::make_tuple(std::string(dtype_name(dtype)), dims));
  }
  return list;
}

// A fixed dim as an int, a range as (smallest, largest), with None for no largest (`?`).
py::list accepted_inputs(const ModelInfo::Signature& signature) {
  py::list list;
  for (std::size_t i = 0; i < signature.inputs.size(); ++i) {
    const auto& [dtype, smallest] = signature.inputs[i];
    const std::vector<std::int64_t>& largest =
        i < signature.input_largest.size() ? signature.input_largest[i] : smallest;
    py::tuple dims(smallest.size());
    for (std::size_t d = 0; d < smallest.size(); ++d) {
      if (largest[d] == smallest[d]) {
        dims[d] = py::int_(smallest[d]);
      } else {
        dims[d] = py::make_tuple(
            smallest[d], largest[d] == ModelInfo::kAnySize ? py::object(py::none()) : py::object(py::int_(largest[d])));
      }
    }
    list.append(py::make_tuple(std::string(dtype_name(dtype)), dims));
  }
  return list;
}

MetricsFormat metrics_format(const std::string& name) {
  if (name == "text") return MetricsFormat::kText;
  if (name == "json") return MetricsFormat::kJson;
  if (name == "prometheus") return MetricsFormat::kPrometheus;
  throw py::value_error("format must be \"text\", \"json\" or \"prometheus\", not \"" + name + "\"");
}

}  // namespace

ConnectOptions connect_options(double timeout, py::handle runtime_dir) {
  ConnectOptions options;
  options.timeout = std::chrono::duration_cast<std::chrono::milliseconds>(to_microseconds(timeout));
  if (!runtime_dir.is_none()) options.runtime_dir = py::str(runtime_dir).cast<std::string>();
  return options;
}

py::dict model_info_dict(const ModelInfo& model) {
  py::dict info;
  info["path"] = model.model_path;
  info["input_count"] = model.input_count;
  info["output_count"] = model.output_count;
  info["max_batch"] = model.max_batch;
  py::list signatures;
  for (const ModelInfo::Signature& signature : model.signatures) {
    py::dict entry;
    entry["inputs"] = accepted_inputs(signature);
    entry["outputs"] = tensor_signatures(signature.outputs);
    entry["text"] = signature.text;
    signatures.append(entry);
  }
  info["signatures"] = signatures;
  py::list warmed;
  for (const auto& shapes : model.warmed) warmed.append(tensor_signatures(shapes));
  info["warmed"] = warmed;
  info["sidecar_pid"] = model.sidecar_pid;
  info["sidecar_uid"] = model.sidecar_uid;
  info["start_generation"] = model.start_generation;
  info["started_unix_ns"] = model.started_unix_ns;
  info["max_clients"] = model.max_clients;
  info["arena_bytes"] = model.arena_bytes;
  info["client_id"] = model.client_id;
  return info;
}

py::dict cache_stats_dict(const CacheStats& stats) {
  py::dict dict;
  dict["enabled"] = stats.enabled;
  dict["budget_bytes"] = stats.budget_bytes;
  dict["bytes_used"] = stats.bytes_used;
  dict["entries"] = stats.entries;
  dict["client_hits"] = stats.client_hits;
  dict["sidecar_hits"] = stats.sidecar_hits;
  dict["hits"] = stats.hits();
  dict["misses"] = stats.misses;
  dict["hit_ratio"] = stats.hit_ratio();
  dict["inserts"] = stats.inserts;
  dict["evictions"] = stats.evictions;
  dict["too_large"] = stats.too_large;
  dict["flushes"] = stats.flushes;
  dict["generation"] = stats.generation;
  dict["max_entry_bytes"] = stats.max_entry_bytes;
  return dict;
}

void define_operations(py::module_& module) {
  module.def(
      "status",
      [](const std::string& name, double timeout, py::object runtime_dir) {
        const ConnectOptions options = connect_options(timeout, runtime_dir);
        Result<SidecarStatus> result = [&] {
          py::gil_scoped_release release;
          return read_status(name, options);
        }();
        const SidecarStatus status = take(std::move(result));
        py::dict dict;
        dict["state"] = status.state;
        dict["ready"] = status.ready;
        dict["socket_path"] = status.socket_path;
        dict["model"] = model_info_dict(status.model);
        dict["clients_connected"] = status.clients_connected;
        dict["clients_admitted"] = status.clients_admitted;
        dict["clients_refused"] = status.clients_refused;
        dict["clients_reclaimed"] = status.clients_reclaimed;
        dict["requests"] = status.requests;
        dict["requests_woken_ahead"] = status.requests_woken_ahead;
        dict["default_arena_bytes"] = status.default_arena_bytes;
        dict["max_arena_bytes"] = status.max_arena_bytes;
        dict["cache_per_user"] = status.cache_per_user;
        dict["cache"] = cache_stats_dict(status.cache);
        dict["reloads"] = status.reloads;
        dict["failed_reloads"] = status.failed_reloads;
        return dict;
      },
      py::arg("name"), py::kw_only(), py::arg("timeout") = 5.0, py::arg("runtime_dir") = py::none(),
      "The state of sidecar NAME as a dict; works while it warms up and while every client slot is taken.");
  module.def(
      "metrics",
      [](const std::string& name, const std::string& format, double timeout, py::object runtime_dir) {
        const MetricsFormat chosen = metrics_format(format);
        const ConnectOptions options = connect_options(timeout, runtime_dir);
        Result<std::string> result = [&] {
          py::gil_scoped_release release;
          return read_metrics(name, chosen, options);
        }();
        return take(std::move(result));
      },
      py::arg("name"), py::arg("format") = "text", py::kw_only(), py::arg("timeout") = 5.0,
      py::arg("runtime_dir") = py::none(),
      "Sidecar NAME's counters and latency histograms as text: format \"text\", \"json\" (for json.loads) or "
      "\"prometheus\".");
  module.def(
      "reload",
      [](const std::string& name, py::object model_path, double timeout, py::object runtime_dir) {
        const std::string path = model_path.is_none() ? std::string() : py::str(model_path).cast<std::string>();
        const ConnectOptions options = connect_options(timeout, runtime_dir);
        Result<std::string> result = [&] {
          py::gil_scoped_release release;
          return reload_model(name, path, options);
        }();
        return take(std::move(result));
      },
      py::arg("name"), py::arg("model_path") = py::none(), py::kw_only(), py::arg("timeout") = 120.0,
      py::arg("runtime_dir") = py::none(),
      "Loads MODEL_PATH (None: the file served, again) into sidecar NAME, warms it up and swaps it in; returns "
      "the sidecar's account. Only the sidecar's user and root may.");
  module.def(
      "cache_stats",
      [](const std::string& name, double timeout, py::object runtime_dir) {
        const ConnectOptions options = connect_options(timeout, runtime_dir);
        Result<CacheStats> result = [&] {
          py::gil_scoped_release release;
          return read_cache_stats(name, options);
        }();
        return cache_stats_dict(take(std::move(result)));
      },
      py::arg("name"), py::kw_only(), py::arg("timeout") = 5.0, py::arg("runtime_dir") = py::none(),
      "The statistics of sidecar NAME's result cache, as a dict.");
}

}  // namespace sidecar::python
