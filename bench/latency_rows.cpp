#include "latency_rows.hpp"

#include <unistd.h>

#include <cstring>
#include <algorithm>
#include <iostream>
#include <optional>
#include <stdexcept>

#include "cpu_time.hpp"
#include "model_runner.hpp"
#include "pacing.hpp"
#include "sidecar/shared/cache_reader.hpp"

namespace sidecar::bench {
namespace {

using Clock = std::chrono::steady_clock;

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

}  // namespace

void LatencyProbe::begin_block() {
  if (ServerChild* child = server()) child->resume();
}

void LatencyProbe::end_block() {
  if (ServerChild* child = server()) child->pause();
}

namespace {

double microseconds_since(Clock::time_point start) {
  return std::chrono::duration<double, std::micro>(Clock::now() - start).count();
}

// What every sidecar of a latency row runs with: one worker, the row's spin budget, and room for
// its one measuring client.
std::vector<std::string> one_client_sidecar_args(const std::string& name, std::chrono::microseconds spin) {
  return {"--name",        name, "--workers", "1", "--spin-us", std::to_string(spin.count()),
          "--max-clients", "2",  "--warmup-iterations", "20"};
}

ConnectOptions measuring_client_options(std::chrono::microseconds spin) {
  ConnectOptions options;
  options.timeout = std::chrono::minutes(5);  // the sidecar's warm-up
  options.spin = spin;
  return options;
}

class InProcessProbe final : public LatencyProbe {
 public:
  explicit InProcessProbe(const ModelCase& model) : LatencyProbe("in_process") {
    runner_ = ModelRunner::load(model.path, {});
    begin_block();
    runner_->warm_up({model.signature}, 20);
    end_block();
    for (const TensorShape& shape : model.signature) inputs_.push_back(random_input(element_count_of(shape)));
    for (std::size_t i = 0; i < inputs_.size(); ++i) views_.push_back(InputView{model.signature[i], inputs_[i].data()});
  }
  // On the CPUs the sidecar's forward runs on: this VM's vCPUs do not always run at the same
  // speed, and the rows should differ by transport alone.
  void begin_block() override {
    if (placement.pinned) ::sched_setaffinity(0, sizeof(cpu_set_t), &placement.server);
  }
  void end_block() override {
    if (placement.pinned) ::sched_setaffinity(0, sizeof(cpu_set_t), &placement.client);
  }
  double timed_call_us() override {
    const auto start = Clock::now();
    const CallOutcome outcome = runner_->run(views_, sink_);
    const double took = microseconds_since(start);
    if (outcome.status != Status::kOk) throw std::runtime_error("in-process forward failed: " + outcome.message);
    return took;
  }

 private:
  std::unique_ptr<ModelRunner> runner_;
  std::vector<std::vector<float>> inputs_;
  std::vector<InputView> views_;
  CopyingSink sink_;
};

// Round trips through a real sidecar: inputs written in place into shared memory, outputs read in
// place (the library's zero-copy path).
class SidecarProbe final : public LatencyProbe {
 public:
  SidecarProbe(const std::string& row_name, const ModelCase& model, const SidecarSettings& settings)
      : LatencyProbe(row_name), signature_(model.signature) {
    static int started = 0;
    const std::string name =
        "bench-" + std::to_string(::getpid()) + "-" + row_name + "-" + model.name + "-" + std::to_string(started++);
    std::vector<std::string> args = one_client_sidecar_args(name, settings.spin);
    if (settings.echo) {
      args.push_back("--echo");
    } else {
      args.insert(args.end(), {"--model", model.path});
    }
    if (settings.warm) args.insert(args.end(), {"--warmup-shape", signature_text(model.signature)});
    args.insert(args.end(), settings.extra_args.begin(), settings.extra_args.end());
    child_ = std::make_unique<ServerChild>(settings.binary, args);
    client_.emplace(connect_to(*child_, name, measuring_client_options(settings.spin)));
    for (const TensorShape& shape : model.signature) inputs_.push_back(random_input(element_count_of(shape)));
  }
  double timed_call_us() override {
    const auto start = Clock::now();
    for (std::size_t i = 0; i < inputs_.size(); ++i) {
      const TensorShape& shape = signature_[i];
      auto buffer =
          client_->input_buffer(static_cast<DType>(shape.dtype), std::span<const std::int64_t>(shape.dims, shape.rank));
      if (!buffer.ok()) throw std::runtime_error(buffer.message());
      std::memcpy(buffer->data(), inputs_[i].data(), buffer->size());
    }
    auto outputs = client_->run(std::chrono::seconds(60), CachePolicy::kBypass);
    if (!outputs.ok()) throw std::runtime_error(row() + ": " + outputs.message());
    checksum_ += (*outputs)[0].values<float>()[0];
    return microseconds_since(start);
  }
  ServerChild* server() noexcept override { return child_.get(); }

