#include "sidecar/shared/metrics_text.hpp"

#include <cinttypes>
#include <cstdio>
#include <limits>

#include "sidecar/shared/signature.hpp"

namespace sidecar {
namespace {

void add_histogram(HistogramSnapshot& into, const LatencyHistogram& from) {
  for (std::uint32_t b = 0; b < kLatencyBuckets; ++b) into.buckets[b] += from.buckets[b].load(std::memory_order_relaxed);
  into.sum_ns += from.sum_ns.load(std::memory_order_relaxed);
}

std::string format(const char* pattern, auto... values) {
  char buffer[256];
  const int length = std::snprintf(buffer, sizeof buffer, pattern, values...);
  return std::string(buffer, length < 0 ? 0 : std::min<std::size_t>(static_cast<std::size_t>(length), sizeof buffer - 1));
}

std::string number(std::uint64_t value) { return std::to_string(value); }

// Prometheus label values and JSON strings escape the same three characters the same way; JSON
// also needs the other control characters escaped.
std::string escaped(const std::string& text, bool json) {
  std::string out;
  for (const char c : text) {
    if (c == '\\' || c == '"') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else if (json && static_cast<unsigned char>(c) < 0x20) {
      out += format("\\u%04x", static_cast<unsigned>(static_cast<unsigned char>(c)));
    } else {
      out += c;
    }
  }
  return out;
}

std::string seconds(std::uint64_t nanoseconds) { return format("%.9g", static_cast<double>(nanoseconds) / 1e9); }

std::string latency_text(std::uint64_t nanoseconds) {
  if (nanoseconds == std::numeric_limits<std::uint64_t>::max()) return "more";
  if (nanoseconds < 1'000'000) return format("%.3g us", static_cast<double>(nanoseconds) / 1e3);
  if (nanoseconds < 1'000'000'000) return format("%.3g ms", static_cast<double>(nanoseconds) / 1e6);
  return format("%.3g s", static_cast<double>(nanoseconds) / 1e9);
}

// One sample line: METRIC{LABELS} VALUE.
void prometheus_sample(std::string& out, const std::string& metric, const std::string& labels, std::uint64_t value) {
  out += metric + "{" + labels + "} " + number(value) + "\n";
}

void prometheus_histogram(std::string& out, const std::string& metric, const std::string& labels,
                          const HistogramSnapshot& histogram) {
  std::uint64_t cumulative = 0;
  for (std::uint32_t b = 0; b < kLatencyBuckets; ++b) {
    cumulative += histogram.buckets[b];
    const std::string bound = b + 1 == kLatencyBuckets ? "+Inf" : seconds(kLatencyBucketBaseNs << b);
    prometheus_sample(out, metric + "_bucket", labels + ",le=\"" + bound + "\"", cumulative);
  }
  out += metric + "_sum{" + labels + "} " + seconds(histogram.sum_ns) + "\n";
  prometheus_sample(out, metric + "_count", labels, cumulative);
}

void prometheus_header(std::string& out, const std::string& metric, const char* type, const char* help) {
  out += "# HELP " + metric + " " + help + "\n# TYPE " + metric + " " + type + "\n";
}

std::string json_histogram(const HistogramSnapshot& histogram) {
  std::string out = "{\"count\": " + number(histogram.count()) + ", \"sum_seconds\": " + seconds(histogram.sum_ns) +
                    ", \"buckets\": [";
  for (std::uint32_t b = 0; b < kLatencyBuckets; ++b) {
    if (b) out += ", ";
    const std::string bound = b + 1 == kLatencyBuckets ? "null" : seconds(kLatencyBucketBaseNs << b);
    out += "{\"le_seconds\": " + bound + ", \"count\": " + number(histogram.buckets[b]) + "}";
  }
  return out + "]}";
}

std::string text_histogram(const HistogramSnapshot& histogram) {
  const std::uint64_t count = histogram.count();
  if (count == 0) return "-";
  return "p50 <= " + latency_text(histogram.quantile_bound_ns(0.5)) + ", p99 <= " +
         latency_text(histogram.quantile_bound_ns(0.99)) + ", mean " + latency_text(histogram.sum_ns / count);
}

}  // namespace

std::uint64_t HistogramSnapshot::count() const noexcept {
  std::uint64_t total = 0;
  for (const std::uint64_t bucket : buckets) total += bucket;
  return total;
}

std::uint64_t HistogramSnapshot::quantile_bound_ns(double quantile) const noexcept {
  const std::uint64_t total = count();
  if (total == 0) return 0;
  const auto wanted = static_cast<std::uint64_t>(quantile * static_cast<double>(total) + 0.999999);
  std::uint64_t cumulative = 0;
  for (std::uint32_t b = 0; b < kLatencyBuckets; ++b) {
    cumulative += buckets[b];
    if (cumulative >= wanted) {
      return b + 1 == kLatencyBuckets ? std::numeric_limits<std::uint64_t>::max() : kLatencyBucketBaseNs << b;
    }
  }
  return std::numeric_limits<std::uint64_t>::max();
}

std::uint64_t MetricsSnapshot::requests() const noexcept {
  std::uint64_t total = 0;
  for (const std::uint64_t count : requests_by_status) total += count;
  return total;
}

const char* status_label(std::uint32_t status) noexcept {
  switch (static_cast<Status>(status)) {
    case Status::kOk: return "ok";
    case Status::kInvalidRequest: return "invalid_request";
    case Status::kModelError: return "model_error";
    case Status::kUnsupportedOutput: return "unsupported_output";
    case Status::kOutputTooLarge: return "output_too_large";
    case Status::kDeadlineExceeded: return "deadline_exceeded";
    case Status::kOverloaded: return "overloaded";
    case Status::kCancelled: return "cancelled";
    case Status::kShuttingDown: return "shutting_down";
    case Status::kInternal: return "internal";
  }
  return "other";
}

MetricsSnapshot snapshot_metrics(const StatusPage& page, const std::string& name) {
  MetricsSnapshot metrics;
  metrics.name = name;
  metrics.state = sidecar_state_name(page.state.load(std::memory_order_acquire));
  ModelDescription description;
  copy_model_description(page, description);
  metrics.model_path.assign(description.model_path, strnlen(description.model_path, kModelPathBytes));
  metrics.pid = page.sidecar_pid;
  metrics.start_generation = page.start_generation;
  metrics.started_unix_ns = page.started_unix_ns;

  std::vector<SignatureSnapshot> rows(kSignatureRows);
  for (const MetricsShard& shard : page.metrics) {
    for (std::uint32_t s = 0; s < kStatusCount; ++s) {
      metrics.requests_by_status[s] += shard.requests_by_status[s].load(std::memory_order_relaxed);
    }
    metrics.forwards += shard.forwards.load(std::memory_order_relaxed);
    metrics.forward_requests += shard.forward_requests.load(std::memory_order_relaxed);
    metrics.unwarmed_forwards += shard.unwarmed_forwards.load(std::memory_order_relaxed);
    for (std::uint32_t b = 0; b < kBatchSizeBuckets; ++b) {
      metrics.batch_sizes[b] += shard.batch_sizes[b].load(std::memory_order_relaxed);
    }
    for (std::uint32_t row = 0; row < kSignatureRows; ++row) {
      add_histogram(rows[row].queue_wait, shard.signatures[row].queue_wait);
      add_histogram(rows[row].inference, shard.signatures[row].inference);
      add_histogram(rows[row].end_to_end, shard.signatures[row].end_to_end);
    }
  }
  const std::uint32_t described = std::min(description.signature_count, kMaxSignatures);
  const std::uint32_t inputs = std::min(description.input_count, kMaxTensors);
  for (std::uint32_t row = 0; row < kSignatureRows; ++row) {
    SignatureSnapshot& snapshot = rows[row];
    if (row < described) {
      snapshot.signature = describe_accepted(std::span<const ShapeRange>(description.signatures[row].inputs, inputs));
    } else if (row == kUnmatchedSignature && (snapshot.end_to_end.count() != 0 || snapshot.inference.count() != 0 ||
                                              snapshot.queue_wait.count() != 0)) {
      snapshot.signature = "other";
    } else {
      continue;
    }
    metrics.signatures.push_back(std::move(snapshot));
  }

  metrics.clients_connected = page.clients.connected.load(std::memory_order_relaxed);
  metrics.clients_admitted = page.clients.admitted.load(std::memory_order_relaxed);
  metrics.clients_refused = page.clients.refused.load(std::memory_order_relaxed);
  metrics.clients_reclaimed = page.clients.reclaimed.load(std::memory_order_relaxed);
  metrics.observers = page.clients.observers.load(std::memory_order_relaxed);
  metrics.cache_enabled = page.cache_bytes != 0;
  metrics.cache_budget_bytes = page.cache_bytes;
  metrics.cache_bytes_used = page.cache.bytes_used.load(std::memory_order_relaxed);
  metrics.cache_entries = page.cache.entries.load(std::memory_order_relaxed);
  metrics.cache_sidecar_hits = page.cache.sidecar_hits.load(std::memory_order_relaxed);
  metrics.cache_client_hits = page.cache.client_hits.load(std::memory_order_relaxed);
  metrics.cache_misses = page.cache.misses.load(std::memory_order_relaxed);
  metrics.cache_inserts = page.cache.inserts.load(std::memory_order_relaxed);
  metrics.cache_evictions = page.cache.evictions.load(std::memory_order_relaxed);
  metrics.cache_too_large = page.cache.too_large.load(std::memory_order_relaxed);
  metrics.cache_flushes = page.cache.flushes.load(std::memory_order_relaxed);
  metrics.reloads = page.lifecycle.reloads.load(std::memory_order_relaxed);
  metrics.failed_reloads = page.lifecycle.failed_reloads.load(std::memory_order_relaxed);
  metrics.last_reload_unix_ns = page.lifecycle.last_reload_unix_ns.load(std::memory_order_relaxed);
  return metrics;
}

std::string metrics_as_text(const MetricsSnapshot& metrics) {
  std::string out = "sidecar " + metrics.name + " (pid " + std::to_string(metrics.pid) + "): " + metrics.state +
                    ", model " + metrics.model_path + ", reloads " + number(metrics.reloads) + " (" +
                    number(metrics.failed_reloads) + " failed)\n";
  out += "requests: " + number(metrics.requests());
  std::string by_status;
  for (std::uint32_t s = 0; s < kStatusCount; ++s) {
    if (metrics.requests_by_status[s] == 0) continue;
    by_status += (by_status.empty() ? "" : ", ") + std::string(status_label(s)) + " " + number(metrics.requests_by_status[s]);
  }
  out += by_status.empty() ? "\n" : " (" + by_status + ")\n";
  out += "forwards: " + number(metrics.forwards) + " (" + number(metrics.unwarmed_forwards) +
         " on shapes not warmed up), batch sizes:";
  for (std::uint32_t b = 0; b < kBatchSizeBuckets; ++b) {
    if (metrics.batch_sizes[b] == 0) continue;
    out += b + 1 == kBatchSizeBuckets ? " more" : " <=" + number(std::uint64_t{1} << b);
    out += ": " + number(metrics.batch_sizes[b]);
  }
  out += "\n";
  for (const SignatureSnapshot& row : metrics.signatures) {
    out += "  " + row.signature + "\n";
    out += "    queue wait   " + text_histogram(row.queue_wait) + "\n";
    out += "    inference    " + text_histogram(row.inference) + "\n";
    out += "    end to end   " + text_histogram(row.end_to_end) + "\n";
  }
  out += "clients: " + number(metrics.clients_connected) + " connected, " + number(metrics.clients_admitted) +
         " admitted, " + number(metrics.clients_refused) + " refused, " + number(metrics.clients_reclaimed) +
         " reclaimed\n";
  if (metrics.cache_enabled) {
    out += "cache: " + number(metrics.cache_entries) + " entries, " + number(metrics.cache_bytes_used) + " of " +
           number(metrics.cache_budget_bytes) + " bytes; hits " + number(metrics.cache_client_hits) + " in clients, " +
           number(metrics.cache_sidecar_hits) + " in the sidecar; " + number(metrics.cache_misses) + " misses, " +
           number(metrics.cache_evictions) + " evictions\n";
  } else {
    out += "cache: off\n";
  }
  return out;
}

std::string metrics_as_json(const MetricsSnapshot& metrics) {
  std::string out = "{\n";
  out += "  \"name\": \"" + escaped(metrics.name, true) + "\",\n";
  out += "  \"state\": \"" + escaped(metrics.state, true) + "\",\n";
  out += "  \"model_path\": \"" + escaped(metrics.model_path, true) + "\",\n";
  out += "  \"pid\": " + std::to_string(metrics.pid) + ",\n";
  out += "  \"start_generation\": " + number(metrics.start_generation) + ",\n";
  out += "  \"started_unix_seconds\": " + seconds(metrics.started_unix_ns) + ",\n";
  out += "  \"requests\": {";
  for (std::uint32_t s = 0; s < kStatusCount; ++s) {
    out += std::string(s ? ", " : "") + "\"" + status_label(s) + "\": " + number(metrics.requests_by_status[s]);
  }
  out += "},\n  \"forwards\": " + number(metrics.forwards) + ",\n";
  out += "  \"forward_requests\": " + number(metrics.forward_requests) + ",\n";
  out += "  \"unwarmed_forwards\": " + number(metrics.unwarmed_forwards) + ",\n";
  out += "  \"batch_sizes\": [";
  for (std::uint32_t b = 0; b < kBatchSizeBuckets; ++b) {
    const std::string bound = b + 1 == kBatchSizeBuckets ? "null" : number(std::uint64_t{1} << b);
    out += std::string(b ? ", " : "") + "{\"le\": " + bound + ", \"count\": " + number(metrics.batch_sizes[b]) + "}";
  }
  out += "],\n  \"signatures\": [";
  for (std::size_t i = 0; i < metrics.signatures.size(); ++i) {
    const SignatureSnapshot& row = metrics.signatures[i];
    out += std::string(i ? "," : "") + "\n    {\"signature\": \"" + escaped(row.signature, true) +
           "\",\n     \"queue_wait\": " + json_histogram(row.queue_wait) +
           ",\n     \"inference\": " + json_histogram(row.inference) +
           ",\n     \"end_to_end\": " + json_histogram(row.end_to_end) + "}";
  }
  out += "],\n  \"clients\": {\"connected\": " + number(metrics.clients_connected) +
         ", \"admitted\": " + number(metrics.clients_admitted) + ", \"refused\": " + number(metrics.clients_refused) +
         ", \"reclaimed\": " + number(metrics.clients_reclaimed) + ", \"observers\": " + number(metrics.observers) + "},\n";
  out += "  \"cache\": {\"enabled\": " + std::string(metrics.cache_enabled ? "true" : "false") +
         ", \"budget_bytes\": " + number(metrics.cache_budget_bytes) + ", \"bytes_used\": " +
         number(metrics.cache_bytes_used) + ", \"entries\": " + number(metrics.cache_entries) +
         ", \"client_hits\": " + number(metrics.cache_client_hits) + ", \"sidecar_hits\": " +
         number(metrics.cache_sidecar_hits) + ", \"misses\": " + number(metrics.cache_misses) +
         ", \"inserts\": " + number(metrics.cache_inserts) + ", \"evictions\": " + number(metrics.cache_evictions) +
         ", \"too_large\": " + number(metrics.cache_too_large) + ", \"flushes\": " + number(metrics.cache_flushes) +
         "},\n";
  out += "  \"reloads\": {\"done\": " + number(metrics.reloads) + ", \"failed\": " + number(metrics.failed_reloads) +
         ", \"last_unix_seconds\": " + seconds(metrics.last_reload_unix_ns) + "}\n}\n";
  return out;
}

std::string metrics_as_prometheus(const MetricsSnapshot& metrics) {
  const std::string sidecar = "sidecar=\"" + escaped(metrics.name, false) + "\"";
  std::string out;
  prometheus_header(out, "inference_sidecar_ready", "gauge", "1 while the sidecar serves, 0 while it starts, warms up or stops.");
  prometheus_sample(out, "inference_sidecar_ready", sidecar, metrics.state == "ready" ? 1 : 0);
  prometheus_header(out, "inference_sidecar_model_info", "gauge", "The model file the sidecar serves (always 1).");
  prometheus_sample(out, "inference_sidecar_model_info", sidecar + ",path=\"" + escaped(metrics.model_path, false) + "\"", 1);
  prometheus_header(out, "inference_sidecar_start_time_seconds", "gauge", "When the sidecar started, Unix time.");
  out += "inference_sidecar_start_time_seconds{" + sidecar + "} " + seconds(metrics.started_unix_ns) + "\n";

  prometheus_header(out, "inference_sidecar_requests_total", "counter", "Requests the sidecar answered, by status.");
  for (std::uint32_t s = 0; s < kStatusCount; ++s) {
    prometheus_sample(out, "inference_sidecar_requests_total", sidecar + ",status=\"" + status_label(s) + "\"",
                      metrics.requests_by_status[s]);
  }
  prometheus_header(out, "inference_sidecar_batch_size", "histogram", "Requests answered by one forward.");
  std::uint64_t cumulative = 0;
  for (std::uint32_t b = 0; b < kBatchSizeBuckets; ++b) {
    cumulative += metrics.batch_sizes[b];
    const std::string bound = b + 1 == kBatchSizeBuckets ? "+Inf" : number(std::uint64_t{1} << b);
    prometheus_sample(out, "inference_sidecar_batch_size_bucket", sidecar + ",le=\"" + bound + "\"", cumulative);
  }
  prometheus_sample(out, "inference_sidecar_batch_size_sum", sidecar, metrics.forward_requests);
  prometheus_sample(out, "inference_sidecar_batch_size_count", sidecar, cumulative);
  prometheus_header(out, "inference_sidecar_unwarmed_forwards_total", "counter",
                    "Forwards on input shapes the workers were not warmed up on (the first of each is cold).");
  prometheus_sample(out, "inference_sidecar_unwarmed_forwards_total", sidecar, metrics.unwarmed_forwards);

  struct Family {
    const char* metric;
    const char* help;
    HistogramSnapshot SignatureSnapshot::*histogram;
  };
  const Family families[] = {
      {"inference_sidecar_queue_wait_seconds", "From a client posting a request to the sidecar taking it up.",
       &SignatureSnapshot::queue_wait},
      {"inference_sidecar_inference_seconds", "The forward that answered a request (a batch's whole forward).",
       &SignatureSnapshot::inference},
      {"inference_sidecar_end_to_end_seconds", "From a client posting a request to its answer being ready.",
       &SignatureSnapshot::end_to_end},
  };
  for (const Family& family : families) {
    prometheus_header(out, family.metric, "histogram", family.help);
    for (const SignatureSnapshot& row : metrics.signatures) {
      prometheus_histogram(out, family.metric, sidecar + ",signature=\"" + escaped(row.signature, false) + "\"",
                           row.*family.histogram);
    }
  }

  prometheus_header(out, "inference_sidecar_cache_hits_total", "counter",
                    "Requests answered from the result cache, by where the hit happened.");
  prometheus_sample(out, "inference_sidecar_cache_hits_total", sidecar + ",side=\"client\"", metrics.cache_client_hits);
  prometheus_sample(out, "inference_sidecar_cache_hits_total", sidecar + ",side=\"sidecar\"", metrics.cache_sidecar_hits);
  prometheus_header(out, "inference_sidecar_cache_misses_total", "counter", "Cache lookups that missed.");
  prometheus_sample(out, "inference_sidecar_cache_misses_total", sidecar, metrics.cache_misses);
  prometheus_header(out, "inference_sidecar_cache_evictions_total", "counter", "Cache entries evicted for room.");
  prometheus_sample(out, "inference_sidecar_cache_evictions_total", sidecar, metrics.cache_evictions);
  prometheus_header(out, "inference_sidecar_cache_entries", "gauge", "Results in the cache now.");
  prometheus_sample(out, "inference_sidecar_cache_entries", sidecar, metrics.cache_entries);
  prometheus_header(out, "inference_sidecar_cache_bytes", "gauge", "Bytes of the cache in use now (of its budget).");
  prometheus_sample(out, "inference_sidecar_cache_bytes", sidecar, metrics.cache_bytes_used);

  prometheus_header(out, "inference_sidecar_clients", "gauge", "Clients holding a channel now.");
  prometheus_sample(out, "inference_sidecar_clients", sidecar, metrics.clients_connected);
  prometheus_header(out, "inference_sidecar_connections_total", "counter", "Connections by outcome: admitted (a channel) or refused.");
  prometheus_sample(out, "inference_sidecar_connections_total", sidecar + ",outcome=\"admitted\"", metrics.clients_admitted);
  prometheus_sample(out, "inference_sidecar_connections_total", sidecar + ",outcome=\"refused\"", metrics.clients_refused);
  prometheus_header(out, "inference_sidecar_reclaims_total", "counter", "Channels taken back after their client went.");
  prometheus_sample(out, "inference_sidecar_reclaims_total", sidecar, metrics.clients_reclaimed);
  prometheus_header(out, "inference_sidecar_reloads_total", "counter", "Model reloads, by outcome.");
  prometheus_sample(out, "inference_sidecar_reloads_total", sidecar + ",outcome=\"done\"", metrics.reloads);
  prometheus_sample(out, "inference_sidecar_reloads_total", sidecar + ",outcome=\"failed\"", metrics.failed_reloads);
  return out;
}

}  // namespace sidecar
