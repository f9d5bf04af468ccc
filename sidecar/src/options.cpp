#include "options.hpp"

#include <sched.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <charconv>
#include <string_view>
#include <stdexcept>
#include <utility>

#include "config_file.hpp"
#include "sidecar/shared/cache_layout.hpp"
#include "sidecar/shared/channel_layout.hpp"
#include "sidecar/shared/project_version.hpp"
#include "sidecar/shared/runtime_dir.hpp"
#include "sidecar/shared/version.hpp"

namespace sidecar {

std::uint64_t parse_byte_size(const std::string& text) {
  std::uint64_t value = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc() || end == text.data()) throw std::invalid_argument("'" + text + "' is not a byte size");
  const std::string suffix(end, text.data() + text.size());
  unsigned shift = 0;
  if (suffix.empty() || suffix == "B")
    shift = 0;
  else if (suffix == "K" || suffix == "KiB")
    shift = 10;
  else if (suffix == "M" || suffix == "MiB")
    shift = 20;
  else if (suffix == "G" || suffix == "GiB")
    shift = 30;
  else
    throw std::invalid_argument("'" + text + "': unknown size suffix '" + suffix + "' (use K, M or G)");
  if (shift && value > (~0ull >> shift)) throw std::invalid_argument("'" + text + "' is too large");
  return value << shift;
}

int usable_cpu_count() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (::sched_getaffinity(0, sizeof(set), &set) != 0) return 1;
  const int count = CPU_COUNT(&set);
  return count > 0 ? count : 1;
}

