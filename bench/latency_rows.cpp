#include "latency_rows.hpp"

#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <iostream>
#include <stdexcept>
#include <thread>

#include "cpu_time.hpp"
#include "model_runner.hpp"
#include "pacing.hpp"
#include "sidecar/shared/cache_reader.hpp"
#include "sidecar/shared/memfd.hpp"
#include "sidecar/shared/unix_socket.hpp"

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

// A row's loop of requests, one at a time: the CPU meter starts at the first measured request,
// and with --rate every request waits for its slot before it starts.
class RequestLoop {
 public:
  RequestLoop(const ModelCase& model, pid_t server)
      : pacer_(model.rate_per_client), cpu_(server), first_measured_(discarded(model.requests)) {}
  // Returns when request `index` starts.
  Clock::time_point begin_request(std::size_t index) {
    if (index == first_measured_) cpu_.start();
    pacer_.wait_for_slot();
    return Clock::now();
  }
  Row charge(Row row) const { return cpu_.charge(std::move(row)); }

 private:
  Pacer pacer_;
  CpuMeter cpu_;
  std::size_t first_measured_;
};

std::string sidecar_name(const std::string& row_name, const ModelCase& model) {
  return "bench-" + std::to_string(::getpid()) + "-" + row_name + "-" + model.name;
}

// A sidecar row's sidecar: one worker, `spin` its spin budget.
std::vector<std::string> sidecar_row_args(const std::string& name, const ModelCase& model,
                                          std::chrono::microseconds spin, const std::vector<std::string>& extra_args) {
  const std::string spin_us = std::to_string(spin.count());
  std::vector<std::string> args{"--model",   model.path, "--name",          name, "--warmup-shape",
                                signature_text(model.signature), "--workers", "1", "--spin-us",      spin_us,
                                "--max-clients", "2", "--warmup-iterations", "20"};
  args.insert(args.end(), extra_args.begin(), extra_args.end());
  return args;
}

Client connect_to_sidecar(const std::string& name, std::chrono::microseconds spin, const ServerChild& child) {
  ConnectOptions options;
  options.timeout = std::chrono::minutes(5);
  options.spin = spin;
  auto client = Client::connect(name, options);
  if (!client.ok()) throw std::runtime_error("connect: " + client.message() + "\n" + child.log());
  return std::move(*client);
}

}  // namespace

Row measure_in_process(const ModelCase& model) {
  // On the CPUs the sidecar's forward runs on: this VM's vCPUs do not always run at the same speed,
  // and the rows should differ by transport alone.
  if (placement.pinned) ::sched_setaffinity(0, sizeof(cpu_set_t), &placement.server);
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
  RequestLoop loop(model, -1);
  std::vector<double> latencies;
  const std::size_t skip = discarded(model.requests);
  for (std::size_t r = 0; r < model.requests + skip; ++r) {
    const auto start = loop.begin_request(r);
    const CallOutcome outcome = runner->run(views, sink);
    const auto end = Clock::now();
    if (outcome.status != Status::kOk) throw std::runtime_error("in-process forward failed: " + outcome.message);
    if (r >= skip) latencies.push_back(std::chrono::duration<double, std::micro>(end - start).count());
  }
  return loop.charge(summarize("in_process", model.name, std::move(latencies)));
}

// Round trips through a real sidecar: inputs written in place into shared memory, outputs read in
// place (the library's zero-copy path).
Row measure_sidecar(const std::string& row_name, const ModelCase& model, const std::string& binary,
                    std::chrono::microseconds spin, const std::vector<std::string>& extra_args) {
  const std::string name = sidecar_name(row_name, model);
  ServerChild child(binary, sidecar_row_args(name, model, spin, extra_args));
  Client client = connect_to_sidecar(name, spin, child);
  RequestLoop loop(model, child.pid());

  std::vector<std::vector<float>> inputs;
  for (const TensorShape& shape : model.signature) inputs.push_back(random_input(element_count_of(shape)));
  std::vector<double> latencies;
  const std::size_t skip = discarded(model.requests);
  float checksum = 0;
  for (std::size_t r = 0; r < model.requests + skip; ++r) {
    const auto start = loop.begin_request(r);
    for (std::size_t i = 0; i < inputs.size(); ++i) {
      const TensorShape& shape = model.signature[i];
      auto buffer =
          client.input_buffer(static_cast<DType>(shape.dtype), std::span<const std::int64_t>(shape.dims, shape.rank));
      if (!buffer.ok()) throw std::runtime_error(buffer.message());
      std::memcpy(buffer->data(), inputs[i].data(), buffer->size());
    }
    auto outputs = client.run(std::chrono::seconds(60), CachePolicy::kBypass);
    if (!outputs.ok()) throw std::runtime_error(row_name + ": " + outputs.message());
    checksum += (*outputs)[0].values<float>()[0];
    const auto end = Clock::now();
    if (r >= skip) latencies.push_back(std::chrono::duration<double, std::micro>(end - start).count());
  }
  if (checksum != checksum) std::cerr << "(NaN outputs)\n";
  return loop.charge(summarize(row_name, model.name, std::move(latencies)));
}

Row measure_sidecar_idle(const ModelCase& model, const std::string& binary, std::chrono::microseconds spin,
                         const std::vector<std::string>& extra_args) {
  const std::string name = sidecar_name("sidecar_idle", model);
  ServerChild child(binary, sidecar_row_args(name, model, spin, extra_args));
  Client client = connect_to_sidecar(name, spin, child);
  // A client that was busy and stopped: whatever the sidecar learned from its requests, it must
  // not keep spinning for them.
  ClientInputs inputs = client_inputs(model);
  for (int r = 0; r < 1000; ++r) {
    auto outputs = client.infer(inputs.views, std::chrono::seconds(60), CachePolicy::kBypass);
    if (!outputs.ok()) throw std::runtime_error("sidecar_idle: " + outputs.message());
  }
  return idle_row("sidecar_idle", model.name, child.pid(), 1.0);
}

