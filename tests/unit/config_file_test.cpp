// The config file (--config), its precedence under the flags, its errors, --print-config's round
// trip, and the exit codes of bad flags and --version.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "options.hpp"
#include "sidecar/shared/project_version.hpp"
#include "sidecar/shared/version.hpp"

namespace sidecar {
namespace {

// A TOML file that is removed when the test ends.
class TomlFile {
 public:
  explicit TomlFile(const std::string& text) {
    static int count = 0;
    path_ = (std::filesystem::temp_directory_path() /
             ("sidecar-config-" + std::to_string(::getpid()) + "-" + std::to_string(count++) + ".toml"))
                .string();
    std::ofstream(path_) << text;
  }
  ~TomlFile() { std::filesystem::remove(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

ParsedOptions parse(std::vector<std::string> args) {
  args.insert(args.begin(), "inference-sidecar");
  std::vector<char*> argv;
  for (std::string& arg : args) argv.push_back(arg.data());
  return parse_command_line(static_cast<int>(argv.size()), argv.data());
}

TEST(ConfigFile, KeysAreTheLongFlagsAndFlagsOverrideThem) {
  const TomlFile file(
      "model = \"/models/m.pt\"\n"
      "name = \"from-file\"\n"
      "warmup-shape = [\"1x3x224x224\", \"1x8:int64,1x8\"]\n"
      "allow-user = [\"alice\", \"1001\"]\n"
      "cache-bytes = \"1G\"\n"
      "arena-bytes = 1048576\n"  // byte sizes may be integers
      "max-clients = 200\n"
      "no-freeze = true\n"
      "cache-scope = \"per-user\"\n"
      "log-level = \"warn\"\n");
  const ParsedOptions from_file = parse({"--config", file.path()});
  ASSERT_TRUE(from_file.options.has_value()) << from_file.error;
  const SidecarOptions& options = *from_file.options;
  EXPECT_EQ(options.model_path, "/models/m.pt");
  EXPECT_EQ(options.name, "from-file");
  ASSERT_EQ(options.warmup_signatures.size(), 2u);
  EXPECT_EQ(options.warmup_signatures[1].size(), 2u);
  EXPECT_EQ(options.allow_users, (std::vector<std::string>{"alice", "1001"}));
  EXPECT_EQ(options.cache_bytes, 1ull << 30);
  EXPECT_EQ(options.arena_bytes, 1u << 20);
  EXPECT_EQ(options.max_clients, 200u);
  EXPECT_FALSE(options.freeze);
  EXPECT_TRUE(options.optimize_for_inference);
  EXPECT_EQ(options.cache_scope, CacheScope::kPerUser);
  EXPECT_EQ(options.log_level, "warn");

  // A flag wins over the file; a repeatable flag given replaces the file's whole list.
  const ParsedOptions overridden = parse({"--config", file.path(), "--name", "from-flag", "--max-clients", "3",
                                          "--allow-user", "bob", "--warmup-shape", "1x64"});
  ASSERT_TRUE(overridden.options.has_value()) << overridden.error;
  EXPECT_EQ(overridden.options->name, "from-flag");
  EXPECT_EQ(overridden.options->max_clients, 3u);
  EXPECT_EQ(overridden.options->allow_users, (std::vector<std::string>{"bob"}));
  ASSERT_EQ(overridden.options->warmup_signatures.size(), 1u);
  EXPECT_EQ(overridden.options->cache_bytes, 1ull << 30);  // not given as a flag: the file's
}

// One line, exit 1, naming the file, the line and the key.
void expect_refused_at(const std::string& text, const std::string& line_and_key, const std::string& why) {
  const TomlFile file(text);
  const ParsedOptions parsed = parse({"--config", file.path(), "--name", "x"});
  EXPECT_FALSE(parsed.options.has_value()) << text;
  EXPECT_EQ(parsed.exit_code, 1) << text;
  EXPECT_EQ(parsed.error.find('\n'), std::string::npos) << parsed.error;
  EXPECT_EQ(parsed.error.rfind(file.path() + ":" + line_and_key, 0), 0u) << parsed.error;
  EXPECT_NE(parsed.error.find(why), std::string::npos) << parsed.error;
}

TEST(ConfigFile, UnknownKeysAndBadValuesNameTheFileLineAndKey) {
  expect_refused_at("model = \"m.pt\"\n\nmax-client = 4\n", "3: unknown key 'max-client'", "long flags");
  expect_refused_at("model = \"m.pt\"\ncache-bytes = \"64X\"\n", "2: cache-bytes: ", "unknown size suffix 'X'");
  expect_refused_at("model = \"m.pt\"\nmax-clients = 0\n", "2: max-clients: ", "not in range");
  expect_refused_at("model = \"m.pt\"\nworkers = \"many\"\n", "2: workers: ", "many");
  expect_refused_at("model = \"m.pt\"\nno-freeze = \"yes\"\n", "2: no-freeze: ", "true or false");
  expect_refused_at("model = \"m.pt\"\nmodel-path = true\n", "2: unknown key 'model-path'", "long flags");
  expect_refused_at("model = [\"a.pt\", \"b.pt\"]\n", "1: model: ", "not a list");
  expect_refused_at("model = \"m.pt\"\nlog-level = \"verbose\"\n", "2: log-level: ", "verbose");
  expect_refused_at("model = \"m.pt\"\n\n\nwarmup-shape = [\"1xq\"]\n", "4: warmup-shape: ", "'q'");
  expect_refused_at("model = \"m.pt\"\nsocket-mode = \"rw\"\n", "2: socket-mode: ", "octal");
  expect_refused_at("model = \"m.pt\"\nconfig = \"other.toml\"\n", "2: unknown key 'config'", "long flags");
  expect_refused_at("model = \n", "1:", "not valid TOML");
}

TEST(ConfigFile, AMissingFileIsOneLineNamingIt) {
  const ParsedOptions parsed = parse({"--config", "/nonexistent/sidecar.toml", "--name", "x", "--model", "m.pt"});
  EXPECT_EQ(parsed.exit_code, 1);
  EXPECT_EQ(parsed.error, "/nonexistent/sidecar.toml: cannot read the config file: No such file or directory");
}

// What --print-config prints, --config reads back to the same settings: every setting, defaults
// included, so a flag added to the table cannot be left out of the file.
TEST(ConfigFile, PrintConfigRoundTrips) {
  const ParsedOptions printed =
      parse({"--print-config", "--model", "/m.pt", "--name", "n", "--allow-user", "alice", "--allow-user", "bob",
             "--warmup-shape", "1x8:int64,1x8", "--cache-bytes", "1G", "--no-optimize", "--socket-mode", "0600",
             "--workers", "3", "--runtime-dir", "/tmp/it's \"quoted\""});
  ASSERT_EQ(printed.exit_code, 0) << printed.error;
  EXPECT_FALSE(printed.options.has_value()) << "--print-config must not start anything";
  const std::string& text = printed.output;
  for (const char* line : {"allow-user = [ 'alice', 'bob' ]\n", "no-optimize = true\n", "no-freeze = false\n",
                           "workers = 3\n", "max-clients = 64\n", "cache-bytes = '1G'\n", "socket-mode = '0600'\n"}) {
    EXPECT_NE(text.find(line), std::string::npos) << line << "in\n" << text;
  }
  const TomlFile file(text);
  const ParsedOptions again = parse({"--config", file.path(), "--print-config"});
  ASSERT_EQ(again.exit_code, 0) << again.error;
  EXPECT_EQ(again.output, text);
  const ParsedOptions started = parse({"--config", file.path()});
  ASSERT_TRUE(started.options.has_value()) << started.error;
  EXPECT_EQ(started.options->runtime_dir, "/tmp/it's \"quoted\"");
  EXPECT_FALSE(started.options->optimize_for_inference);
  EXPECT_EQ(started.options->socket_mode, 0600u);
}

TEST(ConfigFile, PrintConfigWithoutAFileListsTheDefaults) {
  const ParsedOptions printed = parse({"--print-config"});
  ASSERT_EQ(printed.exit_code, 0) << printed.error;
  for (const char* line : {"arena-bytes = '8M'\n", "cache-bytes = '64M'\n", "warmup-shape = []\n",
                           "log-level = 'info'\n", "max-batch = 1\n"}) {
    EXPECT_NE(printed.output.find(line), std::string::npos) << line << "in\n" << printed.output;
  }
}

// CLI11 on its own exits 105, 106, 109... for a bad flag: docs/config.md promises 1.
TEST(Options, BadFlagsExitOneWithOneLine) {
  for (std::vector<std::string> bad : {std::vector<std::string>{"--name", "x"},
                                       {"--name", "x", "--model", "m.pt", "--max-clients", "0"},
                                       {"--name", "x", "--model", "m.pt", "--workers", "many"},
                                       {"--name", "x", "--model", "m.pt", "--frobnicate"},
                                       {"--name", "x", "--model", "m.pt", "--log-level", "verbose"},
                                       {"--name", "x", "--model", "m.pt", "--arena-bytes", "8X"}}) {
    const ParsedOptions parsed = parse(bad);
    EXPECT_FALSE(parsed.options.has_value()) << bad.back();
    EXPECT_EQ(parsed.exit_code, 1) << bad.back();
    EXPECT_FALSE(parsed.error.empty()) << bad.back();
    EXPECT_EQ(parsed.error.find('\n'), std::string::npos) << parsed.error;
  }
  const ParsedOptions level = parse({"--name", "x", "--model", "m.pt", "--log-level", "verbose"});
  EXPECT_NE(level.error.find("--log-level"), std::string::npos) << level.error;
}

TEST(Options, VersionNamesTheProjectAndProtocolVersions) {
  const ParsedOptions parsed = parse({"--version"});
  EXPECT_EQ(parsed.exit_code, 0);
  EXPECT_FALSE(parsed.options.has_value());
  EXPECT_EQ(parsed.output, "inference-sidecar " + std::string(kProjectVersion) + " (protocol version " +
                               std::to_string(kProtocolVersion) + ")\n");
  EXPECT_FALSE(std::string(kProjectVersion).empty());
}

}  // namespace
}  // namespace sidecar