namespace {

// The settings CLI11 keeps as text until finish_settings converts them.
struct FlagText {
  std::vector<std::string> shapes;
  std::vector<std::string> accepted;
  std::string arena = "8M";
  std::string max_arena = "64M";
  std::string channel_memory = "0";
  std::string mode = "0660";
  std::string cache_scope = "shared";
  std::string cache_bytes = "64M";
  std::string cache_max_entry = "0";
  bool no_freeze = false;
  bool no_optimize = false;
};

// The one table of settings: the command line's flags, the config file's keys (config_file.hpp)
// and the lines of --print-config all come from it.
void define_settings(CLI::App& app, SidecarOptions& options, FlagText& text) {
  app.option_defaults()->always_capture_default();
  app.add_option("--model", options.model_path, "TorchScript file (torch.jit.script / torch.jit.save output); required");
  app.add_flag("--echo", options.echo,
               "serve no model: answer each request with its inputs (needs --warmup-shape; not with --model), to "
               "measure what moving the bytes costs");
  app.add_option("--name", options.name, "instance name; clients connect to RUNTIME_DIR/NAME.sock; required");
  app.add_option("--runtime-dir", options.runtime_dir,
                 "directory of NAME.sock and NAME.lock (default: $RUNTIME_DIRECTORY from systemd, else "
                 "/run/inference-sidecar when writable, else $XDG_RUNTIME_DIR/inference-sidecar)");
  app.add_option("--allow-user", options.allow_users,
                 "admit only these users (name or uid; repeatable) and the --allow-group members; default: whoever "
                 "the socket's mode lets connect");
  app.add_option("--allow-group", options.allow_groups, "admit members of this group (name or gid; repeatable)");
  app.add_option("--socket-mode", text.mode, "permissions of NAME.sock, octal: who may connect at all");
  app.add_option("--accept-shape", text.accepted,
                 "input shapes to accept, where a dim may be a range lo..hi or ? (any size), e.g. 1x1..512:int64; "
                 "repeat for several. Without it, the --warmup-shape shapes are the accepted ones");
  app.add_option("--warmup-shape", text.shapes,
                 "input shapes to warm up (and, without --accept-shape, to accept), e.g. 1x3x224x224 or "
                 "1x8:int64,1x8:int64 for two inputs; repeat for several. With neither, any shape is accepted and "
                 "first calls are cold");
  app.add_option("--warmup-iterations", options.warmup_iterations, "forward calls per shape and worker thread")
      ->check(CLI::Range(1, 100000));
  app.add_option("--spin-us", options.spin_us,
                 "the most microseconds an idle worker polls before it sleeps; less while requests come further apart "
                 "(0: sleep at once)");
  app.add_option("--wake-ahead-us", options.wake_ahead_us,
                 "wake a sleeping client when its request is taken rather than when it is answered, if its "
                 "previous request took less than this (a wake-up then overlaps the forward; 0: never)")
      ->check(CLI::Range(0u, 1000000u));
  app.add_option("--workers", options.workers, "inference threads (0: CPUs in this process's affinity mask)")
      ->check(CLI::Range(0, 256));
  app.add_option("--intra-op-threads", options.intra_op_threads, "LibTorch threads inside one forward")
      ->check(CLI::Range(1, 256));
  app.add_option("--inter-op-threads", options.inter_op_threads, "LibTorch inter-op threads")
      ->check(CLI::Range(1, 256));
  app.add_option("--max-clients", options.max_clients, "clients connected at once (each has its own channel)")
      ->check(CLI::Range(1u, kMaxClients));
  app.add_option("--arena-bytes", text.arena,
                 "tensor space per client unless it asks for another size (K, M, G suffixes)");
  app.add_option("--max-arena-bytes", text.max_arena, "the most tensor space a client may ask for");
  app.add_option("--channel-memory", text.channel_memory,
                 "the most memory all clients' channels may commit together (0: --max-clients x --arena-bytes)");
  app.add_option(
         "--max-batch", options.max_batch,
         "batch up to this many rows of requests of equal shapes whose signature has a leading dim of 1 into one "
         "forward (the model must take a leading batch dim); every size is warmed up. 1: no batching")
      ->check(CLI::Range(1u, 256u));
  app.add_option("--max-queue-delay-us", options.max_queue_delay_us,
                 "how long the first request of a batch waits for others to join it")
      ->check(CLI::Range(0u, 1000000u));
  app.add_option("--cache-bytes", text.cache_bytes,
                 "size of the result cache in shared memory, metadata included (K, M, G suffixes; 0: no cache). "
                 "Cache only deterministic models");
  app.add_option("--cache-max-entry-bytes", text.cache_max_entry,
                 "results whose entry (inputs + outputs) is larger are not cached (0: an eighth of the cache)");
  app.add_option("--cache-scope", text.cache_scope,
                 "shared: every client may find (and read) every entry; per-user: entries are keyed by the client's "
                 "uid and clients do not map the cache")
      ->check(CLI::IsMember({"shared", "per-user"}));
  app.add_option("--metrics-file", options.metrics_file,
                 "rewrite this file with the metrics in Prometheus's text format (atomically, by rename) every "
                 "--metrics-interval-ms, for node_exporter's textfile collector");
  app.add_option("--metrics-interval-ms", options.metrics_interval_ms, "how often --metrics-file is rewritten")
      ->capture_default_str()
      ->check(CLI::Range(100u, 3600000u));
  app.add_flag("--no-freeze", text.no_freeze, "do not freeze the module (for models that freezing breaks)");
  app.add_flag("--no-optimize", text.no_optimize, "do not apply optimize_for_inference");
  app.add_option("--log-level", options.log_level, "trace, debug, info, warn, error")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error"}));
}

// A setting found bad after parsing: named by its key, so that the message can say where its
// value came from (the command line, or a line of the config file).
struct SettingError {
  std::string key;
  std::string message;
};

// "0660": octal permission bits, nothing else.
unsigned parse_mode(const std::string& text) {
  std::size_t used = 0;
  unsigned long value = 0;
  try {
    value = std::stoul(text, &used, 8);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != text.size() || text.empty() || value > 0777) {
    throw SettingError{"socket-mode", "'" + text + "' is not an octal mode like 0660"};
  }
  return static_cast<unsigned>(value);
}

std::uint64_t byte_size_of(const std::string& key, const std::string& text) {
  try {
    return parse_byte_size(text);
  } catch (const std::invalid_argument& error) {
    throw SettingError{key, error.what()};
  }
}

// The settings that need more than CLI11's conversion, from their text to `options`.
void finish_settings(const FlagText& text, SidecarOptions& options) {
  if (!options.name.empty() && !is_valid_instance_name(options.name)) {
    throw SettingError{"name",
                       "'" + options.name + "' must be 1-64 letters, digits, '-', '_' or '.', not starting with '.'"};
  }
  for (const std::string& shape : text.shapes) {
    try {
      options.warmup_signatures.push_back(parse_signature(shape));
    } catch (const std::invalid_argument& error) {
      throw SettingError{"warmup-shape", error.what()};
    }
  }
  for (const std::string& shape : text.accepted) {
    try {
      options.accepted_signatures.push_back(parse_accepted_signature(shape));
    } catch (const std::invalid_argument& error) {
      throw SettingError{"accept-shape", error.what()};
    }
  }
  if (options.accepted_signatures.size() > kMaxSignatures) {
    throw SettingError{"accept-shape", "at most " + std::to_string(kMaxSignatures) +
                                           " signatures (each has its own latency histograms); a dim may be a "
                                           "range lo..hi or ?, so one signature can take many shapes"};
  }
  if (options.accepted_signatures.empty() && options.warmup_signatures.size() > kMaxSignatures) {
    throw SettingError{"warmup-shape", "at most " + std::to_string(kMaxSignatures) +
                                           " shapes without --accept-shape (each is then an accepted signature); "
                                           "declare ranges with --accept-shape to warm up to " +
                                           std::to_string(kMaxWarmupShapes)};
  }
  if (options.warmup_signatures.size() > kMaxWarmupShapes) {
    throw SettingError{"warmup-shape", "at most " + std::to_string(kMaxWarmupShapes) + " shapes"};
  }
  for (const InputSignature& warm : options.warmup_signatures) {
    if (options.accepted_signatures.empty()) break;  // then the warm-up shapes are the accepted ones
    const bool accepted = std::any_of(options.accepted_signatures.begin(), options.accepted_signatures.end(),
                                      [&](const AcceptedSignature& signature) { return within(signature, warm); });
    if (!accepted) {
      throw SettingError{"warmup-shape", shape_flag_text(warm) + " is not within any --accept-shape: " +
                                             describe_alternatives(options.accepted_signatures)};
    }
  }
  options.arena_bytes = byte_size_of("arena-bytes", text.arena);
  options.max_arena_bytes = byte_size_of("max-arena-bytes", text.max_arena);
  options.channel_memory = byte_size_of("channel-memory", text.channel_memory);
  options.socket_mode = parse_mode(text.mode);
  options.cache_bytes = byte_size_of("cache-bytes", text.cache_bytes);
  options.cache_max_entry_bytes = byte_size_of("cache-max-entry-bytes", text.cache_max_entry);
  if (options.cache_bytes != 0 && options.cache_bytes < kCacheMinimumBytes) {
    throw SettingError{"cache-bytes", "must be 0 (no cache) or at least 64K"};
  }
  if (options.arena_bytes < kArenaAlignment || options.arena_bytes > kMaxArenaBytes) {
    throw SettingError{"arena-bytes", "must be between 4K and 16G"};
  }
  if (options.max_arena_bytes < options.arena_bytes || options.max_arena_bytes > kMaxArenaBytes) {
    throw SettingError{"max-arena-bytes", "must be at least --arena-bytes and at most 16G"};
  }
  options.cache_scope = text.cache_scope == "per-user" ? CacheScope::kPerUser : CacheScope::kShared;
  options.freeze = !text.no_freeze;
  options.optimize_for_inference = !text.no_optimize;
}

}  // namespace

