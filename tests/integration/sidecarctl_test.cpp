// sidecarctl against the real inference-sidecar: status (ready, warming, gone), infer with .npy
// files, and the one-line errors and exit codes that scripts rely on.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "sidecar/client.hpp"
#include "commands.hpp"
#include "sidecar_process.hpp"

namespace sidecar {
namespace {

using testing::CommandResult;
using testing::describe;
using testing::model_path;
using testing::read_text;
using testing::run_sidecarctl;
using testing::ScratchDirectory;
using testing::SidecarProcess;
using testing::unique_name;
using namespace std::chrono_literals;

// Errors are one line that starts with the program's name.
bool is_one_error_line(const std::string& text) {
  return text.rfind("sidecarctl: ", 0) == 0 && text.find('\n') == text.size() - 1;
}

// A minimal .npy writer (format 1.0, C order), so that these tests do not depend on the npy code
// they exercise through sidecarctl.
template <typename T>
void write_test_npy(const std::string& path, const std::string& descr, const std::string& shape_tuple,
                    const std::vector<T>& values) {
  std::string header = "{'descr': '" + descr + "', 'fortran_order': False, 'shape': " + shape_tuple + ", }";
  while ((10 + header.size() + 1) % 64 != 0) header += ' ';
  header += '\n';
  std::ofstream file(path, std::ios::binary);
  file.write("\x93NUMPY\x01\x00", 8);
  const char length[2] = {static_cast<char>(header.size() & 0xff), static_cast<char>(header.size() >> 8)};
  file.write(length, 2);
  file.write(header.data(), static_cast<std::streamsize>(header.size()));
  file.write(reinterpret_cast<const char*>(values.data()), static_cast<std::streamsize>(values.size() * sizeof(T)));
}

// The header text and data of a format 1.0 .npy file, as sidecarctl writes them.
struct NpyContents {
  std::string header;
  std::string data;
};
NpyContents read_test_npy(const std::string& path) {
  const std::string bytes = read_text(path);
  if (bytes.size() < 10 || bytes.compare(0, 8, std::string("\x93NUMPY\x01\x00", 8)) != 0) {
    throw std::runtime_error(path + " is not a format 1.0 .npy file");
  }
  const std::size_t header_bytes =
      static_cast<unsigned char>(bytes[8]) | static_cast<std::size_t>(static_cast<unsigned char>(bytes[9])) << 8;
  return {bytes.substr(10, header_bytes), bytes.substr(10 + header_bytes)};
}

template <typename T>
std::vector<T> values_of(const std::string& data) {
  std::vector<T> values(data.size() / sizeof(T));
  std::memcpy(values.data(), data.data(), values.size() * sizeof(T));
  return values;
}

std::vector<float> ramp(std::size_t count) {
  std::vector<float> values(count);
  for (std::size_t i = 0; i < count; ++i) values[i] = 0.01f * static_cast<float>(i) - 0.3f;
  return values;
}

class SidecarctlTiny : public testing::SuiteSidecar<SidecarctlTiny> {
 public:
  static std::vector<std::string> sidecar_args() {
    return {"--model", model_path("tiny"), "--warmup-shape", "1x64", "--max-clients", "8", "--arena-bytes", "1M"};
  }