 private:
  InputSignature signature_;
  std::unique_ptr<ServerChild> child_;
  std::optional<Client> client_;
  std::vector<std::vector<float>> inputs_;
  float checksum_ = 0;
};

class PeerProbe final : public LatencyProbe {
 public:
  PeerProbe(Peer peer, const ModelCase& model, bool echo, const PeerBinaries& binaries)
      : LatencyProbe(peer_row_name(peer, echo)),
        server_(peer, model, echo, binaries),
        connection_(connect_peer(peer, server_.target())),
        inputs_(client_inputs(model)) {}
  double timed_call_us() override {
    const auto start = Clock::now();
    connection_->call(inputs_);
    return microseconds_since(start);
  }
  ServerChild* server() noexcept override { return &server_.child(); }

 private:
  PeerServer server_;
  std::unique_ptr<PeerConnection> connection_;
  ClientInputs inputs_;
};

class CacheProbe final : public LatencyProbe {
 public:
  CacheProbe(CacheRow kind, const ModelCase& model, const std::string& binary, std::chrono::microseconds spin)
      : LatencyProbe(kind == CacheRow::kMiss          ? "cache_miss"
                     : kind == CacheRow::kHitInClient ? "cache_hit_client"
                                                      : "cache_hit_sidecar"),
        kind_(kind),
        expected_(kind == CacheRow::kMiss          ? CacheOutcome::kMiss
                  : kind == CacheRow::kHitInClient ? CacheOutcome::kHitInClient
                                                   : CacheOutcome::kHitInSidecar),
        unchecked_calls_(discarded(model.requests)),
        inputs_(client_inputs(model)) {
    const std::string name = "bench-" + std::to_string(::getpid()) + "-" + row() + "-" + model.name;
    std::vector<std::string> args = one_client_sidecar_args(name, spin);
    args.insert(args.end(), {"--model", model.path, "--warmup-shape", signature_text(model.signature), "--cache-bytes",
                             "256M"});
    child_ = std::make_unique<ServerChild>(binary, args);
    ConnectOptions options = measuring_client_options(spin);
    options.cache_lookup = kind == CacheRow::kHitInSidecar ? CacheLookup::kInSidecar : CacheLookup::kInClient;
    client_.emplace(connect_to(*child_, name, options));
  }
  double timed_call_us() override {
    // A miss needs an input never seen before: change one element, outside the timed part.
    if (kind_ == CacheRow::kMiss) inputs_.values[0][calls_ % inputs_.values[0].size()] += 1.0f;
    const auto start = Clock::now();
    auto outputs = client_->infer(inputs_.views, std::chrono::seconds(60));
    const double took = microseconds_since(start);
    if (!outputs.ok()) throw std::runtime_error(row() + ": " + outputs.message());
    // The first calls of a hit row store the result; every measured call must be what the row says.
    if (++calls_ > unchecked_calls_ && client_->last_cache_outcome() != expected_) {
      throw std::runtime_error(row() + ": call " + std::to_string(calls_) + " was a " +
                               cache_outcome_name(client_->last_cache_outcome()));
    }
    return took;
  }
  ServerChild* server() noexcept override { return child_.get(); }

