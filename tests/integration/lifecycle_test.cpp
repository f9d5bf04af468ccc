// Start-up, shutdown and crashes of the real inference-sidecar process.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <thread>

#include "client_helpers.hpp"
#include "sidecar/client.hpp"
#include "sidecar/shared/protocol.hpp"
#include "sidecar/shared/unix_socket.hpp"
#include "sidecar_process.hpp"

namespace sidecar {
namespace {

using testing::kTinyShape;
using testing::model_path;
using testing::socket_exists;
using testing::test_socket_path;
using testing::SidecarProcess;
using testing::unique_name;
using namespace std::chrono_literals;

const std::vector<std::string> kTinyArgs = {
    "--model", model_path("tiny"), "--warmup-shape", "1x64", "--workers", "1", "--max-clients", "4", "--arena-bytes",
    "64K"};

std::vector<std::string> error_lines(const std::string& log) {
  std::vector<std::string> lines;
  std::istringstream stream(log);
  for (std::string line; std::getline(stream, line);) {
    if (line.find(" error ") != std::string::npos) lines.push_back(line);
  }
  return lines;
}

TEST(Lifecycle, SigtermRemovesTheSocketAndExitsZero) {
  SidecarProcess sidecar(unique_name("term"), kTinyArgs);
  ASSERT_TRUE(sidecar.wait_ready()) << sidecar.log();
  EXPECT_TRUE(socket_exists(sidecar.name()));
  EXPECT_EQ(sidecar.stop(SIGTERM), 0) << sidecar.log();
  EXPECT_FALSE(socket_exists(sidecar.name()));
}

TEST(Lifecycle, SigintRemovesTheSocketAndExitsZero) {
  SidecarProcess sidecar(unique_name("int"), kTinyArgs);
  ASSERT_TRUE(sidecar.wait_ready()) << sidecar.log();
  EXPECT_EQ(sidecar.stop(SIGINT), 0) << sidecar.log();
  EXPECT_FALSE(socket_exists(sidecar.name()));
}

// scripts/deps.sh installs OpenBLAS, which Debian's libtorch then reaches through the libblas.so.3
// alternative; the sidecar names the library at start, and warns when it is the reference BLAS.
TEST(Lifecycle, StartupNamesAnOptimizedBlas) {
  SidecarProcess sidecar(unique_name("blas"), kTinyArgs);
  ASSERT_TRUE(sidecar.wait_ready()) << sidecar.log();
  const std::string log = sidecar.log();
  EXPECT_NE(log.find("] matrix multiplies: "), std::string::npos) << log;
  EXPECT_EQ(log.find("reference BLAS"), std::string::npos)
      << "expected an optimized BLAS (apt-get install libopenblas0-openmp, as scripts/deps.sh does):\n"
      << log;
  EXPECT_EQ(sidecar.stop(), 0);
}

TEST(Lifecycle, StartupWarnsAboutTheReferenceBlas) {
  // Debian's libblas3 (installed by scripts/deps.sh) keeps its libblas.so.3 here; putting the
  // directory first makes the dynamic loader pick it over the alternative.
  const std::string reference_dir = "/usr/lib/x86_64-linux-gnu/blas";
  if (::access((reference_dir + "/libblas.so.3").c_str(), R_OK) != 0) {
    GTEST_SKIP() << "no " << reference_dir << "/libblas.so.3 (not an x86-64 Debian with libblas3)";
  }
  const char* inherited = std::getenv("LD_LIBRARY_PATH");
  const std::string search_path = reference_dir + (inherited && *inherited ? std::string(":") + inherited : "");
  SidecarProcess sidecar(unique_name("refblas"), kTinyArgs, {"LD_LIBRARY_PATH=" + search_path});
  ASSERT_TRUE(sidecar.wait_ready()) << sidecar.log();
  EXPECT_NE(sidecar.log().find("warning [sidecar:" + sidecar.name() + "] matrix multiplies go to the reference BLAS (" +
                               reference_dir),
            std::string::npos)
      << sidecar.log();
  EXPECT_EQ(sidecar.stop(), 0);
}

TEST(Lifecycle, MissingModelFileStopsStartupWithOneLine) {
  SidecarProcess sidecar(unique_name("missing"), {"--model", "/nonexistent/model.pt"});
  EXPECT_EQ(sidecar.wait_exit(), 1);
  const auto errors = error_lines(sidecar.log());
  ASSERT_EQ(errors.size(), 1u) << sidecar.log();
  EXPECT_NE(errors[0].find("/nonexistent/model.pt does not exist"), std::string::npos) << errors[0];
  EXPECT_FALSE(socket_exists(sidecar.name()));
}

TEST(Lifecycle, CorruptModelFileStopsStartupWithOneLine) {
  const std::string path = "/tmp/sidecar-corrupt-" + std::to_string(::getpid()) + ".pt";
  {
    // The first half of a real model: a truncated download.
    std::ifstream real(model_path("tiny"), std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(real)), std::istreambuf_iterator<char>());
    std::ofstream(path, std::ios::binary) << bytes.substr(0, bytes.size() / 2);
  }
  SidecarProcess sidecar(unique_name("corrupt"), {"--model", path});
  EXPECT_EQ(sidecar.wait_exit(), 1);
  const auto errors = error_lines(sidecar.log());
  ASSERT_EQ(errors.size(), 1u) << sidecar.log();
  EXPECT_NE(errors[0].find("is not a loadable TorchScript module"), std::string::npos) << errors[0];
  EXPECT_FALSE(socket_exists(sidecar.name()));
  ::unlink(path.c_str());
}

TEST(Lifecycle, WarmupShapeTheModelRejectsStopsStartup) {
  SidecarProcess sidecar(unique_name("badwarm"), {"--model", model_path("tiny"), "--warmup-shape", "1x63"});
  EXPECT_EQ(sidecar.wait_exit(), 1);
  const auto errors = error_lines(sidecar.log());
  ASSERT_EQ(errors.size(), 1u) << sidecar.log();
  EXPECT_NE(errors[0].find("warm-up on input [1, 63] float32 failed"), std::string::npos) << errors[0];
  EXPECT_FALSE(socket_exists(sidecar.name()));
}

TEST(Lifecycle, BadFlagsStopStartupWithNonZeroExit) {
  SidecarProcess bad_shape(unique_name("flags"), {"--model", model_path("tiny"), "--warmup-shape", "1xq"});
  EXPECT_NE(bad_shape.wait_exit(), 0);
  EXPECT_NE(bad_shape.log().find("'q' is not a non-negative integer"), std::string::npos) << bad_shape.log();
  SidecarProcess no_model(unique_name("flags"), {});
  EXPECT_NE(no_model.wait_exit(), 0);
  EXPECT_NE(no_model.log().find("--model is required"), std::string::npos) << no_model.log();
}

TEST(Lifecycle, SecondSidecarWithTheSameNameIsRefused) {
  SidecarProcess first(unique_name("dup"), kTinyArgs);
  ASSERT_TRUE(first.wait_ready()) << first.log();
  SidecarProcess second(first.name(), kTinyArgs);
  EXPECT_EQ(second.wait_exit(), 1);
  EXPECT_NE(second.log().find("another sidecar named '" + first.name() + "' is running (pid " +
                              std::to_string(first.pid()) + " holds "),
            std::string::npos)
      << second.log();
  // The first one is untouched.
  auto client = Client::connect(first.name());
  ASSERT_TRUE(client.ok()) << client.message();
  std::vector<float> input(64, 0.5f);
  EXPECT_TRUE(client->infer(TensorView::of(input, kTinyShape), 5s).ok());
  EXPECT_EQ(first.stop(), 0);
}

// A sidecar killed with SIGKILL leaves only its socket file. A client waiting on it learns at once
// from the hang-up; a new connect says the socket is stale; the next sidecar of that name
// replaces the socket and starts the next generation; and the old client's next call reconnects
// by itself and gets its answer.
TEST(Lifecycle, CrashedSidecarIsDetectedAndReplaced) {
  const std::string name = unique_name("crash");
  auto first = std::make_unique<SidecarProcess>(name, kTinyArgs);
  ASSERT_TRUE(first->wait_ready()) << first->log();
  auto client = Client::connect(name);
  ASSERT_TRUE(client.ok()) << client.message();
  const std::uint64_t first_generation = client->model().start_generation;
  first->stop(SIGKILL);
  EXPECT_TRUE(socket_exists(name));

  ConnectOptions no_wait;
  no_wait.timeout = 0ms;
  no_wait.reconnect = false;
  auto orphaned_client = Client::connect(name, no_wait);
  EXPECT_EQ(orphaned_client.code(), ErrorCode::kNotRunning);
  EXPECT_NE(orphaned_client.message().find("is left by one that is gone"), std::string::npos)
      << orphaned_client.message();

  std::vector<float> input(64, 0.5f);
  auto during_outage = client->infer(TensorView::of(input, kTinyShape), 100ms);
  EXPECT_TRUE(during_outage.code() == ErrorCode::kSidecarGone || during_outage.code() == ErrorCode::kNotRunning)
      << error_code_name(during_outage.code()) << ": " << during_outage.message();

  SidecarProcess second(name, kTinyArgs);
  ASSERT_TRUE(second.wait_ready()) << second.log();
  auto fresh = Client::connect(name);
  ASSERT_TRUE(fresh.ok()) << fresh.message();
  EXPECT_EQ(fresh->model().start_generation, first_generation + 1);
  EXPECT_TRUE(fresh->infer(TensorView::of(input, kTinyShape), 5s).ok());
  // The first client, untouched by the application, reconnects on its next call.
  auto again = client->infer(TensorView::of(input, kTinyShape), 5s);
  ASSERT_TRUE(again.ok()) << again.message();
  EXPECT_EQ(client->model().start_generation, first_generation + 1);
  EXPECT_EQ(client->connections(), 2u);
  EXPECT_EQ(second.stop(), 0);
}

TEST(Lifecycle, ConnectWithoutASidecarSaysSoAfterTheTimeout) {
  auto client = Client::connect(unique_name("absent"), testing::connect_options(50ms, 0us));
  EXPECT_EQ(client.code(), ErrorCode::kNotRunning);
  EXPECT_NE(client.message().find("no sidecar named"), std::string::npos);
}

// A sidecar of another protocol version is refused, naming both versions: the client reads the
// 16 bytes every version starts its reply with, whatever follows. Played here by a thread of this
// process (the test runtime directory is ours, so the client trusts it).
TEST(Lifecycle, ConnectRefusesASidecarOfAnotherVersion) {
  const std::string name = unique_name("version");
  const std::string path = test_socket_path(name);
  UniqueFd listening(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  const Result<sockaddr_un> address = unix_address(path);
  ASSERT_TRUE(address.ok());
  ASSERT_EQ(::bind(listening.get(), reinterpret_cast<const sockaddr*>(&*address), sizeof(sockaddr_un)), 0);
  ASSERT_EQ(::listen(listening.get(), 4), 0);
  std::thread future_sidecar([&] {
    UniqueFd connection(::accept(listening.get(), nullptr, nullptr));
    char request[4096];
    [[maybe_unused]] const ssize_t ignored = ::recv(connection.get(), request, sizeof request, 0);
    std::vector<std::byte> reply(900);  // a later version's longer reply
    const HandshakePrefix prefix{kHandshakeMagic, kProtocolVersion + 1, static_cast<std::uint32_t>(reply.size())};
    std::memcpy(reply.data(), &prefix, sizeof prefix);
    [[maybe_unused]] const Done sent = send_message(connection.get(), reply.data(), reply.size());
  });
  auto client = Client::connect(name, testing::connect_options(10s, 0us));
  future_sidecar.join();
  ::unlink(path.c_str());
  EXPECT_EQ(client.code(), ErrorCode::kVersionMismatch) << client.message();
  EXPECT_NE(client.message().find("the sidecar speaks protocol version " + std::to_string(kProtocolVersion + 1)),
            std::string::npos)
      << client.message();
  EXPECT_NE(client.message().find("this client speaks version " + std::to_string(kProtocolVersion)), std::string::npos)
      << client.message();
}

// And the other way: the real sidecar answers a client of another version with both versions,
// and serves on.
TEST(Lifecycle, SidecarRefusesAClientOfAnotherVersion) {
  SidecarProcess sidecar(unique_name("oldclient"), kTinyArgs);
  ASSERT_TRUE(sidecar.wait_ready()) << sidecar.log();
  UniqueFd connection(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  const Result<sockaddr_un> address = unix_address(test_socket_path(sidecar.name()));
  ASSERT_EQ(::connect(connection.get(), reinterpret_cast<const sockaddr*>(&*address), sizeof(sockaddr_un)), 0);
  std::vector<std::byte> request(48);  // an older version's shorter request
  const HandshakePrefix prefix{kHandshakeMagic, kProtocolVersion - 1, static_cast<std::uint32_t>(request.size())};
  std::memcpy(request.data(), &prefix, sizeof prefix);
  ASSERT_TRUE(send_message(connection.get(), request.data(), request.size()).ok());
  alignas(8) std::byte buffer[kMaxHandshakeBytes];
  Result<ReceivedMessage> received = receive_message(connection.get(), buffer, sizeof buffer, 0);
  ASSERT_TRUE(received.ok() && received->kind == ReceivedMessage::Kind::kMessage);
  Result<ConnectReply> reply = parse_connect_reply(std::span<const std::byte>(buffer, received->bytes));
  ASSERT_TRUE(reply.ok()) << reply.message();
  EXPECT_EQ(reply->outcome, static_cast<std::uint32_t>(ConnectOutcome::kVersionMismatch));
  const std::string message = reply_message(*reply);
  EXPECT_NE(message.find("this client speaks protocol version " + std::to_string(kProtocolVersion - 1)),
            std::string::npos)
      << message;
  EXPECT_NE(message.find("the sidecar speaks version " + std::to_string(kProtocolVersion)), std::string::npos)
      << message;
  EXPECT_TRUE(Client::connect(sidecar.name()).ok());
  EXPECT_EQ(sidecar.stop(), 0);
}

// A sidecar still warming up is reported as not ready once the connect timeout passes.
TEST(Lifecycle, ConnectDuringWarmupTimesOutAsNotReady) {
  const std::string name = unique_name("notready");
  SidecarProcess sidecar(name, {"--model", model_path("demo"), "--warmup-shape", "1x3x224x224", "--workers", "1",
                                "--warmup-iterations", "100000", "--max-clients", "2"});
  while (!socket_exists(name) && !sidecar.has_exited()) std::this_thread::sleep_for(5ms);
  auto client = Client::connect(name, testing::connect_options(200ms, 0us));
  EXPECT_EQ(client.code(), ErrorCode::kNotReady) << client.message();
  EXPECT_NE(client.message().find("is not ready: the sidecar is warming up"), std::string::npos) << client.message();
  EXPECT_EQ(sidecar.stop(SIGTERM), 0);
}

// connect() waits through warm-up: it succeeds once the sidecar is ready, not before.
TEST(Lifecycle, ConnectWaitsForWarmup) {
  const std::string name = unique_name("wait");
  SidecarProcess sidecar(name, {"--model", model_path("demo"), "--warmup-shape", "1x3x224x224", "--workers", "1",
                                "--warmup-iterations", "5", "--max-clients", "2"});
  ConnectOptions options;
  options.timeout = 120s;
  auto client = Client::connect(name, options);
  ASSERT_TRUE(client.ok()) << client.message() << sidecar.log();
  EXPECT_NE(sidecar.log().find("warmed ("), std::string::npos);
  EXPECT_EQ(sidecar.stop(), 0);
}

// SIGTERM during a long warm-up stops it without waiting for the warm-up to end.
TEST(Lifecycle, SigtermDuringWarmupRemovesTheSocketAndExitsZero) {
  const std::string name = unique_name("warmstop");
  SidecarProcess sidecar(name, {"--model", model_path("demo"), "--warmup-shape", "1x3x224x224", "--workers", "1",
                                "--warmup-iterations", "100000", "--max-clients", "2"});
  while (!socket_exists(name) && !sidecar.has_exited()) std::this_thread::sleep_for(5ms);
  ASSERT_TRUE(socket_exists(name)) << sidecar.log();
  EXPECT_EQ(sidecar.stop(SIGTERM), 0) << sidecar.log();
  EXPECT_EQ(sidecar.log().find("] ready:"), std::string::npos) << sidecar.log();
  EXPECT_NE(sidecar.log().find("abandoning start-up"), std::string::npos) << sidecar.log();
  EXPECT_FALSE(socket_exists(name));
}

// SIGTERM while a request runs: that request is finished and answered before the process exits.
TEST(Lifecycle, SigtermFinishesTheRequestInFlight) {
  const std::string name = unique_name("drain");
  SidecarProcess sidecar(name, {"--model", model_path("demo"), "--warmup-shape", "1x3x224x224", "--workers", "1",
                                "--warmup-iterations", "3", "--max-clients", "2"});
  ASSERT_TRUE(sidecar.wait_ready()) << sidecar.log();
  auto client = Client::connect(name);
  ASSERT_TRUE(client.ok());
  std::vector<float> image(3 * 224 * 224, 0.25f);
  const std::int64_t shape[] = {1, 3, 224, 224};
  // Queue several requests back to back from a thread, signal while they run.
  std::atomic<int> answered{0}, refused{0}, other{0};
  std::thread sender([&] {
    for (int i = 0; i < 20; ++i) {
      auto outputs = client->infer(TensorView::of(image, shape), 60s);
      if (outputs.ok())
        ++answered;
      // Refused while draining, cut off by the exit, or (a call begun after the exit) not running.
      else if (outputs.code() == ErrorCode::kShuttingDown || outputs.code() == ErrorCode::kSidecarGone ||
               outputs.code() == ErrorCode::kNotRunning)
        ++refused;
      else
        ++other;
      if (!outputs.ok()) break;
    }
  });
  while (answered.load() == 0 && refused.load() == 0 && other.load() == 0) std::this_thread::sleep_for(1ms);
  EXPECT_EQ(sidecar.stop(SIGTERM), 0) << sidecar.log();
  sender.join();
  EXPECT_GE(answered.load(), 1);
  EXPECT_EQ(other.load(), 0);
  EXPECT_FALSE(socket_exists(name));
}

}  // namespace
}  // namespace sidecar
