#include "report.hpp"

#include <cstdio>
#include <fstream>
#include <stdexcept>

namespace sidecar::bench {

void print_table(const std::vector<Row>& rows) {
  std::printf("%-18s %-8s %12s %12s %12s %10s %11s %11s %11s\n", "row", "model", "p50_us", "p99_us", "p99.9_us",
              "requests", "cpu_client", "cpu_server", "cpu_us/req");
  for (const Row& row : rows) {
    if (row.idle_server_cpu_us_per_s >= 0) continue;
    std::printf("%-18s %-8s %12.2f %12.2f %12.2f %10zu", row.name.c_str(), row.model.c_str(), row.p50_us, row.p99_us,
                row.p999_us, row.requests);
    if (row.cpu_measured) {
      std::printf(" %11.2f %11.2f %11.2f\n", row.client_cpu_us, row.server_cpu_us, row.cpu_us_per_request);
    } else {
      std::printf(" %11s %11s %11s\n", "-", "-", "-");
    }
  }
  for (const Row& row : rows) {
    if (row.idle_server_cpu_us_per_s < 0) continue;
    std::printf("%s on %s: the server used %.0f us of CPU per second with its client connected and idle\n",
                row.name.c_str(), row.model.c_str(), row.idle_server_cpu_us_per_s);
  }
  // The sidecar's cost over calling the model in-process, per model.
  for (const Row& in_process : rows) {
    if (in_process.name != "in_process") continue;
    for (const Row& row : rows) {
      if (row.model != in_process.model || row.name == "in_process" || row.bytes != 0) continue;
      if (row.name.ends_with("_echo") || row.name.ends_with("_cold") || row.idle_server_cpu_us_per_s >= 0) continue;
      std::printf("added by %-17s on %-6s p50 %+9.2f us   p99 %+9.2f us\n", row.name.c_str(), row.model.c_str(),
                  row.p50_us - in_process.p50_us, row.p99_us - in_process.p99_us);
    }
  }
}

const Row* find_row(const std::vector<Row>& rows, const std::string& name, const std::string& model) {
  for (const Row& row : rows)
    if (row.name == name && row.model == model) return &row;
  return nullptr;
}

// Moving the bytes alone, against the spinning sidecar; and what warm-up removes.
void print_echo_and_cold_summary(const std::vector<Row>& rows) {
  for (const Row& row : rows) {
    const Row* spin_echo = find_row(rows, "sidecar_spin_echo", row.model);
    if (row.name.ends_with("_echo") && spin_echo && &row != spin_echo) {
      std::printf("%-17s on %-6s p50 %.1fx sidecar_spin_echo's\n", row.name.c_str(), row.model.c_str(),
                  row.p50_us / spin_echo->p50_us);
    }
    const Row* warmed = row.name == "in_process_cold" ? find_row(rows, "in_process", row.model)
                        : row.name == "sidecar_cold"  ? find_row(rows, "sidecar_spin", row.model)
                                                      : nullptr;
    if (warmed) {
      std::printf("%-17s on %-6s p50 %.1f us against %.1f us warmed (%zu fresh loads)\n", row.name.c_str(),
                  row.model.c_str(), row.p50_us, warmed->p50_us, row.requests);
    }
  }
}

// A client-side hit against the model's forward, and its pieces in GB/s of input.
void print_cache_summary(const std::vector<Row>& rows) {
  for (const Row& hit : rows) {
    if (hit.name != "cache_hit_client") continue;
    const Row* forward = find_row(rows, "in_process", hit.model);
    const Row* miss = find_row(rows, "cache_miss", hit.model);
    if (forward) {
      std::printf("cache_hit_client on %-6s p50 %.2f us = 1/%.0f of the in-process forward", hit.model.c_str(),
                  hit.p50_us, forward->p50_us / hit.p50_us);
      if (miss) std::printf(", 1/%.0f of a miss", miss->p50_us / hit.p50_us);
      std::printf("\n");
    }
    const Row* hash = find_row(rows, "key_hash", hit.model);
    const Row* compare = find_row(rows, "memcmp", hit.model);
    const Row* copy = find_row(rows, "memcpy", hit.model);
    if (hash && compare && copy) {
      const double bytes = static_cast<double>(hash->bytes);
      auto gbps = [&](double us) { return bytes / (us * 1e3); };
      std::printf(
          "  on its %.0f input bytes: whole hit %.1f GB/s of input; hash %.2f us (%.1f GB/s), compare %.2f us "
          "(%.1f GB/s), memcpy %.2f us (%.1f GB/s)\n",
          bytes, gbps(hit.p50_us), hash->p50_us, gbps(hash->p50_us), compare->p50_us, gbps(compare->p50_us),
          copy->p50_us, gbps(copy->p50_us));
    }
  }
}

void write_json(const std::string& path, const std::vector<Row>& rows) {
  std::ofstream out(path);
  out << "{\"rows\":[";
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const Row& row = rows[i];
    char line[512];
    std::snprintf(
        line, sizeof line,
        "%s\n {\"name\":\"%s\",\"model\":\"%s\",\"p50_us\":%.3f,\"p99_us\":%.3f,\"p999_us\":%.3f,\"requests\":%zu,"
        "\"input_bytes\":%llu,\"clients\":%u,\"throughput_rps\":%.2f,\"mean_batch_size\":%.3f,",
        i ? "," : "", row.name.c_str(), row.model.c_str(), row.p50_us, row.p99_us, row.p999_us, row.requests,
        static_cast<unsigned long long>(row.bytes), row.clients, row.throughput_rps, row.mean_batch_size);
    out << line;
    if (row.cpu_measured) {
      std::snprintf(line, sizeof line, "\"client_cpu_us\":%.3f,\"server_cpu_us\":%.3f,\"cpu_us_per_request\":%.3f,",
                    row.client_cpu_us, row.server_cpu_us, row.cpu_us_per_request);
      out << line;
    }
    if (row.rate_per_client > 0) out << "\"rate_per_client\":" << row.rate_per_client << ",";
    if (row.idle_server_cpu_us_per_s >= 0) out << "\"idle_server_cpu_us_per_s\":" << row.idle_server_cpu_us_per_s << ",";
    out << "\"quantiles_us\":[";
    for (std::size_t q = 0; q < row.quantiles_us.size(); ++q) {
      std::snprintf(line, sizeof line, "%s%.3f", q ? "," : "", row.quantiles_us[q]);
      out << line;
    }
    out << "]}";
  }
  out << "\n]}\n";
  if (!out) throw std::runtime_error("cannot write " + path);
}

}  // namespace sidecar::bench