 protected:
  ScratchDirectory scratch_;
};

TEST_F(SidecarctlTiny, StatusShowsTheStateModelSignatureAndClients) {
  // A client of our own holds a channel, which status counts without taking one.
  auto client = Client::connect(sidecar_->name());
  ASSERT_TRUE(client.ok()) << client.message();

  const CommandResult status = run_sidecarctl({"status", "--name", sidecar_->name()});
  ASSERT_EQ(status.exit_code, 0) << describe(status);
  EXPECT_EQ(status.err, "");
  EXPECT_NE(status.out.find("state: ready\n"), std::string::npos) << status.out;
  EXPECT_NE(status.out.find("pid: " + std::to_string(sidecar_->pid()) + " (uid "), std::string::npos) << status.out;
  EXPECT_NE(status.out.find("socket: " + testing::test_socket_path(sidecar_->name()) + "\n"), std::string::npos)
      << status.out;
  EXPECT_NE(status.out.find("model: " + model_path("tiny") + "\n"), std::string::npos) << status.out;
  EXPECT_NE(status.out.find("inputs: 1\n"), std::string::npos) << status.out;
  EXPECT_NE(status.out.find("signature 0: ([1, 64] float32) -> ([1, 10] float32)\n"), std::string::npos) << status.out;
  EXPECT_NE(status.out.find("clients: 1 connected of 8 ("), std::string::npos) << status.out;
  EXPECT_NE(status.out.find("arena bytes per client: 1048576 by default"), std::string::npos) << status.out;
  EXPECT_NE(status.out.find("uptime: "), std::string::npos) << status.out;
  EXPECT_NE(status.out.find(" MiB of 64.0 MiB, hit ratio "), std::string::npos) << status.out;
}

TEST_F(SidecarctlTiny, CacheShowsStatisticsAndFlushEmptiesIt) {
  auto client = Client::connect(sidecar_->name());
  ASSERT_TRUE(client.ok()) << client.message();
  const std::vector<float> input = ramp(64);
  const std::int64_t shape[] = {1, 64};
  for (int i = 0; i < 3; ++i) {
    auto result = client->infer(TensorView::of(input, shape), 5s);
    ASSERT_TRUE(result.ok()) << result.message();
  }
  ASSERT_EQ(client->last_cache_outcome(), CacheOutcome::kHitInClient);
  // Client-side hits reach the statistics within the sidecar's 100 ms reporting period.
  CommandResult shown;
  for (int attempt = 0; attempt < 50; ++attempt) {
    shown = run_sidecarctl({"cache", "--name", sidecar_->name()});
    if (shown.out.find("in clients") != std::string::npos && shown.out.find("(0 in clients") == std::string::npos)
      break;
    std::this_thread::sleep_for(50ms);
  }
  ASSERT_EQ(shown.exit_code, 0) << describe(shown);
  EXPECT_EQ(shown.err, "");
  for (const char* line : {"scope: shared\n", "budget: 67108864 bytes", "bytes: ", "entries: ", "hits: ",
                           "misses: ", "hit ratio: ", "evictions: ", "generation: "}) {
    EXPECT_NE(shown.out.find(line), std::string::npos) << line << " missing in:\n" << shown.out;
  }
  EXPECT_EQ(shown.out.find("(0 in clients"), std::string::npos) << shown.out;
  EXPECT_EQ(shown.out.find("entries: 0\n"), std::string::npos) << shown.out;

  const CommandResult flushed = run_sidecarctl({"cache", "--name", sidecar_->name(), "--flush"});
  ASSERT_EQ(flushed.exit_code, 0) << describe(flushed);
  EXPECT_EQ(flushed.out.rfind("flushed ", 0), 0u) << flushed.out;
  EXPECT_NE(flushed.out.find("entries: 0\n"), std::string::npos) << flushed.out;
  auto after = client->infer(TensorView::of(input, shape), 5s);
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(client->last_cache_outcome(), CacheOutcome::kMiss);
}

TEST_F(SidecarctlTiny, InferWritesTheOutputAsNpyMatchingTheClientLibrary) {
  const std::vector<float> input = ramp(64);
  write_test_npy(scratch_.file("x.npy"), "<f4", "(1, 64)", input);

  const CommandResult infer = run_sidecarctl(
      {"infer", "--name", sidecar_->name(), "--input", scratch_.file("x.npy"), "--output", scratch_.file("y.npy")});
  ASSERT_EQ(infer.exit_code, 0) << describe(infer);
  EXPECT_EQ(infer.err, "");
  EXPECT_EQ(infer.out.rfind("outputs: [1, 10] float32 -> " + scratch_.file("y.npy") + "; latency: ", 0), 0u)
      << infer.out;
  EXPECT_EQ(infer.out.substr(infer.out.size() - 4), " us\n") << infer.out;

  const NpyContents output = read_test_npy(scratch_.file("y.npy"));
  EXPECT_NE(output.header.find("'descr': '<f4'"), std::string::npos) << output.header;
  EXPECT_NE(output.header.find("'fortran_order': False"), std::string::npos) << output.header;
  EXPECT_NE(output.header.find("'shape': (1, 10)"), std::string::npos) << output.header;
  ASSERT_EQ(output.data.size(), 10 * sizeof(float));

  // The same input through the library in this process: the same bytes.
  auto client = Client::connect(sidecar_->name());
  ASSERT_TRUE(client.ok()) << client.message();
  const std::int64_t shape[] = {1, 64};
  auto expected = client->infer(TensorView::of(input, shape), 5s);
  ASSERT_TRUE(expected.ok()) << expected.message();
  EXPECT_EQ(values_of<float>(output.data),
            std::vector<float>((*expected)[0].values<float>().begin(), (*expected)[0].values<float>().end()));
}

TEST_F(SidecarctlTiny, WrongShapeFailsWithOneLineNamingTheExpectedShape) {
  write_test_npy(scratch_.file("wide.npy"), "<f4", "(2, 64)", std::vector<float>(128, 1.0f));
  const CommandResult infer = run_sidecarctl(
      {"infer", "--name", sidecar_->name(), "--input", scratch_.file("wide.npy"), "--output", scratch_.file("y.npy")});
  EXPECT_EQ(infer.exit_code, 5) << describe(infer);
  EXPECT_TRUE(is_one_error_line(infer.err)) << infer.err;
  EXPECT_EQ(infer.err.rfind("sidecarctl: rejected: ", 0), 0u) << infer.err;
  EXPECT_NE(infer.err.find("[1, 64] float32"), std::string::npos) << infer.err;
  EXPECT_EQ(infer.out, "");
  EXPECT_FALSE(std::filesystem::exists(scratch_.file("y.npy")));

  write_test_npy(scratch_.file("double.npy"), "<f8", "(1, 64)", std::vector<double>(64, 1.0));
  const CommandResult wrong_dtype = run_sidecarctl({"infer", "--name", sidecar_->name(), "--input",
                                                    scratch_.file("double.npy"), "--output", scratch_.file("y.npy")});
  EXPECT_EQ(wrong_dtype.exit_code, 5) << describe(wrong_dtype);
  EXPECT_NE(wrong_dtype.err.find("expected [1, 64] float32, got [1, 64] float64"), std::string::npos)
      << wrong_dtype.err;
}

TEST_F(SidecarctlTiny, UnreadableInputFailsWithOneLineNamingTheFile) {
  std::ofstream(scratch_.file("text.npy")) << "not numpy\n";
  const CommandResult bad_magic = run_sidecarctl(
      {"infer", "--name", sidecar_->name(), "--input", scratch_.file("text.npy"), "--output", scratch_.file("y.npy")});
  EXPECT_EQ(bad_magic.exit_code, 4) << describe(bad_magic);
  EXPECT_TRUE(is_one_error_line(bad_magic.err)) << bad_magic.err;
  EXPECT_EQ(bad_magic.err.rfind("sidecarctl: " + scratch_.file("text.npy") + ": not a .npy file", 0), 0u)
      << bad_magic.err;

  const CommandResult missing = run_sidecarctl({"infer", "--name", sidecar_->name(), "--input",
                                                scratch_.file("missing.npy"), "--output", scratch_.file("y.npy")});
  EXPECT_EQ(missing.exit_code, 4) << describe(missing);
  EXPECT_NE(missing.err.find(scratch_.file("missing.npy") + ": cannot open"), std::string::npos) << missing.err;
}

TEST_F(SidecarctlTiny, TooManyOutputPathsIsAUsageError) {
  write_test_npy(scratch_.file("x.npy"), "<f4", "(1, 64)", ramp(64));
  const CommandResult infer = run_sidecarctl({"infer", "--name", sidecar_->name(), "--input", scratch_.file("x.npy"),
                                              "--output", scratch_.file("a.npy"), "--output", scratch_.file("b.npy")});
  EXPECT_EQ(infer.exit_code, 2) << describe(infer);
  EXPECT_TRUE(is_one_error_line(infer.err)) << infer.err;
  EXPECT_NE(infer.err.find("returns 1 output(s) but 2 --output paths"), std::string::npos) << infer.err;
}

class SidecarctlTwoInputs : public testing::SuiteSidecar<SidecarctlTwoInputs> {
 public:
  static std::vector<std::string> sidecar_args() {
    return {
        "--model", model_path("two_in_two_out"), "--warmup-shape", "2x3,2x3:int64", "--max-clients", "8", "--arena-bytes",
        "1M"};
  }

