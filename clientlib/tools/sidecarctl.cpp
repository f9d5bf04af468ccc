// sidecarctl: run a sidecar's model on .npy files, and show what a sidecar is doing.
//
//   sidecarctl infer --name resnet --input image.npy --output logits.npy
//   sidecarctl status --name resnet
//   sidecarctl cache --name resnet [--flush]
//   sidecarctl stats --name resnet [--json | --prometheus]
//   sidecarctl reload --name resnet [--model new.pt]
//   sidecarctl health --name resnet [--timeout-ms 2000]
//
// infer goes through the client library like any service would. status and cache connect as an
// observer, which gets the sidecar's status page and no channel, so they work while the sidecar is
// still warming up and even when it serves its maximum of clients.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include "exit_codes.hpp"
#include "npy.hpp"
#include "operate_commands.hpp"
#include "sidecar/client.hpp"
#include "sidecar/shared/project_version.hpp"
#include "sidecar/shared/runtime_dir.hpp"
#include "sidecar/shared/version.hpp"

namespace {

using sidecar::ErrorCode;
using namespace sidecarctl;

// Where output `index` goes when one --output names several: OUT for output 0, then OUT_1.npy...
// (the stem of OUT with _INDEX before its extension).
std::string numbered_path(const std::string& path, std::size_t index) {
  if (index == 0) return path;
  const std::size_t name_start = path.rfind('/') == std::string::npos ? 0 : path.rfind('/') + 1;
  std::size_t dot = path.rfind('.');
  if (dot == std::string::npos || dot <= name_start) dot = path.size();
  return path.substr(0, dot) + "_" + std::to_string(index) + path.substr(dot);
}

struct InferArgs {
  std::string name;
  std::vector<std::string> inputs;
  std::vector<std::string> outputs;
  std::int64_t timeout_ms = 10000;
  std::int64_t connect_timeout_ms = 5000;
};

// Empty when `path_count` --output paths can hold `output_count` outputs, else why not.
std::string check_output_paths(std::size_t path_count, std::size_t output_count) {
  if (path_count == 1 || path_count == output_count) return {};
  return "the model returns " + std::to_string(output_count) + " output(s) but " + std::to_string(path_count) +
         " --output paths were given; give one per output, or a single one (OUT, OUT_1.npy, ...)";
}

int run_infer(const InferArgs& args) {
  std::vector<sidecar::Tensor> inputs;
  for (const std::string& path : args.inputs) {
    try {
      inputs.push_back(sidecar::npy::read_npy(path));
    } catch (const std::exception& error) {
      return fail(kExitFile, error.what());
    }
  }

  sidecar::ConnectOptions options;
  options.timeout = std::chrono::milliseconds(args.connect_timeout_ms);
  auto client = sidecar::Client::connect(args.name, options);
  if (!client.ok()) return fail(client.code(), client.message());

  const sidecar::ModelInfo& model = client->model();
  if (model.input_count != 0 && model.input_count != inputs.size()) {
    return fail(ErrorCode::kInvalidArgument, "the model takes " + std::to_string(model.input_count) + " input(s), " +
                                                 std::to_string(inputs.size()) + " --input given");
  }
  // Refuse before running when the description already says the paths cannot hold the outputs.
  if (model.output_count != 0) {
    if (std::string problem = check_output_paths(args.outputs.size(), model.output_count); !problem.empty()) {
      return fail(kExitUsage, "usage: " + problem);
    }
  }

  std::vector<sidecar::TensorView> views;
  for (const sidecar::Tensor& input : inputs) views.push_back(input.view());
  const auto started = std::chrono::steady_clock::now();
  auto outputs = client->infer(views, std::chrono::milliseconds(args.timeout_ms));
  const auto latency =
      std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - started);
  if (!outputs.ok()) return fail(outputs.code(), outputs.message());
  if (std::string problem = check_output_paths(args.outputs.size(), outputs->size()); !problem.empty()) {
    return fail(kExitUsage, "usage: " + problem);
  }