std::string version_text() {
  return "inference-sidecar " + std::string(kProjectVersion) + " (protocol version " +
         std::to_string(kProtocolVersion) + ")";
}

ParsedOptions parse_command_line(int argc, char** argv) {
  SidecarOptions options;
  FlagText text;
  std::string config_path;
  bool print_config = false;
  CLI::App app{"inference-sidecar: serves a TorchScript model to processes on this host through shared memory"};
  define_settings(app, options, text);
  app.add_option("--config", config_path,
                 "TOML file of settings: each key a long flag without its dashes (model = \"...\", "
                 "warmup-shape = [\"1x3x224x224\"]); flags given override it (docs/config.md)");
  app.add_flag("--print-config", print_config,
               "print the settings in effect, as TOML that --config reads back, and exit without loading the model");
  app.set_version_flag("--version", version_text(), "print the version and the protocol version, and exit");

  ParsedOptions parsed;
  parsed.exit_code = 1;
  SettingSources sources;
  try {
    app.parse(argc, argv);
    if (!config_path.empty()) {
      if (Done read = read_config_file(app, config_path, sources); !read.ok()) {
        parsed.error = read.message();
        return parsed;
      }
    }
    finish_settings(text, options);
  } catch (const CLI::CallForHelp&) {
    parsed.output = app.help();
    parsed.exit_code = 0;
    return parsed;
  } catch (const CLI::CallForVersion& version) {
    parsed.output = std::string(version.what()) + "\n";
    parsed.exit_code = 0;
    return parsed;
  } catch (const CLI::ParseError& error) {
    parsed.error = std::string(error.what()) + " (see --help)";
    return parsed;
  } catch (const SettingError& error) {
    const auto from_file = sources.find(error.key);
    parsed.error = from_file != sources.end() ? from_file->second + ": " + error.key + ": " + error.message
                                              : "--" + error.key + ": " + error.message;
    return parsed;
  }
  if (print_config) {
    parsed.output = settings_as_toml(app);
    parsed.exit_code = 0;
    return parsed;
  }
  // Required here rather than by CLI11, which cannot know that the config file may give them.
  const std::pair<const char*, const std::string*> required[] = {{"model", &options.model_path},
                                                                 {"name", &options.name}};
  for (const auto& [key, value] : required) {
    if (value->empty() && !(options.echo && std::string_view(key) == "model")) {
      parsed.error = std::string("--") + key + " is required (the flag, or " + key + " = \"...\" in the --config file)";
      return parsed;
    }
  }
  if (options.echo && !options.model_path.empty()) {
    parsed.error = "--echo serves no model: give --echo or --model, not both";
    return parsed;
  }
  if (options.echo && options.warmup_signatures.empty()) {
    parsed.error = "--echo needs --warmup-shape: an echo sidecar accepts and answers those shapes only";
    return parsed;
  }
  if (options.workers == 0) options.workers = usable_cpu_count();
  parsed.exit_code = 0;
  parsed.options = std::move(options);
  return parsed;
}

}  // namespace sidecar
