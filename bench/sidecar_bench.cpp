// sidecar-bench: round-trip latency of a model called in-process and through a real sidecar
// process, spinning and blocking, and of the result cache's hits and misses. Prints a table; --json
// writes the rows for later comparison.
//
// Rows:
//   in_process        the frozen model called in this process (the floor)
//   sidecar_spin      through the sidecar, cache bypassed, both sides polling (--spin-us)
//   sidecar_block     the same, both sides sleeping at once
//   sidecar_idle      what the sidecar_spin row's sidecar spends per second once its client stops
//   unix_socket       the same model behind a plain blocking Unix-socket server (sidecar-socket-server),
//                     length-prefixed bytes: what a user would write instead of the sidecar
//   cache_miss        a new input every call, cache on: the client's lookup misses, the sidecar
//                     runs the model and stores the result
//   cache_hit_client  the same input every call, looked up by the client in shared memory
//   cache_hit_sidecar the same input every call, looked up by the sidecar
//   key_hash, memcmp, memcpy   the pieces of a hit on the model's input bytes, for GB/s
// With --clients 1,2,4,8,16: closed-loop client processes instead, each with one request in
// flight, new inputs every call, cache bypassed; rows batching_off and batching_on per client count
// with throughput_rps and mean_batch_size beside the latency percentiles, on "demo" and "mlp".
// Every latency row has the CPU time its client and server spent per request; --rate R paces the
// client to R requests/s, to show a service that is not saturated.
// The sidecar rows use the zero-copy path (inputs written in place); the cache rows use infer(),
// whose lookup reads the caller's buffer, so a client-side hit copies nothing into shared memory.
//
//   sidecar-bench                                  # makes and measures "tiny" and "demo"
//   sidecar-bench --model m.pt --shape 1x3x224x224 --json out.json
#include <sched.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>

#include "bench_support.hpp"
#include "latency_rows.hpp"
#include "model_runner.hpp"
#include "model_zoo.hpp"
#include "options.hpp"
#include "throughput_rows.hpp"