  std::string summary;
  for (std::size_t i = 0; i < outputs->size(); ++i) {
    const sidecar::Tensor& output = (*outputs)[i];
    const std::string path = args.outputs.size() == 1 ? numbered_path(args.outputs[0], i) : args.outputs[i];
    try {
      sidecar::npy::write_npy(path, output.view());
    } catch (const std::exception& error) {
      return fail(kExitFile, error.what());
    }
    summary += (i ? ", " : "") + sidecar::describe(output.dtype, output.shape) + " -> " + path;
  }
  std::cout << "outputs: " << summary << "; latency: " << latency.count() << " us" << std::endl;
  return kExitOk;
}

std::string describe_shapes(const std::vector<std::pair<sidecar::DType, std::vector<std::int64_t>>>& shapes) {
  std::string text = "(";
  for (std::size_t i = 0; i < shapes.size(); ++i)
    text += (i ? ", " : "") + sidecar::describe(shapes[i].first, shapes[i].second);
  return text + ")";
}

// "([1, 1..512] int64) -> ([1, 512, 16] float32) at the largest" for one signature.
std::string describe_signature(const sidecar::ModelInfo::Signature& signature) {
  const bool fixed =
      signature.input_largest.empty() ||
      std::equal(signature.input_largest.begin(), signature.input_largest.end(), signature.inputs.begin(),
                 [](const auto& largest, const auto& input) { return largest == input.second; });
  if (signature.outputs.empty()) return "(" + signature.text + ") -> outputs of any size";
  return "(" + signature.text + ") -> " + describe_shapes(signature.outputs) + (fixed ? "" : " at the largest");
}

std::string describe_duration(std::uint64_t nanoseconds) {
  const std::uint64_t seconds = nanoseconds / 1'000'000'000;
  char text[64];
  if (seconds < 60) {
    std::snprintf(text, sizeof(text), "%.1f s", static_cast<double>(nanoseconds) / 1e9);
  } else {
    std::snprintf(text, sizeof(text), "%lluh %02llum %02llus (%llu s)", static_cast<unsigned long long>(seconds / 3600),
                  static_cast<unsigned long long>(seconds / 60 % 60), static_cast<unsigned long long>(seconds % 60),
                  static_cast<unsigned long long>(seconds));
  }
  return text;
}

std::string mebibytes(std::uint64_t bytes) {
  char text[32];
  std::snprintf(text, sizeof(text), "%.1f MiB", static_cast<double>(bytes) / (1 << 20));
  return text;
}

int run_status(const std::string& name, std::int64_t timeout_ms) {
  sidecar::ConnectOptions options;
  options.timeout = std::chrono::milliseconds(timeout_ms);
  auto status = sidecar::read_status(name, options);
  if (!status.ok()) return fail(status.code(), status.message());
  const sidecar::ModelInfo& model = status->model;
  const auto now_ns = static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch())
          .count());

  std::cout << "name: " << name << "\n";
  std::cout << "state: " << status->state << "\n";
  std::cout << "socket: " << status->socket_path << "\n";
  std::cout << "pid: " << model.sidecar_pid << " (uid " << model.sidecar_uid << ")\n";
  // The model path and input count are known from the start; the shapes once warm-up is done.
  std::cout << "model: " << model.model_path << "\n";
  std::cout << "inputs: " << model.input_count << "\n";
  if (status->ready) {
    std::cout << "outputs: " << model.output_count << "\n";
    if (model.signatures.empty())
      std::cout << "signatures: any dtype and shape (no --accept-shape or --warmup-shape)\n";
    for (std::size_t s = 0; s < model.signatures.size(); ++s) {
      std::cout << "signature " << s << ": " << describe_signature(model.signatures[s]) << "\n";
    }
    if (model.max_batch > 1) std::cout << "batching: up to " << model.max_batch << " rows\n";
    if (!model.warmed.empty()) {
      std::cout << "warmed up:";
      for (const auto& shapes : model.warmed) std::cout << " " << describe_shapes(shapes);
      std::cout << "\n";
    }
  } else {
    std::cout << "signatures: (described once the sidecar is ready)\n";
  }
  std::cout << "clients: " << status->clients_connected << " connected of " << model.max_clients << " ("
            << status->clients_admitted << " admitted, " << status->clients_reclaimed << " gone, "
            << status->clients_refused << " refused since start)\n";
  std::cout << "requests answered: " << status->requests << " (" << status->requests_woken_ahead
            << " with their sleeping client woken ahead of the answer)\n";
  std::cout << "arena bytes per client: " << status->default_arena_bytes << " by default, up to "
            << status->max_arena_bytes << "\n";
  std::cout << "uptime: " << describe_duration(now_ns > model.started_unix_ns ? now_ns - model.started_unix_ns : 0)
            << "\n";
  std::cout << "start generation: " << model.start_generation << "\n";
  const sidecar::CacheStats& cache = status->cache;
  if (!cache.enabled) {
    std::cout << "cache: off\n";
  } else {
    char ratio[32];
    std::snprintf(ratio, sizeof(ratio), "%.3f", cache.hit_ratio());
    std::cout << "cache: " << cache.entries << " entries, " << mebibytes(cache.bytes_used) << " of "
              << mebibytes(cache.budget_bytes) << ", hit ratio " << ratio << ", scope "
              << (status->cache_per_user ? "per-user" : "shared") << " (sidecarctl cache for more)\n";
  }
  std::cout << std::flush;
  return kExitOk;
}

