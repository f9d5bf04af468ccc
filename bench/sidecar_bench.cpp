// sidecar-bench: round-trip latency of a model called in-process and through a real sidecar
// process, spinning and blocking, and of the result cache's hits and misses. Prints a table; --json
// writes the rows for later comparison.
//
// Rows:
//   in_process        the frozen model called in this process (the floor)
//   sidecar_spin      through the sidecar, cache bypassed, both sides polling
//   sidecar_block     the same, both sides sleeping at once
//   cache_miss        a new input every call, cache on: the client's lookup misses, the sidecar
//                     runs the model and stores the result
//   cache_hit_client  the same input every call, looked up by the client in shared memory
//   cache_hit_sidecar the same input every call, looked up by the sidecar
//   key_hash, memcmp, memcpy   the pieces of a hit on the model's input bytes, for GB/s
// The sidecar rows use the zero-copy path (inputs written in place); the cache rows use infer(),
// whose lookup reads the caller's buffer, so a client-side hit copies nothing into shared memory.
//
//   sidecar-bench                                  # makes and measures "tiny" and "demo"
//   sidecar-bench --model m.pt --shape 1x3x224x224 --json out.json
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <random>
#include <thread>

#include "model_runner.hpp"
#include "model_zoo.hpp"
#include "options.hpp"
#include "sidecar/client.hpp"
#include "sidecar/shared/cache_reader.hpp"

extern char** environ;

namespace sidecar::bench {
namespace {

using Clock = std::chrono::steady_clock;

struct Row {
  std::string name;
  std::string model;
  double p50_us = 0;
  double p99_us = 0;
  double p999_us = 0;
  std::size_t requests = 0;
  std::uint64_t bytes = 0;  // input bytes, for the rows that report GB/s
};

struct ModelCase {
  std::string name;
  std::string path;
  InputSignature signature;
  std::size_t requests;
};

Row summarize(std::string name, const std::string& model, std::vector<double> latencies_us) {
  std::sort(latencies_us.begin(), latencies_us.end());
  auto at = [&](double quantile) {
    const auto index = static_cast<std::size_t>(quantile * static_cast<double>(latencies_us.size() - 1));
    return latencies_us[index];
  };
  return Row{std::move(name), model, at(0.50), at(0.99), at(0.999), latencies_us.size(), 0};
}

std::vector<float> random_input(std::uint64_t elements) {
  std::mt19937 generator(7);
  std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
  std::vector<float> values(elements);
  for (float& value : values) value = uniform(generator);
  return values;
}

std::uint64_t element_count_of(const TensorShape& shape) {
  std::uint64_t count = 1;
  for (int i = 0; i < shape.rank; ++i) count *= static_cast<std::uint64_t>(shape.dims[i]);
  return count;
}

// Copies the outputs out, as the sidecar copies them into shared memory: the same work per call.
class CopyingSink final : public OutputSink {
 public:
  Status accept(std::span<const OutputView> outputs, std::string&) override {
    for (const OutputView& output : outputs) {
      buffer_.resize(output.bytes);
      std::memcpy(buffer_.data(), output.data, output.bytes);
    }
    return Status::kOk;
  }

