// What operators see: the config file and --print-config through the real binary, the systemd
// example config, journal priorities, the info lines for clients, warnings for failed requests,
// --version, exit codes, the start-up check of the arena against the warmed shapes, and the
// message for a model saved with torch.save.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "client_helpers.hpp"
#include "commands.hpp"
#include "sidecar/client.hpp"
#include "sidecar/shared/version.hpp"
#include "sidecar_process.hpp"

namespace sidecar {
namespace {

using testing::CommandResult;
using testing::connect_or_fail;
using testing::describe;
using testing::read_text;
using testing::kTinyShape;
using testing::model_path;
using testing::ramp;
using testing::SidecarProcess;
using testing::unique_name;
using namespace std::chrono_literals;

// Runs `binary ARGS...` to its end; stdout and stderr apart.
testing::CommandResult run(const std::string& binary, const std::vector<std::string>& args) {
  std::vector<std::string> argv{binary};
  argv.insert(argv.end(), args.begin(), args.end());
  return testing::run_program(argv);
}

std::string temp_path(const std::string& what) {
  static int count = 0;
  return (std::filesystem::temp_directory_path() /
          ("sidecar-operator-" + std::to_string(::getpid()) + "-" + std::to_string(count++) + "-" + what))
      .string();
}

bool is_one_line(const std::string& text) { return !text.empty() && text.find('\n') == text.size() - 1; }

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream stream(text);
  for (std::string line; std::getline(stream, line);) lines.push_back(line);
  return lines;
}

const std::string kExampleConfig = std::string(SIDECAR_SOURCE_DIR) + "/systemd/example.toml";

TEST(Version, BothProgramsPrintTheProjectAndProtocolVersions) {
  const std::string protocol = "(protocol version " + std::to_string(kProtocolVersion) + ")";
  const CommandResult sidecar = run(SIDECAR_BINARY, {"--version"});
  EXPECT_EQ(sidecar.exit_code, 0) << describe(sidecar);
  EXPECT_EQ(sidecar.out.rfind("inference-sidecar ", 0), 0u) << sidecar.out;
  EXPECT_NE(sidecar.out.find(protocol), std::string::npos) << sidecar.out;
  const CommandResult ctl = run(SIDECARCTL_BINARY, {"--version"});
  EXPECT_EQ(ctl.exit_code, 0) << describe(ctl);
  EXPECT_EQ(ctl.out.rfind("sidecarctl ", 0), 0u) << ctl.out;
  EXPECT_NE(ctl.out.find(protocol), std::string::npos) << ctl.out;
  // The same project version on both.
  EXPECT_EQ(sidecar.out.substr(sidecar.out.find(' ')), ctl.out.substr(ctl.out.find(' ')));
}

TEST(ExitCodes, BadFlagsAndABadLogLevelExitOneWithOneLine) {
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"--name", "x"},
        {"--name", "x", "--model", "m.pt", "--log-level", "loud"},
        {"--name", "x", "--model", "m.pt", "--max-clients", "0"},
        {"--name", "x", "--model", "m.pt", "--no-such-flag"}}) {
    const CommandResult result = run(SIDECAR_BINARY, args);
    EXPECT_EQ(result.exit_code, 1) << describe(result);
    EXPECT_TRUE(is_one_line(result.err)) << describe(result);
    EXPECT_EQ(result.err.rfind("inference-sidecar: ", 0), 0u) << result.err;
  }
  const CommandResult level = run(SIDECAR_BINARY, {"--name", "x", "--model", "m.pt", "--log-level", "loud"});
  EXPECT_NE(level.err.find("--log-level: loud not in {trace,debug,info,warn,error}"), std::string::npos) << level.err;
}

TEST(ConfigFile, TheSystemdExampleParsesAndPrintsBackIdentically) {
  const CommandResult printed = run(SIDECAR_BINARY, {"--config", kExampleConfig, "--print-config"});
  ASSERT_EQ(printed.exit_code, 0) << describe(printed);
  EXPECT_EQ(printed.err, "");
  EXPECT_NE(printed.out.find("model = '/var/lib/inference-sidecar/models/resnet50.pt'\n"), std::string::npos)
      << printed.out;
  const std::string copy = temp_path("printed.toml");
  std::ofstream(copy) << printed.out;
  const CommandResult again = run(SIDECAR_BINARY, {"--config", copy, "--print-config"});
  std::filesystem::remove(copy);
  ASSERT_EQ(again.exit_code, 0) << describe(again);
  EXPECT_EQ(again.out, printed.out);
}

