#include "throughput_rows.hpp"

#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <functional>
#include <memory>
#include <cstdio>
#include <stdexcept>
#include <thread>

namespace sidecar::bench {

using Clock = std::chrono::steady_clock;

constexpr double kWarmupSeconds = 1.0;

namespace {

// What each closed-loop client process measured, put together.
struct ClosedLoopResult {
  std::vector<double> latencies_us;
  std::uint64_t batch_size_sum = 0;
  std::uint64_t batch_sizes_counted = 0;
};

// One client process's calls: connects in the child (no connection is shared across a fork), then
// makes one call per `call(r, batch_size)`, false when it failed.
class ClosedLoopClient {
 public:
  virtual ~ClosedLoopClient() = default;
  virtual bool call(std::uint64_t r, std::uint32_t& batch_size) = 0;
};
using ClosedLoopFactory = std::function<std::unique_ptr<ClosedLoopClient>(std::uint32_t index)>;

ClosedLoopResult run_closed_loop(std::uint32_t clients, double seconds, const ClosedLoopFactory& connect);

class SidecarLoopClient final : public ClosedLoopClient {
 public:
  SidecarLoopClient(Client client, const ModelCase& model, std::uint32_t index)
      : client_(std::move(client)), inputs_(client_inputs(model)), index_(index) {}
  bool call(std::uint64_t r, std::uint32_t& batch_size) override {
    inputs_.values[0][(r * 7919 + index_) % inputs_.values[0].size()] += 1.0f;  // a new input every call
    auto outputs = client_.infer(inputs_.views, std::chrono::seconds(60), CachePolicy::kBypass);
    batch_size = client_.last_service().batch_size;
    return outputs.ok();
  }

 private:
  Client client_;
  ClientInputs inputs_;
  std::uint32_t index_;
};

class PeerLoopClient final : public ClosedLoopClient {
 public:
  PeerLoopClient(Peer peer, const std::string& target, const ModelCase& model, std::uint32_t index)
      : connection_(connect_peer(peer, target)), inputs_(client_inputs(model)), index_(index) {}
  bool call(std::uint64_t r, std::uint32_t& batch_size) override {
    inputs_.values[0][(r * 7919 + index_) % inputs_.values[0].size()] += 1.0f;
    batch_size = 0;
    try {
      connection_->call(inputs_);
      return true;
    } catch (const std::runtime_error&) {
      return false;
    }
  }

 private:
  std::unique_ptr<PeerConnection> connection_;
  ClientInputs inputs_;
  std::uint32_t index_;
};

Row closed_loop_row(std::string row_name, const ModelCase& model, std::uint32_t clients, double seconds,
                    ClosedLoopResult result) {
  const double answered = static_cast<double>(result.latencies_us.size());
  Row row = summarize(std::move(row_name), model.name, std::move(result.latencies_us));
  row.clients = clients;
  row.throughput_rps = answered / seconds;
  row.mean_batch_size =
      result.batch_sizes_counted ? static_cast<double>(result.batch_size_sum) / result.batch_sizes_counted : 0;
  return row;
}

}  // namespace

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
                                "--max-clients",
                                std::to_string(clients + 2),
                                "--warmup-iterations",
                                "3",
                                "--cache-bytes",
                                "0"};
  const auto& extra = batching ? settings.on_args : settings.off_args;
  args.insert(args.end(), extra.begin(), extra.end());
  ServerChild child(binary, args);
  {
    ConnectOptions options;
    options.timeout = std::chrono::minutes(10);  // warm-up of every batch size
    connect_to(child, name, options);
  }
  ClosedLoopResult result = run_closed_loop(clients, settings.seconds, [&](std::uint32_t index) {
    std::unique_ptr<ClosedLoopClient> client;
    auto connected = Client::connect(name);
    if (connected.ok()) client = std::make_unique<SidecarLoopClient>(std::move(*connected), model, index);
    return client;
  });
  if (result.latencies_us.empty()) {
    throw std::runtime_error(std::string(row_name) + ": no request answered\n" + child.log());
  }
  return closed_loop_row(row_name, model, clients, settings.seconds, std::move(result));
}

Row measure_peer_throughput(const ModelCase& model, Peer peer, const PeerBinaries& binaries, std::uint32_t clients,
                            double seconds) {
  PeerServer server(peer, model, false, binaries);
  const std::string row_name = peer_row_name(peer, false);
  ClosedLoopResult result = run_closed_loop(clients, seconds, [&](std::uint32_t index) {
    std::unique_ptr<ClosedLoopClient> client;
    try {
      client = std::make_unique<PeerLoopClient>(peer, server.target(), model, index);
    } catch (const std::runtime_error&) {
    }
    return client;
  });
  if (result.latencies_us.empty()) {
    throw std::runtime_error(row_name + ": no request answered\n" + server.child().log());
  }
  return closed_loop_row(row_name, model, clients, seconds, std::move(result));
}

namespace {

// `clients` processes in a closed loop; each reports through a pipe how many requests it measured,
// the sum of their batch sizes, then their latencies. Throughput counts the requests answered while
// all of them were running.
ClosedLoopResult run_closed_loop(std::uint32_t clients, double seconds, const ClosedLoopFactory& connect) {
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
      std::unique_ptr<ClosedLoopClient> client = connect(c);
      char byte;
      if (client && ::read(go[0], &byte, 1) == 1) {
        // Unmeasured first: a server's threads warm up on their first calls (gRPC's are made as the
        // load asks), and every row should show a server that has.
        const auto warmed = Clock::now() + std::chrono::duration<double>(kWarmupSeconds);
        for (std::uint64_t r = 0; Clock::now() < warmed; ++r) {
          std::uint32_t batch_size = 0;
          if (!client->call(r, batch_size)) break;
        }
        const auto end = Clock::now() + std::chrono::duration<double>(seconds);
        for (std::uint64_t r = 0; Clock::now() < end; ++r) {
          std::uint32_t batch_size = 0;
          const auto start = Clock::now();
          const bool answered = client->call(r, batch_size);
          const auto stop = Clock::now();
          if (!answered) break;
          if (stop > end) continue;
          latencies.push_back(std::chrono::duration<double, std::micro>(stop - start).count());
          batch_size_sum += batch_size;
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
  ClosedLoopResult result;
  result.latencies_us = std::move(latencies);
  result.batch_size_sum = batch_size_sum;
  result.batch_sizes_counted = batch_sizes_counted;
  return result;
}

}  // namespace

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

}  // namespace sidecar::bench