 private:
  std::vector<std::byte> buffer_;
};

// Pinning: the client (this process) on the last CPU it may use, the sidecar on the others, so the
// two spinning threads never share a core and the scheduler's migrations stay out of the figures.
struct Placement {
  bool pinned = false;
  cpu_set_t client{};
  cpu_set_t sidecar{};
};

Placement plan_placement(bool pin) {
  Placement placement;
  cpu_set_t allowed;
  CPU_ZERO(&allowed);
  if (!pin || ::sched_getaffinity(0, sizeof(allowed), &allowed) != 0 || CPU_COUNT(&allowed) < 2) return placement;
  int last = -1;
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
    if (CPU_ISSET(cpu, &allowed)) last = cpu;
  }
  CPU_ZERO(&placement.client);
  CPU_SET(last, &placement.client);
  placement.sidecar = allowed;
  CPU_CLR(last, &placement.sidecar);
  placement.pinned = true;
  return placement;
}

Placement placement;

std::size_t discarded(std::size_t requests) { return std::min<std::size_t>(requests / 10, 1000); }

Row measure_in_process(const ModelCase& model) {
  // On the CPUs the sidecar's forward runs on: this VM's vCPUs do not always run at the same speed,
  // and the rows should differ by transport alone.
  if (placement.pinned) ::sched_setaffinity(0, sizeof(cpu_set_t), &placement.sidecar);
  struct RestorePlacement {
    ~RestorePlacement() {
      if (placement.pinned) ::sched_setaffinity(0, sizeof(cpu_set_t), &placement.client);
    }
  } restore;
  auto runner = ModelRunner::load(model.path, {});
  runner->warm_up({model.signature}, 20);
  std::vector<std::vector<float>> inputs;
  std::vector<InputView> views;
  for (const TensorShape& shape : model.signature) inputs.push_back(random_input(element_count_of(shape)));
  for (std::size_t i = 0; i < inputs.size(); ++i) views.push_back(InputView{model.signature[i], inputs[i].data()});
  CopyingSink sink;
  std::vector<double> latencies;
  const std::size_t skip = discarded(model.requests);
  for (std::size_t r = 0; r < model.requests + skip; ++r) {
    const auto start = Clock::now();
    const CallOutcome outcome = runner->run(views, sink);
    const auto end = Clock::now();
    if (outcome.status != Status::kOk) throw std::runtime_error("in-process forward failed: " + outcome.message);
    if (r >= skip) latencies.push_back(std::chrono::duration<double, std::micro>(end - start).count());
  }
  return summarize("in_process", model.name, std::move(latencies));
}

class SidecarChild {
 public:
  SidecarChild(const std::string& binary, const std::vector<std::string>& args) {
    // A spawned child inherits our CPU mask: lend it the sidecar's for the spawn.
    if (placement.pinned) ::sched_setaffinity(0, sizeof(cpu_set_t), &placement.sidecar);
    std::vector<std::string> storage{binary};
    storage.insert(storage.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& arg : storage) argv.push_back(arg.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 2, log_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&actions, 2, 1);
    const int rc = posix_spawn(&pid_, binary.c_str(), &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    if (placement.pinned) ::sched_setaffinity(0, sizeof(cpu_set_t), &placement.client);
    if (rc != 0) throw std::runtime_error("cannot start " + binary + ": " + std::strerror(rc));
  }
  ~SidecarChild() {
    ::kill(pid_, SIGTERM);
    ::waitpid(pid_, nullptr, 0);
    ::unlink(log_path_.c_str());
  }
  std::string log() const {
    std::ifstream file(log_path_);
    return std::string(std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>());
  }

 private:
  pid_t pid_ = -1;
  std::string log_path_ =
      "/tmp/sidecar-bench-" + std::to_string(::getpid()) + "-" + std::to_string(counter_++) + ".log";
  static inline int counter_ = 0;
};

std::string signature_text(const InputSignature& signature) {
  std::string text;
  for (const TensorShape& shape : signature) {
    if (!text.empty()) text += ",";
    for (int i = 0; i < shape.rank; ++i) text += (i ? "x" : "") + std::to_string(shape.dims[i]);
    text += ":" + std::string(dtype_name(static_cast<DType>(shape.dtype)));
  }
  return text;
}

// Round trips through a real sidecar: inputs written in place into shared memory, outputs read in
// place (the library's zero-copy path).
Row measure_sidecar(const std::string& row_name, const ModelCase& model, const std::string& binary,
                    std::chrono::microseconds spin) {
  const std::string name = "bench-" + std::to_string(::getpid()) + "-" + row_name + "-" + model.name;
  const std::string spin_us = std::to_string(spin.count());
  SidecarChild child(binary, {"--model", model.path, "--name", name, "--warmup-shape", signature_text(model.signature),
                              "--workers", "1", "--spin-us", spin_us, "--channels", "2", "--warmup-iterations", "20"});
  ConnectOptions options;
  options.timeout = std::chrono::minutes(5);
  options.spin = spin;
  auto client = Client::connect(name, options);
  if (!client.ok()) throw std::runtime_error("connect: " + client.message() + "\n" + child.log());

  std::vector<std::vector<float>> inputs;
  for (const TensorShape& shape : model.signature) inputs.push_back(random_input(element_count_of(shape)));
  std::vector<double> latencies;
  const std::size_t skip = discarded(model.requests);
  float checksum = 0;
  for (std::size_t r = 0; r < model.requests + skip; ++r) {
    const auto start = Clock::now();
    for (std::size_t i = 0; i < inputs.size(); ++i) {
      const TensorShape& shape = model.signature[i];
      auto buffer =
          client->input_buffer(static_cast<DType>(shape.dtype), std::span<const std::int64_t>(shape.dims, shape.rank));
      if (!buffer.ok()) throw std::runtime_error(buffer.message());
      std::memcpy(buffer->data(), inputs[i].data(), buffer->size());
    }
    auto outputs = client->run(std::chrono::seconds(60), CachePolicy::kBypass);
    if (!outputs.ok()) throw std::runtime_error(row_name + ": " + outputs.message());
    checksum += (*outputs)[0].values<float>()[0];
    const auto end = Clock::now();
    if (r >= skip) latencies.push_back(std::chrono::duration<double, std::micro>(end - start).count());
  }
  if (checksum != checksum) std::cerr << "(NaN outputs)\n";
  return summarize(row_name, model.name, std::move(latencies));
}

enum class CacheRow { kMiss, kHitInClient, kHitInSidecar };

Row measure_cache(CacheRow kind, const ModelCase& model, const std::string& binary) {
  const char* row_name = kind == CacheRow::kMiss          ? "cache_miss"
                         : kind == CacheRow::kHitInClient ? "cache_hit_client"
                                                          : "cache_hit_sidecar";
  const std::string name = "bench-" + std::to_string(::getpid()) + "-" + row_name + "-" + model.name;
  SidecarChild child(
      binary, {"--model", model.path, "--name", name, "--warmup-shape", signature_text(model.signature), "--workers",
               "1", "--spin-us", "1000000", "--channels", "2", "--warmup-iterations", "20", "--cache-bytes", "256M"});
  ConnectOptions options;
  options.timeout = std::chrono::minutes(5);
  options.spin = std::chrono::seconds(1);
  options.cache_lookup = kind == CacheRow::kHitInSidecar ? CacheLookup::kInSidecar : CacheLookup::kInClient;
  auto client = Client::connect(name, options);
  if (!client.ok()) throw std::runtime_error("connect: " + client.message() + "\n" + child.log());

  std::vector<std::vector<float>> inputs;
  std::vector<TensorView> views;
  for (const TensorShape& shape : model.signature) inputs.push_back(random_input(element_count_of(shape)));
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    const TensorShape& shape = model.signature[i];
    views.push_back(TensorView::of(inputs[i], std::span<const std::int64_t>(shape.dims, shape.rank)));
  }
  const CacheOutcome expected = kind == CacheRow::kMiss          ? CacheOutcome::kMiss
                                : kind == CacheRow::kHitInClient ? CacheOutcome::kHitInClient
                                                                 : CacheOutcome::kHitInSidecar;
  std::vector<double> latencies;
  const std::size_t skip = discarded(model.requests);
  float checksum = 0;
  for (std::size_t r = 0; r < model.requests + skip; ++r) {
    // A miss needs an input never seen before: change one element, outside the timed part.
    if (kind == CacheRow::kMiss) inputs[0][r % inputs[0].size()] += 1.0f;
    const auto start = Clock::now();
    auto outputs = client->infer(views, std::chrono::seconds(60));
    const auto end = Clock::now();
    if (!outputs.ok()) throw std::runtime_error(std::string(row_name) + ": " + outputs.message());
    checksum += (*outputs)[0].values<float>()[0];
    // The first call of a hit row stores the result; every measured call must be what the row says.
    if (r >= skip && client->last_cache_outcome() != expected) {
      throw std::runtime_error(std::string(row_name) + ": call " + std::to_string(r) + " was a " +
                               cache_outcome_name(client->last_cache_outcome()));
    }
    if (r >= skip) latencies.push_back(std::chrono::duration<double, std::micro>(end - start).count());
  }
  if (checksum != checksum) std::cerr << "(NaN outputs)\n";
  return summarize(row_name, model.name, std::move(latencies));
}

// What a client-side hit is made of, on the model's input bytes: hashing them once, comparing them
// with the stored copy, and, for scale, copying them. All in cache-warm buffers, as in the hit rows.
std::vector<Row> measure_hit_parts(const ModelCase& model) {
  std::uint64_t bytes = 0;
  for (const TensorShape& shape : model.signature) bytes += element_count_of(shape) * sizeof(float);
  std::vector<std::uint8_t> input(bytes), stored(bytes), copy(bytes);
  for (std::size_t i = 0; i < bytes; ++i) input[i] = stored[i] = static_cast<std::uint8_t>(i * 131);
  TensorShape flat{};
  flat.dtype = static_cast<std::uint8_t>(DType::kUInt8);
  flat.rank = 1;
  flat.dims[0] = static_cast<std::int64_t>(bytes);
  const TensorBytes keyed[] = {TensorBytes{flat, input.data(), bytes}};
  const std::size_t calls = std::max<std::size_t>(model.requests, 2000);
  std::uint64_t sink = 0;
  auto time = [&](const char* name, auto&& body) {
    std::vector<double> latencies;
    for (std::size_t r = 0; r < calls; ++r) {
      const auto start = Clock::now();
      body();
      latencies.push_back(std::chrono::duration<double, std::micro>(Clock::now() - start).count());
    }
    return summarize(name, model.name, std::move(latencies));
  };
  std::vector<Row> rows;
  rows.push_back(time("key_hash", [&] { sink += compute_cache_key(1, keyed).low; }));
  rows.push_back(time("memcmp", [&] { sink += std::memcmp(input.data(), stored.data(), bytes) == 0; }));
  rows.push_back(time("memcpy", [&] {
    std::memcpy(copy.data(), input.data(), bytes);
    sink += copy[bytes / 2];
  }));
  if (sink == 42) std::fprintf(stderr, " ");
  for (Row& row : rows) row.bytes = bytes;
  return rows;
}

void print_table(const std::vector<Row>& rows) {
  std::printf("%-18s %-8s %12s %12s %12s %10s\n", "row", "model", "p50_us", "p99_us", "p99.9_us", "requests");
  for (const Row& row : rows) {
    std::printf("%-18s %-8s %12.2f %12.2f %12.2f %10zu\n", row.name.c_str(), row.model.c_str(), row.p50_us, row.p99_us,
                row.p999_us, row.requests);
  }
  // The sidecar's cost over calling the model in-process, per model.
  for (const Row& in_process : rows) {
    if (in_process.name != "in_process") continue;
    for (const Row& row : rows) {
      if (row.model != in_process.model || row.name == "in_process" || row.bytes != 0) continue;
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
        "\"input_bytes\":%llu}",
        i ? "," : "", row.name.c_str(), row.model.c_str(), row.p50_us, row.p99_us, row.p999_us, row.requests,
        static_cast<unsigned long long>(row.bytes));
    out << line;
  }
  out << "\n]}\n";
  if (!out) throw std::runtime_error("cannot write " + path);
}

int run(int argc, char** argv) {
  std::string model_path, shape = "1x3x224x224", json_path, sidecar_binary = SIDECAR_BINARY;
  std::size_t requests = 0;
  CLI::App app{"sidecar-bench: round-trip latency in-process and through the sidecar"};
  app.add_option("--model", model_path, "TorchScript model (default: make and measure 'tiny' and 'demo')");
  app.add_option("--shape", shape, "input signature for --model, e.g. 1x3x224x224 or 1x8:int64,1x8");
  app.add_option("--json", json_path, "write the rows to this file");
  app.add_option("--requests", requests, "measured requests per row (default: 20000 tiny, 300 demo, 300 --model)");
  app.add_option("--sidecar", sidecar_binary, "inference-sidecar binary");
  bool no_pin = false;
  app.add_flag("--no-pin", no_pin, "let the scheduler place the client and the sidecar");
  bool no_cache = false;
  app.add_flag("--no-cache-rows", no_cache, "skip the cache rows");
  CLI11_PARSE(app, argc, argv);
  placement = plan_placement(!no_pin);
  if (placement.pinned) ::sched_setaffinity(0, sizeof(cpu_set_t), &placement.client);
  std::fprintf(stderr, "%s\n",
               placement.pinned ? "client pinned to the last CPU, sidecar to the others" : "not pinned");

  // As the sidecar's defaults, so that in_process does the same work and rows differ by transport.
  configure_torch_threads(1, 1);
  retain_freed_memory();
  std::vector<ModelCase> models;
  const std::string scratch = std::filesystem::temp_directory_path() / ("sidecar-bench-" + std::to_string(::getpid()));
  if (model_path.empty()) {
    std::filesystem::create_directories(scratch);
    save_tiny_model(scratch + "/tiny.pt");
    save_demo_model(scratch + "/demo.pt");
    models.push_back({"tiny", scratch + "/tiny.pt", parse_signature("1x64"), requests ? requests : 20000});
    models.push_back({"demo", scratch + "/demo.pt", parse_signature("1x3x224x224"), requests ? requests : 300});
  } else {
    models.push_back(
        {std::filesystem::path(model_path).stem(), model_path, parse_signature(shape), requests ? requests : 300});
  }
  for (const auto& model : models) {
    for (const TensorShape& input : model.signature) {
      if (input.dtype != static_cast<std::uint8_t>(DType::kFloat32)) {
        throw std::runtime_error("sidecar-bench feeds float32 inputs only");
      }
    }
  }

  std::vector<Row> rows;
  for (const ModelCase& model : models) {
    std::fprintf(stderr, "measuring %s...\n", model.name.c_str());
    rows.push_back(measure_in_process(model));
    // Spinning: both sides poll for a second before they would sleep, i.e. never under load.
    rows.push_back(measure_sidecar("sidecar_spin", model, sidecar_binary, std::chrono::seconds(1)));
    rows.push_back(measure_sidecar("sidecar_block", model, sidecar_binary, std::chrono::microseconds(0)));
    if (!no_cache) {
      rows.push_back(measure_cache(CacheRow::kMiss, model, sidecar_binary));
      rows.push_back(measure_cache(CacheRow::kHitInClient, model, sidecar_binary));
      rows.push_back(measure_cache(CacheRow::kHitInSidecar, model, sidecar_binary));
      for (Row& row : measure_hit_parts(model)) rows.push_back(std::move(row));
    }
  }
  if (model_path.empty()) std::filesystem::remove_all(scratch);
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