// Every setting the binary knows is in the example, so the example documents all of them.
TEST(ConfigFile, TheSystemdExampleListsEverySetting) {
  const CommandResult defaults = run(SIDECAR_BINARY, {"--print-config"});
  ASSERT_EQ(defaults.exit_code, 0) << describe(defaults);
  const std::string example = read_text(kExampleConfig);
  for (const std::string& line : lines_of(defaults.out)) {
    const std::string key = line.substr(0, line.find(" = "));
    const bool set = example.find("\n" + key + " = ") != std::string::npos;
    const bool commented = example.find("\n#" + key + " = ") != std::string::npos;
    EXPECT_TRUE(set || commented) << key << " is not in " << kExampleConfig;
  }
}

TEST(ConfigFile, ASidecarStartsFromItsConfigFileAndFlagsOverrideIt) {
  const std::string config = temp_path("tiny.toml");
  std::ofstream(config) << "model = \"" << model_path("tiny") << "\"\nwarmup-shape = [\"1x64\"]\nworkers = 1\n"
                        << "max-clients = 4\narena-bytes = \"64K\"\nlog-level = \"error\"\n";
  // --log-level on the command line wins over the file's "error", which would hide "ready".
  SidecarProcess sidecar(unique_name("config"), {"--config", config, "--log-level", "info"});
  ASSERT_TRUE(sidecar.wait_ready()) << sidecar.log();
  Client client = connect_or_fail(sidecar.name());
  auto outputs = client.infer(TensorView::of(ramp(64, 0.01f), kTinyShape), 30s);
  EXPECT_TRUE(outputs.ok()) << outputs.message();
  EXPECT_EQ(sidecar.stop(), 0);
  std::filesystem::remove(config);
}

TEST(ConfigFile, AnUnknownKeyStopsStartupWithOneLineNamingFileLineAndKey) {
  const std::string config = temp_path("bad.toml");
  std::ofstream(config) << "model = \"" << model_path("tiny") << "\"\n# a comment\ncache_bytes = \"1M\"\n";
  const CommandResult result = run(SIDECAR_BINARY, {"--name", unique_name("badkey"), "--config", config});
  std::filesystem::remove(config);
  EXPECT_EQ(result.exit_code, 1) << describe(result);
  EXPECT_TRUE(is_one_line(result.err)) << describe(result);
  EXPECT_EQ(result.err.rfind("inference-sidecar: " + config + ":3: unknown key 'cache_bytes'", 0), 0u) << result.err;
}

TEST(ConfigFile, ABadValueStopsStartupWithOneLineNamingFileLineAndKey) {
  const std::string config = temp_path("badvalue.toml");
  std::ofstream(config) << "model = \"" << model_path("tiny") << "\"\nmax-batch = 1000\n";
  const CommandResult result = run(SIDECAR_BINARY, {"--name", unique_name("badvalue"), "--config", config});
  std::filesystem::remove(config);
  EXPECT_EQ(result.exit_code, 1) << describe(result);
  EXPECT_TRUE(is_one_line(result.err)) << describe(result);
  EXPECT_EQ(result.err.rfind("inference-sidecar: " + config + ":2: max-batch: ", 0), 0u) << result.err;
}

