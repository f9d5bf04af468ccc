// What every sidecar-bench row needs: the row itself, the model measured, inputs, where the
// processes run (pinning), and starting the server processes measured against.
#pragma once

#include <sched.h>
#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "sidecar/client.hpp"
#include "sidecar/shared/signature.hpp"

namespace sidecar::bench {

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
  // The latency at 0, 1, ..., 100 percent: enough of the distribution for bench/plot.py's CDFs.
  std::vector<double> quantiles_us;
  // On-CPU time per measured request, all threads of each process (cpu_time.hpp); set when
  // cpu_measured. A row without a server process has server_cpu_us 0.
  bool cpu_measured = false;
  double client_cpu_us = 0;
  double server_cpu_us = 0;
  double cpu_us_per_request = 0;
  double rate_per_client = 0;  // latency rows: the pace of their client (--rate); 0: unpaced
  // Idle rows only (>= 0): the server's CPU time per second while its client sends nothing.
  double idle_server_cpu_us_per_s = -1;
};

struct ModelCase {
  std::string name;
  std::string path;
  InputSignature signature;
  std::size_t requests;
  double rate_per_client = 0;  // requests/s each client is paced to (pacing.hpp); 0: unpaced
};

// A row's percentiles and quantiles_us from its latencies.
Row summarize(std::string name, const std::string& model, std::vector<double> latencies_us);
std::vector<float> random_input(std::uint64_t elements);
std::uint64_t element_count_of(const TensorShape& shape);
// "1x3x224x224:float32,1x8:int64", as --warmup-shape takes it.
std::string signature_text(const InputSignature& signature);
// Requests whose latency is not counted: the first tenth, at most 1000.
std::size_t discarded(std::size_t requests);

// Random inputs for a model's signature, and the client library's views of them (the views point
// into `values`, which the caller may change between calls).
struct ClientInputs {
  std::vector<std::vector<float>> values;
  std::vector<TensorView> views;
};
ClientInputs client_inputs(const ModelCase& model);

// Pinning: the client (this process) on the last CPU it may use, the servers on the others, so the
// two spinning threads never share a core and the scheduler's migrations stay out of the figures.
struct Placement {
  bool pinned = false;
  cpu_set_t client{};
  cpu_set_t server{};
};
Placement plan_placement(bool pin);
extern Placement placement;

// A server process (the sidecar, or a peer), on the server CPUs, its output in a log file;
// SIGTERM and reaped when the object goes.
class ServerChild {
 public:
  ServerChild(const std::string& binary, const std::vector<std::string>& args);
  ~ServerChild();
  ServerChild(const ServerChild&) = delete;
  ServerChild& operator=(const ServerChild&) = delete;
  std::string log() const;
  pid_t pid() const noexcept { return pid_; }
  // False once it has exited (it is reaped then).
  bool running();
  // SIGSTOP and SIGCONT: a server stopped while other rows are measured takes no CPU from them,
  // spinning or not.
  void pause();
  void resume();

 private:
  pid_t pid_ = -1;
  bool paused_ = false;
  bool exited_ = false;
  std::string log_path_;
};

// A client of the sidecar `child` runs as `name`; throws with the child's log when none connects.
Client connect_to(const ServerChild& child, const std::string& name, const ConnectOptions& options);

// The directory the bench's sidecars and peers put their sockets in (made once, removed at exit):
// no /run/inference-sidecar needed, nothing shared with a sidecar of the host.
const std::string& bench_runtime_dir();

}  // namespace sidecar::bench