// Round trips through sidecar-socket-server over a Unix stream socket: the inputs sent as one
// length-prefixed block with one writev, the outputs read back the same way.
Row measure_unix_socket(const ModelCase& model, const std::string& server_binary) {
  const std::string path = bench_runtime_dir() + "/socket-" + model.name + ".sock";
  ServerChild child(server_binary, {"--socket", path, "--model", model.path, "--shape", signature_text(model.signature)});
  const Result<sockaddr_un> address = unix_address(path);
  if (!address.ok()) throw std::runtime_error(address.message());
  UniqueFd socket;
  const auto give_up = Clock::now() + std::chrono::minutes(5);
  while (true) {
    socket.reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (::connect(socket.get(), reinterpret_cast<const sockaddr*>(&*address), sizeof(sockaddr_un)) == 0) break;
    if (Clock::now() > give_up) throw std::runtime_error("unix_socket: the server never listened\n" + child.log());
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ClientInputs inputs = client_inputs(model);
  RequestLoop loop(model, child.pid());
  std::uint64_t request_bytes = 0;
  for (const auto& values : inputs.values) request_bytes += values.size() * sizeof(float);
  std::vector<iovec> parts;
  std::uint64_t length = request_bytes;
  parts.push_back({&length, sizeof length});
  for (auto& values : inputs.values) parts.push_back({values.data(), values.size() * sizeof(float)});
  std::vector<std::uint8_t> reply(1 << 20);
  std::vector<double> latencies;
  const std::size_t skip = discarded(model.requests);
  float checksum = 0;
  for (std::size_t r = 0; r < model.requests + skip; ++r) {
    const auto start = loop.begin_request(r);
    // The whole request in one call when the kernel takes it, as a careful user would write it.
    std::size_t sent = 0;
    const std::size_t total = sizeof length + request_bytes;
    while (sent < total) {
      std::vector<iovec> left;
      std::size_t skipped = sent;
      for (const iovec& part : parts) {
        if (skipped >= part.iov_len) {
          skipped -= part.iov_len;
          continue;
        }
        left.push_back({static_cast<std::uint8_t*>(part.iov_base) + skipped, part.iov_len - skipped});
        skipped = 0;
      }
      const ssize_t wrote = ::writev(socket.get(), left.data(), static_cast<int>(left.size()));
      if (wrote <= 0) throw std::runtime_error("unix_socket: write failed\n" + child.log());
      sent += static_cast<std::size_t>(wrote);
    }
    std::size_t have = 0;
    std::uint64_t answer = ~0ull;
    while (have < sizeof answer || have < sizeof answer + answer) {
      if (have == reply.size()) reply.resize(reply.size() * 2);
      const ssize_t got = ::read(socket.get(), reply.data() + have, reply.size() - have);
      if (got <= 0) throw std::runtime_error("unix_socket: read failed\n" + child.log());
      have += static_cast<std::size_t>(got);
      if (have >= sizeof answer) std::memcpy(&answer, reply.data(), sizeof answer);
    }
    const auto end = Clock::now();
    if (answer < sizeof(float)) throw std::runtime_error("unix_socket: the model failed\n" + child.log());
    float first = 0;
    std::memcpy(&first, reply.data() + sizeof answer, sizeof first);
    checksum += first;
    if (r >= skip) latencies.push_back(std::chrono::duration<double, std::micro>(end - start).count());
  }
  if (checksum != checksum) std::cerr << "(NaN outputs)\n";
  return loop.charge(summarize("unix_socket", model.name, std::move(latencies)));
}


Row measure_cache(CacheRow kind, const ModelCase& model, const std::string& binary) {
  const char* row_name = kind == CacheRow::kMiss          ? "cache_miss"
                         : kind == CacheRow::kHitInClient ? "cache_hit_client"
                                                          : "cache_hit_sidecar";
  const std::string name = "bench-" + std::to_string(::getpid()) + "-" + row_name + "-" + model.name;
  ServerChild child(
      binary, {"--model", model.path, "--name", name, "--warmup-shape", signature_text(model.signature), "--workers",
               "1", "--spin-us", "1000000", "--max-clients", "2", "--warmup-iterations", "20", "--cache-bytes", "256M"});
  ConnectOptions options;
  options.timeout = std::chrono::minutes(5);
  options.spin = std::chrono::seconds(1);
  options.cache_lookup = kind == CacheRow::kHitInSidecar ? CacheLookup::kInSidecar : CacheLookup::kInClient;
  auto client = Client::connect(name, options);
  if (!client.ok()) throw std::runtime_error("connect: " + client.message() + "\n" + child.log());

  ClientInputs inputs = client_inputs(model);
  RequestLoop loop(model, child.pid());
  const CacheOutcome expected = kind == CacheRow::kMiss          ? CacheOutcome::kMiss
                                : kind == CacheRow::kHitInClient ? CacheOutcome::kHitInClient
                                                                 : CacheOutcome::kHitInSidecar;
  std::vector<double> latencies;
  const std::size_t skip = discarded(model.requests);
  float checksum = 0;
  for (std::size_t r = 0; r < model.requests + skip; ++r) {
    // A miss needs an input never seen before: change one element, outside the timed part.
    if (kind == CacheRow::kMiss) inputs.values[0][r % inputs.values[0].size()] += 1.0f;
    const auto start = loop.begin_request(r);
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
  return loop.charge(summarize(row_name, model.name, std::move(latencies)));
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