namespace sidecar::bench {
namespace {

void print_table(const std::vector<Row>& rows) {
  std::printf("%-18s %-8s %12s %12s %12s %10s %12s %12s %12s\n", "row", "model", "p50_us", "p99_us", "p99.9_us",
              "requests", "cpu_client", "cpu_server", "cpu_us/req");
  for (const Row& row : rows) {
    if (row.idle_server_cpu_us_per_s >= 0) continue;
    std::printf("%-18s %-8s %12.2f %12.2f %12.2f %10zu", row.name.c_str(), row.model.c_str(), row.p50_us, row.p99_us,
                row.p999_us, row.requests);
    if (row.cpu_measured) {
      std::printf(" %12.2f %12.2f %12.2f\n", row.client_cpu_us, row.server_cpu_us, row.cpu_us_per_request);
    } else {
      std::printf(" %12s %12s %12s\n", "-", "-", "-");
    }
  }
  for (const Row& row : rows) {
    if (row.idle_server_cpu_us_per_s < 0) continue;
    std::printf("%s on %s: the server used %.0f us of CPU per second with its client idle\n", row.name.c_str(),
                row.model.c_str(), row.idle_server_cpu_us_per_s);
  }
  // The sidecar's cost over calling the model in-process, per model.
  for (const Row& in_process : rows) {
    if (in_process.name != "in_process") continue;
    for (const Row& row : rows) {
      if (row.model != in_process.model || row.name == "in_process" || row.bytes != 0 ||
          row.idle_server_cpu_us_per_s >= 0) {
        continue;
      }
      std::printf("added by %-17s on %-6s p50 %+9.2f us   p99 %+9.2f us\n", row.name.c_str(), row.model.c_str(),
                  row.p50_us - in_process.p50_us, row.p99_us - in_process.p99_us);
    }
  }
}

// A client-side hit against the model's forward, and its pieces in GB/s of input.
void print_cache_summary(const std::vector<Row>& rows) {
  auto find = [&](const std::string& name, const std::string& model) -> const Row* {
    for (const Row& row : rows)
      if (row.name == name && row.model == model) return &row;
    return nullptr;
  };
  for (const Row& hit : rows) {
    if (hit.name != "cache_hit_client") continue;
    const Row* forward = find("in_process", hit.model);
    const Row* miss = find("cache_miss", hit.model);
    if (forward) {
      std::printf("cache_hit_client on %-6s p50 %.2f us = 1/%.0f of the in-process forward", hit.model.c_str(),
                  hit.p50_us, forward->p50_us / hit.p50_us);
      if (miss) std::printf(", 1/%.0f of a miss", miss->p50_us / hit.p50_us);
      std::printf("\n");
    }
    const Row* hash = find("key_hash", hit.model);
    const Row* compare = find("memcmp", hit.model);
    const Row* copy = find("memcpy", hit.model);
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
        "\"input_bytes\":%llu,\"clients\":%u,\"throughput_rps\":%.2f,\"mean_batch_size\":%.3f",
        i ? "," : "", row.name.c_str(), row.model.c_str(), row.p50_us, row.p99_us, row.p999_us, row.requests,
        static_cast<unsigned long long>(row.bytes), row.clients, row.throughput_rps, row.mean_batch_size);
    out << line;
    if (row.cpu_measured) {
      std::snprintf(line, sizeof line, ",\"client_cpu_us\":%.3f,\"server_cpu_us\":%.3f,\"cpu_us_per_request\":%.3f",
                    row.client_cpu_us, row.server_cpu_us, row.cpu_us_per_request);
      out << line;
    }
    if (row.rate_per_client > 0) out << ",\"rate_per_client\":" << row.rate_per_client;
    if (row.idle_server_cpu_us_per_s >= 0) out << ",\"idle_server_cpu_us_per_s\":" << row.idle_server_cpu_us_per_s;
    out << "}";
  }
  out << "\n]}\n";
  if (!out) throw std::runtime_error("cannot write " + path);
}

int run(int argc, char** argv) {
  std::string model_path, shape = "1x3x224x224", json_path, sidecar_binary = SIDECAR_BINARY;
  std::string socket_server_binary = SOCKET_SERVER_BINARY;
  std::size_t requests = 0;
  CLI::App app{"sidecar-bench: round-trip latency in-process and through the sidecar"};
  app.add_option("--model", model_path, "TorchScript model (default: make and measure 'tiny' and 'demo')");
  app.add_option("--shape", shape, "input signature for --model, e.g. 1x3x224x224 or 1x8:int64,1x8");
  app.add_option("--json", json_path, "write the rows to this file");
  app.add_option("--requests", requests, "measured requests per row (default: 20000 tiny, 300 demo, 300 --model)");
  double rate = 0;
  app.add_option("--rate", rate,
                 "pace each client of the latency rows to this many requests/s (a request starts at its slot or "
                 "when the answer before it came, whichever is later); default: as fast as answers come");
  app.add_option("--sidecar", sidecar_binary, "inference-sidecar binary");
  app.add_option("--socket-server", socket_server_binary, "sidecar-socket-server binary (the unix_socket row)");
  std::vector<std::string> sidecar_args;
  app.add_option("--sidecar-args", sidecar_args,
                 "further sidecar flags for the sidecar_spin and sidecar_block rows, one string "
                 "(e.g. \"--wake-ahead-us 0\")")
      ->delimiter(' ');
  std::uint32_t spin_us = 50;
  app.add_option("--spin-us", spin_us,
                 "both sides' spin budget in the sidecar_spin and sidecar_idle rows (the defaults of the sidecar "
                 "and the library; the spin adapts within it)")
      ->capture_default_str();
  bool no_pin = false;
  app.add_flag("--no-pin", no_pin, "let the scheduler place the client and the sidecar");
  bool no_cache = false;
  app.add_flag("--no-cache-rows", no_cache, "skip the cache rows");
  std::vector<std::uint32_t> client_counts;
  ThroughputSettings throughput;
  app.add_option("--clients", client_counts,
                 "throughput rows instead: closed-loop client processes, e.g. --clients 1,2,4,8,16 (default models: "
                 "demo and mlp)")
      ->delimiter(',');
  app.add_option("--max-batch", throughput.max_batch, "--max-batch of the batching_on rows")->capture_default_str();
  app.add_option("--batch-delay-us", throughput.batch_delay_us, "--max-queue-delay-us of the batching_on rows")
      ->capture_default_str();
  app.add_option("--seconds", throughput.seconds, "length of each throughput row")->capture_default_str();
  app.add_option("--on-args", throughput.on_args, "further sidecar flags for the batching_on rows, one string")
      ->delimiter(' ');
  app.add_option("--off-args", throughput.off_args, "further sidecar flags for the batching_off rows, one string")
      ->delimiter(' ');
  CLI11_PARSE(app, argc, argv);
  // Many clients share the machine with the sidecar: the scheduler places everyone.
  placement = plan_placement(!no_pin && client_counts.empty());
  if (placement.pinned) ::sched_setaffinity(0, sizeof(cpu_set_t), &placement.client);
  std::fprintf(stderr, "%s\n",
               placement.pinned ? "client pinned to the last CPU, the servers to the others" : "not pinned");
  std::fprintf(stderr, "sockets in %s\n", bench_runtime_dir().c_str());

  // As the sidecar's defaults, so that in_process does the same work and rows differ by transport.
  configure_torch_threads(1, 1);
  retain_freed_memory();
  std::vector<ModelCase> models;
  const std::string scratch = std::filesystem::temp_directory_path() / ("sidecar-bench-" + std::to_string(::getpid()));
  if (model_path.empty() && client_counts.empty()) {
    std::filesystem::create_directories(scratch);
    save_tiny_model(scratch + "/tiny.pt");
    save_demo_model(scratch + "/demo.pt");
    models.push_back({"tiny", scratch + "/tiny.pt", parse_signature("1x64"), requests ? requests : 20000});
    models.push_back({"demo", scratch + "/demo.pt", parse_signature("1x3x224x224"), requests ? requests : 300});
  } else if (model_path.empty()) {
    // Throughput: the demo CNN, whose cost per row is the same at any batch size, and the MLP,
    // whose weights make a batch cost little more than one row.
    std::filesystem::create_directories(scratch);
    save_demo_model(scratch + "/demo.pt");
    save_mlp_model(scratch + "/mlp.pt");
    models.push_back({"demo", scratch + "/demo.pt", parse_signature("1x3x224x224"), 0});
    models.push_back({"mlp", scratch + "/mlp.pt", parse_signature("1x1024"), 0});
  } else {
    models.push_back(
        {std::filesystem::path(model_path).stem(), model_path, parse_signature(shape), requests ? requests : 300});
  }
  for (auto& model : models) {
    model.rate_per_client = rate;
    for (const TensorShape& input : model.signature) {
      if (input.dtype != static_cast<std::uint8_t>(DType::kFloat32)) {
        throw std::runtime_error("sidecar-bench feeds float32 inputs only");
      }
    }
  }

  std::vector<Row> rows;
  if (!client_counts.empty()) {
    for (const ModelCase& model : models) {
      for (std::uint32_t clients : client_counts) {
        for (bool batching : {false, true}) {
          std::fprintf(stderr, "%s, %u clients, batching %s...\n", model.name.c_str(), clients,
                       batching ? "on" : "off");
          rows.push_back(measure_throughput(model, sidecar_binary, clients, batching, throughput));
        }
      }
    }
    if (model_path.empty()) std::filesystem::remove_all(scratch);
    print_throughput(rows);
    if (!json_path.empty()) write_json(json_path, rows);
    return 0;
  }
  for (const ModelCase& model : models) {
    std::fprintf(stderr, "measuring %s...\n", model.name.c_str());
    rows.push_back(measure_in_process(model));
    rows.push_back(
        measure_sidecar("sidecar_spin", model, sidecar_binary, std::chrono::microseconds(spin_us), sidecar_args));
    rows.push_back(measure_sidecar("sidecar_block", model, sidecar_binary, std::chrono::microseconds(0), sidecar_args));
    rows.push_back(measure_unix_socket(model, socket_server_binary));
    rows.push_back(measure_sidecar_idle(model, sidecar_binary, std::chrono::microseconds(spin_us), sidecar_args));
    if (!no_cache) {
      rows.push_back(measure_cache(CacheRow::kMiss, model, sidecar_binary));
      rows.push_back(measure_cache(CacheRow::kHitInClient, model, sidecar_binary));
      rows.push_back(measure_cache(CacheRow::kHitInSidecar, model, sidecar_binary));
      for (Row& row : measure_hit_parts(model)) rows.push_back(std::move(row));
    }
  }
  for (Row& row : rows) row.rate_per_client = rate;
  if (model_path.empty()) std::filesystem::remove_all(scratch);
  if (rate > 0) std::printf("each client paced to %.0f requests/s\n", rate);
  print_table(rows);
  print_cache_summary(rows);
  if (!json_path.empty()) write_json(json_path, rows);
  return 0;
}

}  // namespace
}  // namespace sidecar::bench

int main(int argc, char** argv) {
  try {
    return sidecar::bench::run(argc, argv);
  } catch (const std::exception& error) {
    std::fprintf(stderr, "sidecar-bench: %s\n", error.what());
    return 1;
  }
}