// Under systemd (stderr is the stream $JOURNAL_STREAM names) each line starts with its priority
// and carries no timestamp; elsewhere lines keep their timestamp and have no prefix.
TEST(Logs, UnderTheJournalEachLineCarriesItsPriorityAndNoTimestamp) {
  SidecarProcess journal(unique_name("journal"),
                         {"--model", model_path("tiny"), "--warmup-shape", "1x64", "--workers", "1", "--max-clients", "2"},
                         {}, /*as_journal_stream=*/true);
  ASSERT_TRUE(journal.wait_ready()) << journal.log();
  EXPECT_EQ(journal.stop(), 0);
  const std::vector<std::string> lines = lines_of(journal.log());
  ASSERT_FALSE(lines.empty());
  bool saw_info = false;
  for (const std::string& line : lines) {
    ASSERT_EQ(line.front(), '<') << line;
    EXPECT_TRUE(line.rfind("<6>info [sidecar:", 0) == 0 || line.rfind("<4>warning [sidecar:", 0) == 0) << line;
    saw_info = saw_info || line.find("] ready:") != std::string::npos;
  }
  EXPECT_TRUE(saw_info) << journal.log();

  SidecarProcess failing(unique_name("journal-err"), {"--model", "/nonexistent/model.pt"}, {}, true);
  EXPECT_EQ(failing.wait_exit(), 1);
  EXPECT_EQ(failing.log().rfind("<3>error [sidecar:", 0), 0u) << failing.log();
  SidecarProcess bad_flag(unique_name("journal-flag"), {"--model", "m.pt", "--workers", "many"}, {}, true);
  EXPECT_EQ(bad_flag.wait_exit(), 1);
  EXPECT_EQ(bad_flag.log().rfind("<3>inference-sidecar: ", 0), 0u) << bad_flag.log();

  // $JOURNAL_STREAM inherited from a parent whose stderr was the journal: not this stderr.
  SidecarProcess elsewhere(unique_name("not-journal"), {"--model", "/nonexistent/model.pt"},
                           {"JOURNAL_STREAM=1:1"});
  EXPECT_EQ(elsewhere.wait_exit(), 1);
  const std::string log = elsewhere.log();
  EXPECT_NE(log.front(), '<') << log;
  EXPECT_NE(log.find(" error [sidecar:"), std::string::npos) << log;
  EXPECT_TRUE(std::isdigit(static_cast<unsigned char>(log.front()))) << "a timestamp first: " << log;
}

TEST(Logs, ClientsConnectingAndLeavingAndTheirFailedRequestsAreLogged) {
  SidecarProcess sidecar(unique_name("client-log"), {"--model", model_path("raises"), "--warmup-shape", "4",
                                                     "--workers", "1", "--max-clients", "4", "--arena-bytes", "64K"});
  ASSERT_TRUE(sidecar.wait_ready()) << sidecar.log();
  const std::string who = "pid " + std::to_string(::getpid()) + ", uid " + std::to_string(::getuid());
  {
    Client client = connect_or_fail(sidecar.name());
    const std::int64_t shape[] = {4};
    const std::vector<float> negative{1, -1, 4, 9};
    for (int i = 0; i < 5; ++i) {
      EXPECT_EQ(client.infer(TensorView::of(negative, shape), 30s).code(), ErrorCode::kModelError);
    }
    const std::int64_t wrong[] = {5};
    const std::vector<float> five{1, 2, 3, 4, 5};
    EXPECT_EQ(client.infer(TensorView::of(five, wrong), 30s).code(), ErrorCode::kRejected);
  }
  ASSERT_TRUE(testing::wait_until([&] { return sidecar.log().find("disconnected") != std::string::npos; }))
      << sidecar.log();
  EXPECT_EQ(sidecar.stop(), 0);
  const std::string log = sidecar.log();
  EXPECT_NE(log.find(" info [sidecar:" + sidecar.name() + "] client 0 connected: " + who + ", "), std::string::npos)
      << log;
  EXPECT_NE(log.find(" info [sidecar:" + sidecar.name() + "] client 0 disconnected: " + who + "\n"), std::string::npos)
      << log;
  // Five model errors within a second: one warning, the rest counted; the refusal that follows
  // is counted too (the same client's limiter).
  std::size_t model_errors = 0;
  for (const std::string& line : lines_of(log)) {
    if (line.find(" warning ") != std::string::npos && line.find("model error: ") != std::string::npos) {
      ++model_errors;
      EXPECT_NE(line.find("client 0 (" + who + "): model error: "), std::string::npos) << line;
      EXPECT_NE(line.find("negative input is not allowed"), std::string::npos) << line;
    }
  }
  EXPECT_EQ(model_errors, 1u) << log;
}

