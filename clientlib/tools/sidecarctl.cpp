// sidecarctl: run a sidecar's model on .npy files, and show what a sidecar is doing.
//
//   sidecarctl infer --name resnet --input image.npy --output logits.npy
//   sidecarctl status --name resnet
//   sidecarctl cache --name resnet [--flush]
//
// infer goes through the client library like any service would. status reads the segment header
// without claiming a channel, so it works while the sidecar is still warming up and even when every
// channel is taken.
#include <CLI/CLI.hpp>
#include <boost/interprocess/exceptions.hpp>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include "npy.hpp"
#include "sidecar/client.hpp"
#include "sidecar/shared/cache_layout.hpp"
#include "sidecar/shared/descriptor_check.hpp"
#include "sidecar/shared/process_identity.hpp"
#include "sidecar/shared/segment.hpp"

namespace {

using sidecar::ErrorCode;

// One exit code per class of failure, so that a script can tell "start it" from "fix the input".
enum ExitCode : int {
  kExitOk = 0,
  kExitNotRunning = 1,   // no sidecar by that name, or it died
  kExitUsage = 2,        // bad command line
  kExitUnavailable = 3,  // it exists but cannot serve now: not ready, no free channel, other layout, stopping
  kExitFile = 4,         // an input could not be read or an output written
  kExitRejected = 5,     // the inputs do not fit the model (dtype, shape, count)
  kExitModelError = 6,   // the model raised, or returned something that is not tensors
  kExitTimeout = 7,      // no answer within --timeout-ms
  kExitProtocol = 8,     // the sidecar answered with something malformed
};

constexpr const char* kExitCodeHelp =
    "Exit codes:\n"
    "  0  success\n"
    "  1  no sidecar by that name is running (or it died)\n"
    "  2  bad command line\n"
    "  3  the sidecar exists but cannot serve: not ready, no free channel, other layout version, shutting down, "
    "overloaded\n"
    "  4  an input .npy could not be read or an output written\n"
    "  5  the sidecar refused the inputs (dtype, shape or count): the message says what it expects\n"
    "  6  the model raised, or returned something other than tensors\n"
    "  7  no answer within --timeout-ms\n"
    "  8  the sidecar answered with something malformed\n"
    "Errors are one line on stderr: 'sidecarctl: <error>: <message>'.";

int exit_code_for(ErrorCode code) {
  switch (code) {
    case ErrorCode::kOk: return kExitOk;
    case ErrorCode::kNotRunning:
    case ErrorCode::kSidecarGone: return kExitNotRunning;
    case ErrorCode::kNotReady:
    case ErrorCode::kLayoutMismatch:
    case ErrorCode::kNoFreeChannel:
    case ErrorCode::kShuttingDown:
    case ErrorCode::kOverloaded:
    case ErrorCode::kBusy:
    case ErrorCode::kCancelled: return kExitUnavailable;
    case ErrorCode::kInvalidArgument:
    case ErrorCode::kRejected: return kExitRejected;
    case ErrorCode::kModelError:
    case ErrorCode::kUnsupportedOutput:
    case ErrorCode::kOutputTooLarge: return kExitModelError;
    case ErrorCode::kTimeout:
    case ErrorCode::kDeadlineExceeded: return kExitTimeout;
    case ErrorCode::kProtocolError: return kExitProtocol;
  }
  return kExitProtocol;
}

// TorchScript errors span several lines; the caller gets one, so a log line stays one record.
std::string one_line(const std::string& text) {
  std::string line;
  bool pending_break = false;
  for (char c : text) {
    if (c == '\n' || c == '\r') {
      pending_break = !line.empty();
      continue;
    }
    if (pending_break) {
      if (c == ' ' || c == '\t') continue;  // the next line's indentation
      line += " | ";
      pending_break = false;
    }
    line += c;
  }
  return line;
}

int fail(int exit_code, const std::string& what) {
  std::cerr << "sidecarctl: " << one_line(what) << std::endl;
  return exit_code;
}

int fail(ErrorCode code, const std::string& message) {
  return fail(exit_code_for(code), std::string(sidecar::error_code_name(code)) + ": " + message);
}

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

// "(a, b) -> (c)" for one signature; counts come from the segment, so they are clamped.
std::string describe_signature(const sidecar::ModelSignature& signature, std::uint32_t input_count,
                               std::uint32_t output_count) {
  auto list = [](const sidecar::TensorShape* shapes, std::uint32_t count) {
    std::string text = "(";
    for (std::uint32_t i = 0; i < std::min(count, sidecar::kMaxTensors); ++i) {
      text += (i ? ", " : "") + sidecar::describe_shape(shapes[i]);
    }
    return text + ")";
  };
  return list(signature.inputs, input_count) + " -> " + list(signature.outputs, output_count);
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

int run_status(const std::string& name) {
  namespace bip = boost::interprocess;
  const std::string shm_name = sidecar::segment_name(name);
  // Read-only: watching a sidecar needs no write permission on its segment.
  sidecar::SegmentMapping segment;
  try {
    segment = sidecar::SegmentMapping::open(shm_name, /*read_only=*/true);
  } catch (const bip::interprocess_exception& error) {
    if (error.get_error_code() == bip::not_found_error) {
      return fail(ErrorCode::kNotRunning,
                  "no sidecar named '" + name + "' is running (no segment /dev/shm" + shm_name + ")");
    }
    return fail(kExitUnavailable, "cannot map /dev/shm" + shm_name + ": " + error.what());
  } catch (const std::exception& error) {
    return fail(kExitUnavailable, "cannot map /dev/shm" + shm_name + ": " + error.what());
  }

  const sidecar::SegmentHeader& header = *segment.header();
  if (segment.size() >= sizeof(sidecar::SegmentHeader) && header.magic.load(std::memory_order_acquire) == 0) {
    return fail(ErrorCode::kNotReady, "sidecar '" + name + "' is still creating its segment");
  }
  if (std::string problem = sidecar::check_segment_layout(segment); !problem.empty()) {
    return fail(ErrorCode::kLayoutMismatch, problem);
  }
  if (!sidecar::process_alive(header.sidecar_pid, header.sidecar_start_time)) {
    return fail(ErrorCode::kNotRunning, "sidecar '" + name + "' (pid " + std::to_string(header.sidecar_pid) +
                                            ") is gone; its segment /dev/shm" + shm_name +
                                            " is stale and the next sidecar of that name replaces it");
  }

  // The sidecar writes the model description before it stores kReady with release: read the
  // state first so that the description read after it is complete.
  const std::uint32_t state = header.state.load(std::memory_order_acquire);
  const sidecar::ModelDescription& model = header.model;
  // Ready and stopping sidecars have published their shapes; starting and warming ones have not.
  const bool described = state == static_cast<std::uint32_t>(sidecar::SidecarState::kReady) ||
                         state == static_cast<std::uint32_t>(sidecar::SidecarState::kStopping);

  const sidecar::SegmentGeometry geometry = sidecar::SegmentGeometry::compute(header.channel_count, header.arena_bytes);
  std::uint32_t claimed = 0;
  std::uint32_t detaching = 0;
  for (std::uint32_t i = 0; i < header.channel_count; ++i) {
    const auto* channel = reinterpret_cast<const sidecar::Channel*>(segment.base() + geometry.channel_offset(i));
    const auto channel_state = static_cast<sidecar::ChannelState>(channel->state.load(std::memory_order_acquire));
    if (channel_state == sidecar::ChannelState::kClaimed) ++claimed;
    if (channel_state == sidecar::ChannelState::kDetaching) ++detaching;
  }

  const auto now_ns = static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch())
          .count());

