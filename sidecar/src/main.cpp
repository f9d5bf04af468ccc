// inference-sidecar: parses the command line, then runs the Server. The logic lives in the
// sidecar_core library, which the tests and benchmarks link too.
#include <signal.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <systemd/sd-daemon.h>

#include <cstdio>
#include <exception>

#include "model_runner.hpp"
#include "options.hpp"
#include "server.hpp"

int main(int argc, char** argv) {
  using namespace sidecar;
  ParsedOptions parsed = parse_command_line(argc, argv);
  if (!parsed.options) return parsed.exit_code;
  SidecarOptions& options = *parsed.options;

  spdlog::set_default_logger(spdlog::stderr_color_mt("sidecar"));
  spdlog::set_level(spdlog::level::from_str(options.log_level));
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ [%n:" + options.name + "] %v");

  // Signals are taken synchronously by main (sigwait), so every thread started below must have
  // them blocked: block them before the first thread exists, LibTorch's pools included.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  try {
    configure_torch_threads(options.intra_op_threads, options.inter_op_threads);
    const int cpus = usable_cpu_count();
    if (options.workers * options.intra_op_threads > cpus) {
      spdlog::warn("{} workers x {} intra-op threads exceeds the {} CPUs this process may use", options.workers,
                   options.intra_op_threads, cpus);
    }
    auto runner = ModelRunner::load(options.model_path, {options.freeze, options.optimize_for_inference});
    spdlog::info("loaded {} ({}), forward takes {} tensor(s)", options.model_path, runner->preparation(),
                 runner->input_count());
    if (options.warmup_signatures.empty()) {
      spdlog::warn("no --warmup-shape given: any shape is accepted and the first calls will be cold");
    }
    sd_notify(0, "STATUS=warming up");
    Server server(options, std::move(runner));
    server.create_segment();
    server.start();
    server.mark_ready();
    spdlog::info("ready: {} workers, spin {} us, segment {}", options.workers, options.spin_us, server.segment_name());
    sd_notify(0, "READY=1\nSTATUS=serving");

    int signal_number = 0;
    sigwait(&stop_signals, &signal_number);
    spdlog::info("received {}, draining", signal_number == SIGTERM ? "SIGTERM" : "SIGINT");
    sd_notify(0, "STOPPING=1");
    server.stop();
    spdlog::info("stopped");
    return 0;
  } catch (const std::exception& error) {
    spdlog::error("{}", error.what());
    return 1;
  }
}