TEST(Logs, ARefusedRequestIsAWarning) {
  SidecarProcess sidecar(unique_name("refused-log"), {"--model", model_path("tiny"), "--warmup-shape", "1x64",
                                                      "--workers", "1", "--max-clients", "4", "--arena-bytes", "64K"});
  ASSERT_TRUE(sidecar.wait_ready()) << sidecar.log();
  Client client = connect_or_fail(sidecar.name());
  const std::int64_t wrong[] = {1, 32};
  EXPECT_EQ(client.infer(TensorView::of(ramp(32, 0.01f), wrong), 30s).code(), ErrorCode::kRejected);
  EXPECT_TRUE(testing::wait_until([&] { return sidecar.log().find("request refused") != std::string::npos; }))
      << sidecar.log();
  EXPECT_EQ(sidecar.stop(), 0);
  EXPECT_NE(sidecar.log().find(" warning [sidecar:" + sidecar.name() + "] client 0 (pid " + std::to_string(::getpid())),
            std::string::npos)
      << sidecar.log();
}

TEST(Startup, OutputsThatCannotFitTheArenaStopStartupNamingTheArenaNeeded) {
  // 32 rows of tiny's 1x64: 8192 bytes in, 1280 out, and the cancel word: 9536 bytes of arena.
  SidecarProcess sidecar(unique_name("small-arena"),
                         {"--model", model_path("tiny"), "--warmup-shape", "1x64", "--max-batch", "32", "--workers",
                          "1", "--warmup-iterations", "1", "--arena-bytes", "4K"});
  EXPECT_EQ(sidecar.wait_exit(), 1) << sidecar.log();
  std::vector<std::string> errors;
  for (const std::string& line : lines_of(sidecar.log())) {
    if (line.find(" error ") != std::string::npos) errors.push_back(line);
  }
  ASSERT_EQ(errors.size(), 1u) << sidecar.log();
  EXPECT_NE(errors[0].find("outputs of 32x64 need 9536 bytes of arena with their inputs, --arena-bytes is 4096; use "
                           "--arena-bytes >= 12288"),
            std::string::npos)
      << errors[0];
  EXPECT_FALSE(testing::socket_exists(sidecar.name()));
}

TEST(Startup, AModelSavedWithTorchSaveIsToldToUseTorchJitSave) {
  for (const char* model : {"torch_save", "torch_save_legacy"}) {
    SidecarProcess sidecar(unique_name("torch-save"), {"--model", model_path(model)});
    EXPECT_EQ(sidecar.wait_exit(), 1) << sidecar.log();
    const std::string log = sidecar.log();
    EXPECT_NE(log.find("model file " + model_path(model) +
                       " was saved with torch.save, not torch.jit.save: script or trace the model"),
              std::string::npos)
        << log;
    EXPECT_EQ(lines_of(log).size(), 1u) << log;
  }
}

// forward(x, mask: Optional[Tensor] = None, scale: float = 2.0): requests carry x alone, and the
// model runs with its defaults, as Python's own call module(x) would.
TEST(Startup, ArgumentsWithDefaultsAreLeftToTheirDefaults) {
  SidecarProcess sidecar(unique_name("defaults"), {"--model", model_path("optional_mask"), "--warmup-shape", "1x64"});
  ASSERT_TRUE(sidecar.wait_ready()) << sidecar.log();
  EXPECT_NE(sidecar.log().find("mask, scale keep their defaults"), std::string::npos) << sidecar.log();
  Client client = connect_or_fail(sidecar.name());
  EXPECT_EQ(client.model().input_count, 1u);
  const std::vector<float> input = ramp(64, 0.5f);
  auto outputs = client.infer(TensorView::of(input, kTinyShape), 10s);
  ASSERT_TRUE(outputs.ok()) << outputs.message();
  const auto values = (*outputs)[0].values<float>();
  ASSERT_EQ(values.size(), input.size());
  for (std::size_t i = 0; i < input.size(); ++i) EXPECT_EQ(values[i], input[i] * 2.0f) << i;
  EXPECT_EQ(sidecar.stop(), 0);
}

// A required argument that is not a tensor cannot come in a request: refused at start, by name.
TEST(Startup, ARequiredArgumentThatIsNoTensorIsRefusedByName) {
  SidecarProcess sidecar(unique_name("int-arg"), {"--model", model_path("takes_an_int"), "--warmup-shape", "1x64"});
  EXPECT_EQ(sidecar.wait_exit(), 1) << sidecar.log();
  EXPECT_NE(sidecar.log().find("forward() argument 'repeats' is int"), std::string::npos) << sidecar.log();
}

}  // namespace
}  // namespace sidecar