 protected:
  void SetUp() override {
    write_test_npy(scratch_.file("x.npy"), "<f4", "(2, 3)", std::vector<float>{0.5f, 1, 2, 3, 4, -5});
    write_test_npy(scratch_.file("index.npy"), "<i8", "(2, 3)", std::vector<std::int64_t>{0, 1, 2, 3, 4, -5});
  }
  void expect_outputs(const std::string& doubled_path, const std::string& incremented_path) {
    const NpyContents doubled = read_test_npy(doubled_path);
    EXPECT_NE(doubled.header.find("'descr': '<f4'"), std::string::npos) << doubled.header;
    EXPECT_NE(doubled.header.find("'shape': (2, 3)"), std::string::npos) << doubled.header;
    EXPECT_EQ(values_of<float>(doubled.data), (std::vector<float>{1, 2, 4, 6, 8, -10}));
    const NpyContents incremented = read_test_npy(incremented_path);
    EXPECT_NE(incremented.header.find("'descr': '<i8'"), std::string::npos) << incremented.header;
    EXPECT_NE(incremented.header.find("'shape': (2, 3)"), std::string::npos) << incremented.header;
    EXPECT_EQ(values_of<std::int64_t>(incremented.data), (std::vector<std::int64_t>{1, 2, 3, 4, 5, -4}));
  }
  ScratchDirectory scratch_;
};

TEST_F(SidecarctlTwoInputs, TwoInputFilesGiveTwoOutputFiles) {
  const CommandResult infer = run_sidecarctl({"infer", "--name", sidecar_->name(), "--input", scratch_.file("x.npy"),
                                              "--input", scratch_.file("index.npy"), "--output",
                                              scratch_.file("doubled.npy"), "--output", scratch_.file("plus1.npy")});
  ASSERT_EQ(infer.exit_code, 0) << describe(infer);
  EXPECT_NE(infer.out.find("[2, 3] float32 -> " + scratch_.file("doubled.npy") + ", [2, 3] int64 -> " +
                           scratch_.file("plus1.npy")),
            std::string::npos)
      << infer.out;
  expect_outputs(scratch_.file("doubled.npy"), scratch_.file("plus1.npy"));
}

TEST_F(SidecarctlTwoInputs, OneOutputPathIsNumberedForTheOtherOutputs) {
  const CommandResult infer =
      run_sidecarctl({"infer", "--name", sidecar_->name(), "--input", scratch_.file("x.npy"), "--input",
                      scratch_.file("index.npy"), "--output", scratch_.file("y.npy")});
  ASSERT_EQ(infer.exit_code, 0) << describe(infer);
  expect_outputs(scratch_.file("y.npy"), scratch_.file("y_1.npy"));
}

TEST_F(SidecarctlTwoInputs, MissingOrSwappedInputsAreRefused) {
  const CommandResult one_input = run_sidecarctl(
      {"infer", "--name", sidecar_->name(), "--input", scratch_.file("x.npy"), "--output", scratch_.file("y.npy")});
  EXPECT_EQ(one_input.exit_code, 5) << describe(one_input);
  EXPECT_TRUE(is_one_error_line(one_input.err)) << one_input.err;
  EXPECT_NE(one_input.err.find("the model takes 2 input(s), 1 --input given"), std::string::npos) << one_input.err;

  const CommandResult swapped =
      run_sidecarctl({"infer", "--name", sidecar_->name(), "--input", scratch_.file("index.npy"), "--input",
                      scratch_.file("x.npy"), "--output", scratch_.file("y.npy")});
  EXPECT_EQ(swapped.exit_code, 5) << describe(swapped);
  EXPECT_NE(swapped.err.find("expected ([2, 3] float32, [2, 3] int64)"), std::string::npos) << swapped.err;
}

TEST_F(SidecarctlTwoInputs, StatusShowsBothInputsInTheSignature) {
  const CommandResult status = run_sidecarctl({"status", "--name", sidecar_->name()});
  ASSERT_EQ(status.exit_code, 0) << describe(status);
  EXPECT_NE(status.out.find("inputs: 2\n"), std::string::npos) << status.out;
  EXPECT_NE(status.out.find("signature 0: ([2, 3] float32, [2, 3] int64) -> ([2, 3] float32, [2, 3] int64)\n"),
            std::string::npos)
      << status.out;
}

TEST(SidecarctlNoSidecar, StatusAndInferExitOneWithOneLine) {
  const std::string name = unique_name("ctl-absent");
  const CommandResult status = run_sidecarctl({"status", "--name", name});
  EXPECT_EQ(status.exit_code, 1) << describe(status);
  EXPECT_EQ(status.err, "sidecarctl: not running: no sidecar named '" + name + "' is running (no socket at " +
                            testing::test_socket_path(name) + ")\n");
  EXPECT_EQ(status.out, "");

  ScratchDirectory scratch;
  write_test_npy(scratch.file("x.npy"), "<f4", "(1, 64)", ramp(64));
  const CommandResult infer = run_sidecarctl({"infer", "--name", name, "--input", scratch.file("x.npy"), "--output",
                                              scratch.file("y.npy"), "--connect-timeout-ms", "0"});
  EXPECT_EQ(infer.exit_code, 1) << describe(infer);
  EXPECT_TRUE(is_one_error_line(infer.err)) << infer.err;
  EXPECT_EQ(infer.err.rfind("sidecarctl: not running: ", 0), 0u) << infer.err;
}

TEST(SidecarctlNoSidecar, BadCommandLinesExitTwoWithOneLine) {
  for (const std::vector<std::string>& args : {std::vector<std::string>{},
                                               {"status"},
                                               {"infer", "--name", "x"},
                                               {"status", "--name", "../etc"},
                                               {"frobnicate"}}) {
    const CommandResult result = run_sidecarctl(args);
    EXPECT_EQ(result.exit_code, 2) << describe(result);
    EXPECT_TRUE(is_one_error_line(result.err)) << result.err;
    EXPECT_EQ(result.err.rfind("sidecarctl: usage: ", 0), 0u) << result.err;
  }
  const CommandResult help = run_sidecarctl({"--help"});
  EXPECT_EQ(help.exit_code, 0) << describe(help);
  EXPECT_NE(help.out.find("Exit codes:"), std::string::npos) << help.out;
}

// Status connects as an observer, without taking a channel, so it answers before the sidecar is
// ready, and tells a dead sidecar's leftover socket from a live one.
TEST(SidecarctlWarming, StatusWorksWhileWarmingUpAndReportsADeadSidecar) {
  // The demo CNN at 1x3x224x224 takes milliseconds a forward: this warm-up outlasts the test.
  SidecarProcess sidecar(unique_name("ctl-warming"), {"--model", model_path("demo"), "--warmup-shape", "1x3x224x224",
                                                      "--workers", "1", "--warmup-iterations", "100000"});
  CommandResult status;
  const auto deadline = std::chrono::steady_clock::now() + 120s;
  // Until the socket exists, status says "not running" (1).
  do {
    ASSERT_FALSE(sidecar.has_exited()) << sidecar.log();
    std::this_thread::sleep_for(50ms);
    status = run_sidecarctl({"status", "--name", sidecar.name()});
  } while ((status.exit_code == 1 || status.exit_code == 3) && std::chrono::steady_clock::now() < deadline);
  ASSERT_EQ(status.exit_code, 0) << describe(status) << sidecar.log();
  EXPECT_TRUE(status.out.find("state: warming up\n") != std::string::npos ||
              status.out.find("state: starting\n") != std::string::npos)
      << status.out;
  EXPECT_NE(status.out.find("model: " + model_path("demo") + "\n"), std::string::npos) << status.out;
  EXPECT_NE(status.out.find("signatures: (described once the sidecar is ready)\n"), std::string::npos) << status.out;
  EXPECT_NE(status.out.find("pid: " + std::to_string(sidecar.pid()) + " (uid "), std::string::npos) << status.out;

  // SIGKILL leaves the socket file behind, as a crash would.
  sidecar.stop(SIGKILL);
  ASSERT_TRUE(testing::socket_exists(sidecar.name()));
  const CommandResult gone = run_sidecarctl({"status", "--name", sidecar.name()});
  EXPECT_EQ(gone.exit_code, 1) << describe(gone);
  EXPECT_TRUE(is_one_error_line(gone.err)) << gone.err;
  EXPECT_NE(gone.err.find("is left by one that is gone"), std::string::npos) << gone.err;
}

}  // namespace
}  // namespace sidecar
