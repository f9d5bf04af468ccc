// inference-sidecar: parses the command line, takes the instance lock, loads the model, then runs
// the Server. The logic lives in the sidecar_core library, which the tests and benchmarks link too.
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <stdexcept>
#include <iostream>
#include <mutex>
#include <string_view>
#include <thread>

#include "echo_runner.hpp"
#include "log_format.hpp"
#include "matrix_library.hpp"
#include "model_runner.hpp"
#include "options.hpp"
#include "runtime_files.hpp"
#include "server.hpp"

namespace {

// Each client holds four fds here (socket, channel, two eventfds): take the hard limit.
void raise_open_file_limit() {
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &limit);
  }
}

}  // namespace

int main(int argc, char** argv) {
  using namespace sidecar;
  const bool journal = stderr_is_journal();
  ParsedOptions parsed = parse_command_line(argc, argv);
  if (!parsed.options) {
    std::cout << parsed.output << std::flush;
    if (!parsed.error.empty()) print_startup_error(parsed.error, journal);
    return parsed.exit_code;
  }
  SidecarOptions& options = *parsed.options;
  configure_logging(options.name, options.log_level, journal);

  // Signals are taken synchronously by one thread (sigwait), so every other thread must have them
  // blocked: block them before the first thread exists, LibTorch's pools included. A client that
  // goes away must never kill the daemon through SIGPIPE (sends use MSG_NOSIGNAL too).
  ::signal(SIGPIPE, SIG_IGN);
  sigset_t handled;
  sigemptyset(&handled);
  sigaddset(&handled, SIGTERM);
  sigaddset(&handled, SIGINT);
  sigaddset(&handled, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &handled, nullptr);
  raise_open_file_limit();

  // A signal thread from the start: a stop during a long warm-up must not wait for it to finish
  // (systemd would SIGKILL us after TimeoutStopSec). Static: the detached thread may outlive
  // main's frame on the error path.
  static std::mutex stop_mutex;
  static std::condition_variable stop_requested;
  static int stop_signal = 0;
  static bool serving = false;
  static std::string socket_to_remove;  // guarded by stop_mutex
  static Server* reloadable = nullptr;   // guarded by stop_mutex: set once serving
  std::thread signal_thread([handled] {
    while (true) {
      int signal_number = 0;
      sigwait(&handled, &signal_number);
      std::unique_lock lock(stop_mutex);
      if (signal_number == SIGHUP) {
        if (reloadable == nullptr || stop_signal != 0) {
          spdlog::warn("SIGHUP before the sidecar serves (or while it stops): nothing to reload");
          continue;
        }
        spdlog::info("SIGHUP: reloading the model file");
        // The outcome is logged by the reload itself.
        reloadable->request_reload("", [](const Result<std::string>&) {});
        continue;
      }
      stop_signal = signal_number;
      if (!serving) {
        // Nothing is in flight before ready: abandon the start. Memory goes with the process; the
        // socket file is ours to remove while we hold the lock.
        spdlog::info("received {} before ready; abandoning start-up", signal_number == SIGTERM ? "SIGTERM" : "SIGINT");
        if (!socket_to_remove.empty()) ::unlink(socket_to_remove.c_str());
        std::_Exit(0);
      }
      stop_requested.notify_all();
      return;
    }
  });
  signal_thread.detach();

  try {
    Result<std::string> runtime_dir = prepare_runtime_dir(options.runtime_dir);
    if (!runtime_dir.ok()) {
      spdlog::error("{}", runtime_dir.message());
      return 1;
    }
    // Before the model loads: a second sidecar of this name is refused at once.
    Result<InstanceLock> lock = InstanceLock::acquire(*runtime_dir, options.name);
    if (!lock.ok()) {
      spdlog::error("{}", lock.message());
      return 1;
    }
    configure_torch_threads(options.intra_op_threads, options.inter_op_threads);
    retain_freed_memory();
    const int cpus = usable_cpu_count();
    if (options.workers * options.intra_op_threads > cpus) {
      spdlog::warn("{} workers x {} intra-op threads exceeds the {} CPUs this process may use", options.workers,
                   options.intra_op_threads, cpus);
    }
    std::unique_ptr<ModelRunner> runner;
    if (options.echo) {
      runner = make_echo_runner(echo_input_count(options.warmup_signatures));
      spdlog::info("{}", runner->preparation());
    } else {
      runner = ModelRunner::load(options.model_path, {options.freeze, options.optimize_for_inference});
      spdlog::info("loaded {} ({}), forward takes {} tensor(s)", options.model_path, runner->preparation(),
                   runner->input_count());
      log_matrix_library();
    }
    if (options.warmup_signatures.empty() && options.accepted_signatures.empty()) {
      spdlog::warn("no --warmup-shape given: any shape is accepted and the first calls will be cold");
    } else if (options.warmup_signatures.empty()) {
      spdlog::info("no --warmup-shape given: only the largest shape of each --accept-shape range is warmed up");
    }
    sd_notify(0, "STATUS=warming up");
    Server server(options, std::move(runner), *runtime_dir, std::move(*lock));
    const ModelRunner::LoadOptions load_options{options.freeze, options.optimize_for_inference};
    server.set_model_loader([load_options, echo = options.echo](const std::string& path) {
      if (echo) throw std::runtime_error("an --echo sidecar has no model to reload");
      return ModelRunner::load(path, load_options);
    });
    // A reload that names no file reads the settings again, so that `model` changed in the config
    // file takes effect (a --model flag still wins, as at start). Only the model changes: the other
    // settings keep their values until a restart.
    server.set_model_path_source([argc, argv]() -> std::string {
      ParsedOptions again = parse_command_line(argc, argv);
      if (!again.options) {
        spdlog::error("reload: the settings no longer parse ({}); reloading the file served now", again.error);
        return {};
      }
      return again.options->model_path;
    });
    // systemd shows "reloading" meanwhile, and ExecReload= (sidecarctl reload) waits for the outcome.
    server.set_reload_observer([](const char* state) {
      if (std::string_view(state) == "reloading") {
        sd_notify(0, "RELOADING=1\nSTATUS=reloading the model");
      } else {
        sd_notify(0, "READY=1\nSTATUS=serving");
      }
    });
    {
      std::lock_guard guard(stop_mutex);
      if (Done opened = server.open(); !opened.ok()) {
        spdlog::error("{}", opened.message());
        return 1;
      }
      socket_to_remove = server.socket_path();
    }
    if (Done started = server.start(); !started.ok()) {
      spdlog::error("{}", started.message());
      return 1;
    }
    {
      std::lock_guard guard(stop_mutex);
      server.mark_ready();
      serving = true;
      reloadable = &server;
    }
    spdlog::info("ready: {} workers, spin {} us, socket {}, start generation {}", options.workers, options.spin_us,
                 server.socket_path(), server.start_generation());
    sd_notify(0, "READY=1\nSTATUS=serving");

    // The watchdog hears from us only while the scheduling loop moves: an idle leader looks at the
    // rings at least every 100 ms, and busy workers answer requests. Checked four times per
    // interval; pinged (as sd_watchdog_enabled asks, at least twice per interval) while the loop
    // moved within the last half interval. A sidecar whose every worker is stuck in one forward
    // longer than that is restarted like a wedged one: WatchdogSec= must exceed the longest forward.
    std::uint64_t watchdog_usec = 0;
    const bool watchdog = sd_watchdog_enabled(0, &watchdog_usec) > 0 && watchdog_usec > 0;
    const auto check_every = watchdog ? std::chrono::microseconds(watchdog_usec / 4) : std::chrono::microseconds(std::chrono::hours(24));
    const auto stale_after = std::chrono::microseconds(watchdog_usec / 2);
    std::uint64_t last_progress = scheduling_progress(server.status_page());
    auto last_moved = std::chrono::steady_clock::now();
    bool warned = false;
    std::unique_lock wait(stop_mutex);
    while (!stop_requested.wait_for(wait, check_every, [&] { return stop_signal != 0; })) {
      const std::uint64_t progress = scheduling_progress(server.status_page());
      const auto now = std::chrono::steady_clock::now();
      if (progress != last_progress) {
        last_progress = progress;
        last_moved = now;
        warned = false;
      }
      if (now - last_moved <= stale_after) {
        sd_notify(0, "WATCHDOG=1");
      } else if (!warned) {
        spdlog::warn("the scheduling loop has made no progress for {} ms; no longer telling the watchdog",
                     std::chrono::duration_cast<std::chrono::milliseconds>(now - last_moved).count());
        warned = true;
      }
    }
    reloadable = nullptr;
    wait.unlock();
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