 private:
  CacheRow kind_;
  CacheOutcome expected_;
  std::size_t unchecked_calls_;
  std::size_t calls_ = 0;
  ClientInputs inputs_;
  std::unique_ptr<ServerChild> child_;
  std::optional<Client> client_;
};

}  // namespace

std::unique_ptr<LatencyProbe> in_process_probe(const ModelCase& model) {
  return std::make_unique<InProcessProbe>(model);
}

std::unique_ptr<LatencyProbe> sidecar_probe(const std::string& row_name, const ModelCase& model,
                                            const SidecarSettings& settings) {
  return std::make_unique<SidecarProbe>(row_name, model, settings);
}

std::unique_ptr<LatencyProbe> peer_probe(Peer peer, const ModelCase& model, bool echo, const PeerBinaries& binaries) {
  return std::make_unique<PeerProbe>(peer, model, echo, binaries);
}

std::unique_ptr<LatencyProbe> cache_probe(CacheRow kind, const ModelCase& model, const std::string& binary,
                                          std::chrono::microseconds spin) {
  return std::make_unique<CacheProbe>(kind, model, binary, spin);
}

std::vector<Row> measure_interleaved(std::vector<std::unique_ptr<LatencyProbe>>& probes, const ModelCase& model,
                                     std::size_t blocks) {
  blocks = std::clamp<std::size_t>(blocks, 1, std::max<std::size_t>(model.requests, 1));
  // A server resumed for its block may have gone to sleep meanwhile: its first calls pay a wake-up
  // that the rest of the block does not, so they are not counted.
  constexpr std::size_t kSettlingCalls = 2;
  std::vector<std::vector<double>> latencies(probes.size());
  // On-CPU time of the client (this process) and of each row's server over its blocks alone; the
  // other servers are stopped meanwhile, so each row is charged only its own. Read while the
  // row's server is stopped: the kernel's count for another process's thread that is on a CPU
  // (a spinning one) lags by up to a tick, and is exact once it is off. The blocks' settling calls
  // are in the window, so they count among the calls the CPU is divided by.
  std::vector<std::uint64_t> client_cpu_ns(probes.size()), server_cpu_ns(probes.size());
  std::vector<std::uint64_t> charged_calls(probes.size());
  const auto server_cpu = [](LatencyProbe& probe) -> std::uint64_t {
    ServerChild* child = probe.server();
    return child ? process_cpu_ns(child->pid()) : 0;
  };
  for (auto& probe : probes) probe->end_block();
  for (auto& probe : probes) {
    probe->begin_block();
    for (std::size_t r = 0; r < discarded(model.requests); ++r) probe->timed_call_us();
    probe->end_block();
  }
  for (std::size_t block = 0; block < blocks; ++block) {
    const std::size_t calls = model.requests / blocks + (block < model.requests % blocks ? 1 : 0);
    for (std::size_t p = 0; p < probes.size(); ++p) {
      LatencyProbe& probe = *probes[p];
      const std::uint64_t server_before = server_cpu(probe);
      const std::uint64_t client_before = process_cpu_ns(::getpid());
      probe.begin_block();
      Pacer pacer(model.rate_per_client);
      for (std::size_t r = 0; r < kSettlingCalls; ++r) {
        pacer.wait_for_slot();
        probe.timed_call_us();
      }
      for (std::size_t r = 0; r < calls; ++r) {
        pacer.wait_for_slot();
        latencies[p].push_back(probe.timed_call_us());
      }
      probe.end_block();
      client_cpu_ns[p] += process_cpu_ns(::getpid()) - client_before;
      server_cpu_ns[p] += server_cpu(probe) - server_before;
      charged_calls[p] += kSettlingCalls + calls;
    }
  }
  std::vector<Row> rows;
  for (std::size_t p = 0; p < probes.size(); ++p) {
    probes[p]->begin_block();  // left running, so that it stops when asked
    Row row = summarize(probes[p]->row(), model.name, std::move(latencies[p]));
    rows.push_back(charge_cpu(std::move(row), client_cpu_ns[p], server_cpu_ns[p], charged_calls[p]));
    rows.back().rate_per_client = model.rate_per_client;
  }
  return rows;
}

Row measure_idle(const std::string& row_name, LatencyProbe& probe, const ModelCase& model) {
  ServerChild* child = probe.server();
  if (child == nullptr) throw std::runtime_error(row_name + ": the row has no server");
  probe.begin_block();
  // Busy first, as a served sidecar is when its clients stop.
  for (std::size_t r = 0; r < 1000; ++r) probe.timed_call_us();
  return idle_row(row_name, model.name, child->pid(), 1.0);
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

}  // namespace sidecar::bench