struct CacheArgs {
  std::string name;
  bool flush = false;
  int timeout_ms = 5000;
};

int run_cache(const CacheArgs& args) {
  if (args.flush) {
    sidecar::ConnectOptions options;
    options.timeout = std::chrono::milliseconds(args.timeout_ms);
    auto client = sidecar::Client::connect(args.name, options);
    if (!client.ok()) return fail(client.code(), client.message());
    auto flushed = client->flush_cache(std::chrono::milliseconds(args.timeout_ms));
    if (!flushed.ok()) return fail(flushed.code(), flushed.message());
    std::cout << *flushed << "\n";
  }
  sidecar::ConnectOptions options;
  options.timeout = std::chrono::milliseconds(args.timeout_ms);
  auto status = sidecar::read_status(args.name, options);
  if (!status.ok()) return fail(status.code(), status.message());
  if (!status->cache.enabled) {
    std::cout << "cache: off (the sidecar runs with --cache-bytes 0)" << std::endl;
    return kExitOk;
  }
  const sidecar::CacheStats& c = status->cache;
  std::cout << "scope: " << (status->cache_per_user ? "per-user (clients do not map it)" : "shared") << "\n";
  std::cout << "budget: " << c.budget_bytes << " bytes (" << mebibytes(c.budget_bytes) << ")\n";
  char share[32];
  std::snprintf(share, sizeof(share), "%.1f%%", 100.0 * static_cast<double>(c.bytes_used) / c.budget_bytes);
  std::cout << "bytes: " << c.bytes_used << " (" << share << " of the budget, metadata included)\n";
  std::cout << "entries: " << c.entries << "\n";
  std::cout << "hits: " << c.hits() << " (" << c.client_hits << " in clients, " << c.sidecar_hits
            << " in the sidecar)\n";
  std::cout << "misses: " << c.misses << "\n";
  char ratio[32];
  std::snprintf(ratio, sizeof(ratio), "%.3f", c.hit_ratio());
  std::cout << "hit ratio: " << ratio << "\n";
  std::cout << "inserts: " << c.inserts << "\n";
  std::cout << "evictions: " << c.evictions << "\n";
  std::cout << "not cached, over " << c.max_entry_bytes << " bytes: " << c.too_large << "\n";
  std::cout << "flushes: " << c.flushes << "\n";
  std::cout << "generation: " << c.generation << std::endl;
  return kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"sidecarctl: run an inference sidecar's model on .npy files, show its status and its cache"};
  app.require_subcommand(1);
  app.set_version_flag("--version",
                       "sidecarctl " + std::string(sidecar::kProjectVersion) + " (protocol version " +
                           std::to_string(sidecar::kProtocolVersion) + ")",
                       "print the version and the protocol version it speaks, and exit");

  InferArgs infer;
  CLI::App* infer_command =
      app.add_subcommand("infer", "run the model once on .npy inputs and save its outputs as .npy");
  infer_command->add_option("--name", infer.name, "sidecar instance name (inference-sidecar --name)")->required();
  infer_command->add_option("--input", infer.inputs, "a .npy file per model input, in forward()'s order")
      ->required()
      ->allow_extra_args(false);
  infer_command
      ->add_option("--output", infer.outputs,
                   "where to save the outputs as .npy: one per output, or one for all (see below)")
      ->required()
      ->allow_extra_args(false);
  infer_command->add_option("--timeout-ms", infer.timeout_ms, "how long to wait for the answer")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  infer_command
      ->add_option("--connect-timeout-ms", infer.connect_timeout_ms,
                   "how long to wait for the sidecar to exist and finish warming up")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  infer_command->footer(
      "With a single --output and a model returning several outputs, output 0 goes to OUT and output i to OUT\n"
      "with _i before its extension: --output y.npy writes y.npy, y_1.npy, y_2.npy...\n"
      "Prints one line: each output's shape and file, and the latency of the call in microseconds\n"
      "(copying inputs in, the forward, copying outputs out; not connecting or file I/O).\n\n" +
      std::string(kExitCodeHelp));

  std::string status_name;
  std::int64_t status_timeout_ms = 0;
  CLI::App* status_command = app.add_subcommand(
      "status", "show a sidecar's state, model, accepted shapes and clients (works while warming up)");
  status_command->add_option("--name", status_name, "sidecar instance name (inference-sidecar --name)")->required();
  status_command
      ->add_option("--timeout-ms", status_timeout_ms,
                   "how long to wait for a sidecar that is not running yet (0: ask once)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  status_command->footer(kExitCodeHelp);

  CacheArgs cache;
  CLI::App* cache_command =
      app.add_subcommand("cache", "show a sidecar's result cache: entries, bytes, hits, misses, evictions, hit ratio");
  cache_command->add_option("--name", cache.name, "sidecar instance name (inference-sidecar --name)")->required();
  cache_command->add_flag("--flush", cache.flush, "empty the cache first (connects as a client for the request)");
  cache_command->add_option("--timeout-ms", cache.timeout_ms, "how long --flush waits to connect and for the answer")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cache_command->footer("Client-side hits reach the statistics within ~100 ms.\n\n" + std::string(kExitCodeHelp));
  OperateCommands operate;
  add_operate_commands(app, operate);
  app.footer(kExitCodeHelp);

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& help) {
    return app.exit(help);
  } catch (const CLI::CallForAllHelp& help) {
    return app.exit(help);
  } catch (const CLI::CallForVersion& version) {
    std::cout << version.what() << std::endl;
    return kExitOk;
  } catch (const CLI::ParseError& error) {
    return fail(kExitUsage, "usage: " + std::string(error.what()) + " (see sidecarctl --help)");
  }

  const std::string operate_name = parsed_operate_name(operate);
  const std::string& name = infer_command->parsed()   ? infer.name
                            : cache_command->parsed() ? cache.name
                            : !operate_name.empty()   ? operate_name
                                                      : status_name;
  if (!sidecar::is_valid_instance_name(name)) {
    return fail(kExitUsage,
                "usage: '" + name +
                    "' is not a valid sidecar name: 1-64 letters, digits, '-', '_' or '.', not starting with '.'");
  }
  try {
    if (infer_command->parsed()) return run_infer(infer);
    if (cache_command->parsed()) return run_cache(cache);
    if (const int code = run_operate_command(operate); code >= 0) return code;
    return run_status(status_name, status_timeout_ms);
  } catch (const std::exception& error) {
    // Only allocation failures reach here: the client library and npy report everything else.
    return fail(kExitProtocol, error.what());
  }
}
