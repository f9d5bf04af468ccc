#include "bench_support.hpp"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <stdexcept>

#include "sidecar/shared/runtime_dir.hpp"

extern char** environ;

namespace sidecar::bench {

Placement placement;

Row summarize(std::string name, const std::string& model, std::vector<double> latencies_us) {
  std::sort(latencies_us.begin(), latencies_us.end());
  auto at = [&](double quantile) {
    const auto index = static_cast<std::size_t>(quantile * static_cast<double>(latencies_us.size() - 1));
    return latencies_us[index];
  };
  Row row;
  row.name = std::move(name);
  row.model = model;
  row.p50_us = at(0.50);
  row.p99_us = at(0.99);
  row.p999_us = at(0.999);
  row.requests = latencies_us.size();
  constexpr int kPercentSteps = 100;
  for (int percent = 0; percent <= kPercentSteps; ++percent) {
    row.quantiles_us.push_back(at(static_cast<double>(percent) / kPercentSteps));
  }
  return row;
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

std::string signature_text(const InputSignature& signature) {
  std::string text;
  for (const TensorShape& shape : signature) {
    if (!text.empty()) text += ",";
    for (int i = 0; i < shape.rank; ++i) text += (i ? "x" : "") + std::to_string(shape.dims[i]);
    text += ":" + std::string(dtype_name(static_cast<DType>(shape.dtype)));
  }
  return text;
}

std::size_t discarded(std::size_t requests) { return std::min<std::size_t>(requests / 10, 1000); }

ClientInputs client_inputs(const ModelCase& model) {
  ClientInputs inputs;
  for (const TensorShape& shape : model.signature) inputs.values.push_back(random_input(element_count_of(shape)));
  for (std::size_t i = 0; i < inputs.values.size(); ++i) {
    const TensorShape& shape = model.signature[i];
    inputs.views.push_back(TensorView::of(inputs.values[i], std::span<const std::int64_t>(shape.dims, shape.rank)));
  }
  return inputs;
}

Placement plan_placement(bool pin) {
  Placement planned;
  cpu_set_t allowed;
  CPU_ZERO(&allowed);
  if (!pin || ::sched_getaffinity(0, sizeof(allowed), &allowed) != 0 || CPU_COUNT(&allowed) < 2) return planned;
  int last = -1;
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
    if (CPU_ISSET(cpu, &allowed)) last = cpu;
  }
  CPU_ZERO(&planned.client);
  CPU_SET(last, &planned.client);
  planned.server = allowed;
  CPU_CLR(last, &planned.server);
  planned.pinned = true;
  return planned;
}

ServerChild::ServerChild(const std::string& binary, const std::vector<std::string>& args) {
  static int counter = 0;
  log_path_ = "/tmp/sidecar-bench-" + std::to_string(::getpid()) + "-" + std::to_string(counter++) + ".log";
  // A spawned child inherits our CPU mask: lend it the servers' for the spawn.
  if (placement.pinned) ::sched_setaffinity(0, sizeof(cpu_set_t), &placement.server);
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

ServerChild::~ServerChild() {
  if (!exited_) {
    ::kill(pid_, SIGCONT);  // a paused server takes SIGTERM only once it runs again
    ::kill(pid_, SIGTERM);
    ::waitpid(pid_, nullptr, 0);
  }
  ::unlink(log_path_.c_str());
}

bool ServerChild::running() {
  if (!exited_ && ::waitpid(pid_, nullptr, WNOHANG) == pid_) exited_ = true;
  return !exited_;
}

void ServerChild::pause() {
  if (exited_ || paused_) return;  // a stop already reported is not reported again
  paused_ = true;
  ::kill(pid_, SIGSTOP);
  // Until every thread has stopped: the CPU time the kernel reports for another process's running
  // thread lags by up to a scheduler tick, and is exact only once the thread is off the CPU.
  int status = 0;
  if (::waitpid(pid_, &status, WUNTRACED) == pid_ && !WIFSTOPPED(status)) exited_ = true;
}

void ServerChild::resume() {
  if (!exited_) ::kill(pid_, SIGCONT);
  paused_ = false;
}

std::string ServerChild::log() const {
  std::ifstream file(log_path_);
  return std::string(std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>());
}

Client connect_to(const ServerChild& child, const std::string& name, const ConnectOptions& options) {
  auto client = Client::connect(name, options);
  if (!client.ok()) throw std::runtime_error("connect: " + client.message() + "\n" + child.log());
  return std::move(*client);
}

namespace {
struct BenchRuntimeDir {
  std::string path;
  BenchRuntimeDir() {
    char pattern[] = "/tmp/sidecar-bench-run-XXXXXX";
    if (::mkdtemp(pattern) == nullptr || ::chmod(pattern, 0700) != 0) {
      throw std::runtime_error("cannot make a runtime directory for the bench");
    }
    path = pattern;
    // Clients and the sidecars the bench starts find each other here.
    ::setenv(kRuntimeDirEnvironment, path.c_str(), 1);
  }
  ~BenchRuntimeDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path, ignored);
  }
};
}  // namespace

const std::string& bench_runtime_dir() {
  static BenchRuntimeDir directory;
  return directory.path;
}

}  // namespace sidecar::bench