  std::cout << "name: " << name << "\n";
  std::cout << "state: " << sidecar::sidecar_state_name(state) << "\n";
  std::cout << "pid: " << header.sidecar_pid << "\n";
  // The model path and input count are written at creation; the shapes once warm-up is done.
  std::cout << "model: " << std::string(model.model_path, strnlen(model.model_path, sidecar::kModelPathBytes)) << "\n";
  std::cout << "inputs: " << model.input_count << "\n";
  if (described) {
    std::cout << "outputs: " << model.output_count << "\n";
    if (model.signature_count == 0) {
      std::cout << "signatures: any dtype and shape (no --warmup-shape)\n";
    }
    for (std::uint32_t s = 0; s < std::min(model.signature_count, sidecar::kMaxSignatures); ++s) {
      std::cout << "signature " << s << ": "
                << describe_signature(model.signatures[s], model.input_count, model.output_count) << "\n";
    }
  } else {
    std::cout << "signatures: (described once the sidecar is ready)\n";
  }
  std::cout << "channels: " << header.channel_count << " (" << claimed << " claimed";
  if (detaching) std::cout << ", " << detaching << " detaching";
  std::cout << ")\n";
  std::cout << "arena bytes per channel: " << header.arena_bytes << " (" << (header.arena_bytes >> 20) << " MiB)\n";
  std::cout << "uptime: " << describe_duration(now_ns > header.started_unix_ns ? now_ns - header.started_unix_ns : 0)
            << "\n";
  std::cout << "start generation: " << header.start_generation << "\n";
  if (auto cache = sidecar::read_cache_stats(name); cache.ok()) {
    if (!cache->enabled) {
      std::cout << "cache: off\n";
    } else {
      char ratio[32];
      std::snprintf(ratio, sizeof(ratio), "%.3f", cache->hit_ratio());
      std::cout << "cache: " << cache->entries << " entries, " << mebibytes(cache->bytes_used) << " of "
                << mebibytes(cache->budget_bytes) << ", hit ratio " << ratio << " (sidecarctl cache for more)\n";
    }
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
  auto stats = sidecar::read_cache_stats(args.name);
  if (!stats.ok()) return fail(stats.code(), stats.message());
  if (!stats->enabled) {
    std::cout << "cache: off (the sidecar runs with --cache-bytes 0)" << std::endl;
    return kExitOk;
  }
  const sidecar::CacheStats& c = *stats;
  std::cout << "cache: /dev/shm" << sidecar::cache_segment_name(args.name) << "\n";
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
  CLI::App* status_command = app.add_subcommand(
      "status", "show a sidecar's state, model, accepted shapes and channels (works while warming up)");
  status_command->add_option("--name", status_name, "sidecar instance name (inference-sidecar --name)")->required();
  status_command->footer(kExitCodeHelp);

  CacheArgs cache;
  CLI::App* cache_command =
      app.add_subcommand("cache", "show a sidecar's result cache: entries, bytes, hits, misses, evictions, hit ratio");
  cache_command->add_option("--name", cache.name, "sidecar instance name (inference-sidecar --name)")->required();
  cache_command->add_flag("--flush", cache.flush, "empty the cache first (takes a channel for the request)");
  cache_command->add_option("--timeout-ms", cache.timeout_ms, "how long --flush waits to connect and for the answer")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cache_command->footer("Client-side hits reach the statistics within ~100 ms.\n\n" + std::string(kExitCodeHelp));
  app.footer(kExitCodeHelp);

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& help) {
    return app.exit(help);
  } catch (const CLI::CallForAllHelp& help) {
    return app.exit(help);
  } catch (const CLI::ParseError& error) {
    return fail(kExitUsage, "usage: " + std::string(error.what()) + " (see sidecarctl --help)");
  }

  const std::string& name = infer_command->parsed() ? infer.name : cache_command->parsed() ? cache.name : status_name;
  if (!sidecar::is_valid_instance_name(name)) {
    return fail(kExitUsage,
                "usage: '" + name +
                    "' is not a valid sidecar name: 1-64 letters, digits, '-', '_' or '.', not starting with '.'");
  }
  try {
    if (infer_command->parsed()) return run_infer(infer);
    if (cache_command->parsed()) return run_cache(cache);
    return run_status(status_name);
  } catch (const std::exception& error) {
    // Only allocation failures reach here: the client library and npy report everything else.
    return fail(kExitProtocol, error.what());
  }
}
