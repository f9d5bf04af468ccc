// inference-sidecar: parses the command line, then runs the Server. The logic lives in the
// sidecar_core library, which the tests and benchmarks link too.
#include <signal.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <systemd/sd-daemon.h>

#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <thread>

#include "matrix_library.hpp"
#include "model_runner.hpp"
#include "options.hpp"
#include "server.hpp"
#include "sidecar/shared/segment.hpp"

namespace {
std::atomic<bool> segment_created{false};
}  // namespace

int main(int argc, char** argv) {
  using namespace sidecar;
  ParsedOptions parsed = parse_command_line(argc, argv);
  if (!parsed.options) return parsed.exit_code;
  SidecarOptions& options = *parsed.options;

  spdlog::set_default_logger(spdlog::stderr_color_mt("sidecar"));
  spdlog::set_level(spdlog::level::from_str(options.log_level));
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ [%n:" + options.name + "] %v");

  // Signals are taken synchronously by one thread (sigwait), so every other thread must have them
  // blocked: block them before the first thread exists, LibTorch's pools included.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  // A signal thread from the start: a stop during a long warm-up must not wait for it to finish
  // (systemd would SIGKILL us after TimeoutStopSec and leave the segment behind).
  // Static: the detached signal thread may outlive main's frame on the error path.
  static std::mutex stop_mutex;
  static std::condition_variable stop_requested;
  static int stop_signal = 0;
  static bool serving = false;
  static const std::string shm_name = segment_name(options.name);
  std::thread signal_thread([stop_signals] {
    int signal_number = 0;
    sigwait(&stop_signals, &signal_number);
    std::unique_lock lock(stop_mutex);
    stop_signal = signal_number;
    if (!serving) {
      // Nothing is in flight before ready: abandon the warm-up. The segment, if made, goes with us.
      spdlog::info("received {} before ready; abandoning start-up", signal_number == SIGTERM ? "SIGTERM" : "SIGINT");
      if (segment_created.load()) SegmentMapping::remove(shm_name);
      std::_Exit(0);
    }
    stop_requested.notify_all();
  });
  signal_thread.detach();

  try {
    configure_torch_threads(options.intra_op_threads, options.inter_op_threads);
    retain_freed_memory();
    const int cpus = usable_cpu_count();
    if (options.workers * options.intra_op_threads > cpus) {
      spdlog::warn("{} workers x {} intra-op threads exceeds the {} CPUs this process may use", options.workers,
                   options.intra_op_threads, cpus);
    }
    auto runner = ModelRunner::load(options.model_path, {options.freeze, options.optimize_for_inference});
    spdlog::info("loaded {} ({}), forward takes {} tensor(s)", options.model_path, runner->preparation(),
                 runner->input_count());
    log_matrix_library();
    if (options.warmup_signatures.empty()) {
      spdlog::warn("no --warmup-shape given: any shape is accepted and the first calls will be cold");
    }
    sd_notify(0, "STATUS=warming up");
    Server server(options, std::move(runner));
    {
      std::lock_guard lock(stop_mutex);
      server.create_segment();
      segment_created.store(true);
    }
    server.start();
    {
      std::unique_lock lock(stop_mutex);
      server.mark_ready();
      serving = true;
    }
    spdlog::info("ready: {} workers, spin {} us, segment {}", options.workers, options.spin_us, server.segment_name());
    sd_notify(0, "READY=1\nSTATUS=serving");

    std::unique_lock lock(stop_mutex);
    stop_requested.wait(lock, [&] { return stop_signal != 0; });
    lock.unlock();
    spdlog::info("received {}, draining", stop_signal == SIGTERM ? "SIGTERM" : "SIGINT");
    sd_notify(0, "STOPPING=1");
    server.stop();
    spdlog::info("stopped");
    return 0;
  } catch (const std::exception& error) {
    spdlog::error("{}", error.what());
    return 1;
  }
}
