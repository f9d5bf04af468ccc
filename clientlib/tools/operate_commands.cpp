#include "operate_commands.hpp"

#include <chrono>
#include <iostream>

#include "exit_codes.hpp"
#include "sidecar/client.hpp"

namespace sidecarctl {
namespace {

sidecar::ConnectOptions options_with_timeout(int timeout_ms) {
  sidecar::ConnectOptions options;
  options.timeout = std::chrono::milliseconds(timeout_ms);
  return options;
}

int run_stats(const StatsArgs& args) {
  const sidecar::MetricsFormat format = args.prometheus ? sidecar::MetricsFormat::kPrometheus
                                        : args.json     ? sidecar::MetricsFormat::kJson
                                                        : sidecar::MetricsFormat::kText;
  auto metrics = sidecar::read_metrics(args.name, format, options_with_timeout(args.timeout_ms));
  if (!metrics.ok()) return fail(metrics.code(), metrics.message());
  std::cout << *metrics << std::flush;
  return kExitOk;
}

int run_reload(const ReloadArgs& args) {
  auto reloaded = sidecar::reload_model(args.name, args.model, options_with_timeout(args.timeout_ms));
  if (!reloaded.ok()) return fail(reloaded.code(), reloaded.message());
  std::cout << *reloaded << std::endl;
  return kExitOk;
}

// A sidecar that took the connection but never answered it (stopped, or its connection thread
// wedged) and one whose rings go unanswered are both "hung": the exit code a probe restarts on.
int run_health(const HealthArgs& args) {
  const sidecar::ConnectOptions options = options_with_timeout(args.timeout_ms);
  auto status = sidecar::read_status(args.name, options);
  if (!status.ok()) {
    if (status.code() == ErrorCode::kNotReady) {
      return fail(kExitHung, "hung: sidecar '" + args.name + "' did not answer within " +
                                 std::to_string(args.timeout_ms) + " ms (" + status.message() + ")");
    }
    return fail(status.code(), status.message());
  }
  if (status->state == "starting" || status->state == "warming up") {
    std::cout << "warming up: sidecar '" << args.name << "' is " << status->state << std::endl;
    return kExitWarmingUp;
  }
  if (!status->ready) return fail(ErrorCode::kShuttingDown, "sidecar '" + args.name + "' is " + status->state);
  const auto started = std::chrono::steady_clock::now();
  auto client = sidecar::Client::connect(args.name, options);
  if (!client.ok()) {
    if (client.code() == ErrorCode::kNotReady || client.code() == ErrorCode::kTimeout) {
      return fail(kExitHung, "hung: sidecar '" + args.name + "' took no client within " +
                                 std::to_string(args.timeout_ms) + " ms (" + client.message() + ")");
    }
    return fail(client.code(), client.message());
  }
  if (sidecar::Done pinged = client->ping(std::chrono::milliseconds(args.timeout_ms)); !pinged.ok()) {
    if (pinged.code() == ErrorCode::kTimeout) {
      return fail(kExitHung, "hung: sidecar '" + args.name + "' did not answer a request within " +
                                 std::to_string(args.timeout_ms) + " ms");
    }
    return fail(pinged.code(), pinged.message());
  }
  const auto micros =
      std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - started).count();
  std::cout << "ready: sidecar '" << args.name << "' answered a round trip (connect and ping) in " << micros << " us"
            << std::endl;
  return kExitOk;
}

void add_name_and_timeout(CLI::App& command, std::string& name, int& timeout_ms, const char* timeout_help) {
  command.add_option("--name", name, "sidecar instance name (inference-sidecar --name)")->required();
  command.add_option("--timeout-ms", timeout_ms, timeout_help)->capture_default_str()->check(CLI::PositiveNumber);
  command.footer(kExitCodeHelp);
}

}  // namespace

void add_operate_commands(CLI::App& app, OperateCommands& commands) {
  commands.stats = app.add_subcommand(
      "stats", "show a sidecar's counters and latency histograms (requests by status, queue wait, inference, end "
               "to end, batch sizes, cache, connections, reloads)");
  add_name_and_timeout(*commands.stats, commands.stats_args.name, commands.stats_args.timeout_ms,
                       "how long to wait to connect");
  auto* json = commands.stats->add_flag("--json", commands.stats_args.json, "as JSON, for programs");
  commands.stats->add_flag("--prometheus", commands.stats_args.prometheus,
                           "in Prometheus's text exposition format (node_exporter's textfile collector reads it too)")
      ->excludes(json);

  commands.reload = app.add_subcommand(
      "reload", "load a model beside the serving one, warm it up, swap it in without dropping a client; waits for "
                "the outcome (the sidecar's user or root only)");
  add_name_and_timeout(*commands.reload, commands.reload_args.name, commands.reload_args.timeout_ms,
                       "how long to wait for the reload to end");
  commands.reload->add_option("--model", commands.reload_args.model,
                              "the TorchScript file to load (default: the file it serves, again)");

  commands.health = app.add_subcommand(
      "health", "one answer for scripts and probes: 0 ready and answering a real round trip, 10 warming up, 11 "
                "hung, 1 not running, 9 permission denied");
  add_name_and_timeout(*commands.health, commands.health_args.name, commands.health_args.timeout_ms,
                       "how long each step may take before the sidecar counts as hung");
}

int run_operate_command(const OperateCommands& commands) {
  if (commands.stats->parsed()) return run_stats(commands.stats_args);
  if (commands.reload->parsed()) return run_reload(commands.reload_args);
  if (commands.health->parsed()) return run_health(commands.health_args);
  return -1;
}

std::string parsed_operate_name(const OperateCommands& commands) {
  if (commands.stats->parsed()) return commands.stats_args.name;
  if (commands.reload->parsed()) return commands.reload_args.name;
  if (commands.health->parsed()) return commands.health_args.name;
  return {};
}

}  // namespace sidecarctl
