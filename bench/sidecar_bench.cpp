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
// With --clients 1,2,4,8,16: closed-loop client processes instead, each with one request in
// flight, new inputs every call, cache bypassed; rows batching_off and batching_on per client count
// with throughput_rps and mean_batch_size beside the latency percentiles, on "demo" and "mlp".
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
  std::uint64_t bytes = 0;    // input bytes, for the rows that report GB/s
  std::uint32_t clients = 0;  // throughput rows
  double throughput_rps = 0;
  double mean_batch_size = 0;  // throughput rows: requests in the forward that answered each request
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

// Random inputs for a model's signature, and the client library's views of them (the views point
// into `values`, which the caller may change between calls).
struct ClientInputs {
  std::vector<std::vector<float>> values;
  std::vector<TensorView> views;
};
ClientInputs client_inputs(const ModelCase& model) {
  ClientInputs inputs;
  for (const TensorShape& shape : model.signature) inputs.values.push_back(random_input(element_count_of(shape)));
  for (std::size_t i = 0; i < inputs.values.size(); ++i) {
    const TensorShape& shape = model.signature[i];
    inputs.views.push_back(TensorView::of(inputs.values[i], std::span<const std::int64_t>(shape.dims, shape.rank)));
  }
  return inputs;
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

  ClientInputs inputs = client_inputs(model);
  const CacheOutcome expected = kind == CacheRow::kMiss          ? CacheOutcome::kMiss
                                : kind == CacheRow::kHitInClient ? CacheOutcome::kHitInClient
                                                                 : CacheOutcome::kHitInSidecar;
  std::vector<double> latencies;
  const std::size_t skip = discarded(model.requests);
  float checksum = 0;
  for (std::size_t r = 0; r < model.requests + skip; ++r) {
    // A miss needs an input never seen before: change one element, outside the timed part.
    if (kind == CacheRow::kMiss) inputs.values[0][r % inputs.values[0].size()] += 1.0f;
    const auto start = Clock::now();
    auto outputs = client->infer(inputs.views, std::chrono::seconds(60));
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
  rows.push_back(time("key_hash", [&] { sink += compute_cache_key(1, kSharedScope, keyed).low; }));
  rows.push_back(time("memcmp", [&] { sink += std::memcmp(input.data(), stored.data(), bytes) == 0; }));
  rows.push_back(time("memcpy", [&] {
    std::memcpy(copy.data(), input.data(), bytes);
    sink += copy[bytes / 2];
  }));
  if (sink == 42) std::fprintf(stderr, " ");
  for (Row& row : rows) row.bytes = bytes;
  return rows;
}

// --- Throughput: many client processes at once -------------------------------------------------

struct ThroughputSettings {
  std::uint32_t max_batch = 8;
  std::uint32_t batch_delay_us = 0;
  double seconds = 3.0;
  std::vector<std::string> on_args;   // further sidecar flags for the batching_on rows
  std::vector<std::string> off_args;  // and for the batching_off rows
};

// C client processes in a closed loop against one sidecar; each reports through a pipe how many
// requests it measured, the sum of their batch sizes, then their latencies. Throughput counts the
// requests answered while all of them were running.
Row measure_throughput(const ModelCase& model, const std::string& binary, std::uint32_t clients, bool batching,
                       const ThroughputSettings& settings) {
  const char* row_name = batching ? "batching_on" : "batching_off";
  const std::string name =
      "bench-" + std::to_string(::getpid()) + "-" + row_name + "-" + std::to_string(clients) + "-" + model.name;
  const std::uint32_t max_batch = batching ? settings.max_batch : 1;
  std::vector<std::string> args{"--model",
                                model.path,
                                "--name",
                                name,
                                "--warmup-shape",
                                signature_text(model.signature),
                                "--max-batch",
                                std::to_string(max_batch),
                                "--max-queue-delay-us",
                                std::to_string(settings.batch_delay_us),
                                "--channels",
                                std::to_string(clients + 2),
                                "--warmup-iterations",
                                "3",
                                "--cache-bytes",
                                "0"};
  const auto& extra = batching ? settings.on_args : settings.off_args;
  args.insert(args.end(), extra.begin(), extra.end());
  SidecarChild child(binary, args);
  {
    ConnectOptions options;
    options.timeout = std::chrono::minutes(10);  // warm-up of every batch size
    auto ready = Client::connect(name, options);
    if (!ready.ok()) throw std::runtime_error("connect: " + ready.message() + "\n" + child.log());
  }
  int go[2];
  if (::pipe(go) != 0) throw std::runtime_error("pipe failed");
  struct Reporter {
    pid_t pid;
    int read_fd;
  };
  std::vector<Reporter> reporters;
  for (std::uint32_t c = 0; c < clients; ++c) {
    int report[2];
    if (::pipe(report) != 0) throw std::runtime_error("pipe failed");
    const pid_t pid = ::fork();
    if (pid < 0) throw std::runtime_error("fork failed");
    if (pid == 0) {
      ::close(report[0]);
      ::close(go[1]);
      std::vector<double> latencies;
      std::uint64_t batch_size_sum = 0;
      auto client = Client::connect(name);
      if (client.ok()) {
        ClientInputs inputs = client_inputs(model);
        char byte;
        if (::read(go[0], &byte, 1) == 1) {
          const auto end = Clock::now() + std::chrono::duration<double>(settings.seconds);
          for (std::uint64_t r = 0; Clock::now() < end; ++r) {
            inputs.values[0][(r * 7919 + c) % inputs.values[0].size()] += 1.0f;  // a new input every call
            const auto start = Clock::now();
            auto outputs = client->infer(inputs.views, std::chrono::seconds(60), CachePolicy::kBypass);
            const auto stop = Clock::now();
            if (!outputs.ok()) break;
            if (stop > end) continue;
            latencies.push_back(std::chrono::duration<double, std::micro>(stop - start).count());
            batch_size_sum += client->last_service().batch_size;
          }
        }
      }
      const std::uint64_t count = latencies.size();
      bool written = ::write(report[1], &count, sizeof count) == sizeof count &&
                     ::write(report[1], &batch_size_sum, sizeof batch_size_sum) == sizeof batch_size_sum;
      const char* bytes = reinterpret_cast<const char*>(latencies.data());
      for (std::size_t done = 0, total = count * sizeof(double); written && done < total;) {
        const ssize_t n = ::write(report[1], bytes + done, total - done);
        written = n > 0;
        done += n > 0 ? static_cast<std::size_t>(n) : 0;
      }
      ::_exit(written ? 0 : 1);
    }
    ::close(report[1]);
    reporters.push_back({pid, report[0]});
  }
  ::close(go[0]);
  std::this_thread::sleep_for(std::chrono::milliseconds(500));  // every child connected
  const std::string release(clients, 'x');
  if (::write(go[1], release.data(), release.size()) != static_cast<ssize_t>(release.size())) {
    throw std::runtime_error("cannot start the clients");
  }
  ::close(go[1]);
  std::vector<double> latencies;
  std::uint64_t batch_size_sum = 0, batch_sizes_counted = 0;
  for (const Reporter& reporter : reporters) {
    std::uint64_t count = 0, batch_sizes = 0;
    if (::read(reporter.read_fd, &count, sizeof count) == sizeof count &&
        ::read(reporter.read_fd, &batch_sizes, sizeof batch_sizes) == sizeof batch_sizes) {
      std::vector<double> mine(count);
      char* bytes = reinterpret_cast<char*>(mine.data());
      std::size_t done = 0;
      while (done < count * sizeof(double)) {
        const ssize_t n = ::read(reporter.read_fd, bytes + done, count * sizeof(double) - done);
        if (n <= 0) break;
        done += static_cast<std::size_t>(n);
      }
      mine.resize(done / sizeof(double));
      latencies.insert(latencies.end(), mine.begin(), mine.end());
      if (mine.size() == count) {  // a report cut short says nothing sure about its batch sizes
        batch_size_sum += batch_sizes;
        batch_sizes_counted += count;
      }
    }
    ::close(reporter.read_fd);
    ::waitpid(reporter.pid, nullptr, 0);
  }
  if (latencies.empty()) throw std::runtime_error(std::string(row_name) + ": no request answered\n" + child.log());
  const double answered = static_cast<double>(latencies.size());
  Row row = summarize(row_name, model.name, std::move(latencies));
  row.clients = clients;
  row.throughput_rps = answered / settings.seconds;
  row.mean_batch_size = batch_sizes_counted ? static_cast<double>(batch_size_sum) / batch_sizes_counted : 0;
  return row;
}

void print_throughput(const std::vector<Row>& rows) {
  std::printf("%-14s %-8s %8s %14s %12s %12s %10s %10s\n", "row", "model", "clients", "throughput_rps", "p50_us",
              "p99_us", "requests", "mean_batch");
  for (const Row& row : rows) {
    std::printf("%-14s %-8s %8u %14.1f %12.1f %12.1f %10zu %10.2f\n", row.name.c_str(), row.model.c_str(), row.clients,
                row.throughput_rps, row.p50_us, row.p99_us, row.requests, row.mean_batch_size);
  }
  for (const Row& on : rows) {
    if (on.name != "batching_on") continue;
    for (const Row& off : rows) {
      if (off.name == "batching_off" && off.model == on.model && off.clients == on.clients) {
        std::printf("batching on/off with %2u clients on %s: throughput x%.2f, p99 %.1f ms vs %.1f ms\n", on.clients,
                    on.model.c_str(), on.throughput_rps / off.throughput_rps, on.p99_us / 1000, off.p99_us / 1000);
      }
    }
  }
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
        "\"input_bytes\":%llu,\"clients\":%u,\"throughput_rps\":%.2f,\"mean_batch_size\":%.3f}",
        i ? "," : "", row.name.c_str(), row.model.c_str(), row.p50_us, row.p99_us, row.p999_us, row.requests,
        static_cast<unsigned long long>(row.bytes), row.clients, row.throughput_rps, row.mean_batch_size);
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
               placement.pinned ? "client pinned to the last CPU, sidecar to the others" : "not pinned");

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
  for (const auto& model : models) {
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
