// sidecarctl's commands for operators: stats (the metrics, for a person, as JSON, or for
// Prometheus), reload (swap the model without dropping a client), health (one answer for probes).
#pragma once

#include <CLI/CLI.hpp>
#include <string>

namespace sidecarctl {

struct StatsArgs {
  std::string name;
  bool json = false;
  bool prometheus = false;
  int timeout_ms = 5000;
};

struct ReloadArgs {
  std::string name;
  std::string model;  // empty: the file the sidecar serves, again
  int timeout_ms = 600000;
};

struct HealthArgs {
  std::string name;
  int timeout_ms = 2000;
};

struct OperateCommands {
  CLI::App* stats = nullptr;
  CLI::App* reload = nullptr;
  CLI::App* health = nullptr;
  StatsArgs stats_args;
  ReloadArgs reload_args;
  HealthArgs health_args;
};

// Adds the three subcommands to `app`; their options are bound to `commands`' args.
void add_operate_commands(CLI::App& app, OperateCommands& commands);
// Runs the one that was parsed; -1 when none was.
int run_operate_command(const OperateCommands& commands);
// The --name of the one that was parsed (empty when none was).
std::string parsed_operate_name(const OperateCommands& commands);

}  // namespace sidecarctl
