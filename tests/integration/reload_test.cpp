// Swapping the model of a serving sidecar: under continuous load from several clients, after a
// failure, on SIGHUP, and who may ask. Two real scripted models that add different constants tell
// which one answered each request.
#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "child_process.hpp"
#include "client_helpers.hpp"
#include "sidecar/client.hpp"
#include "sidecar_process.hpp"

namespace sidecar {
namespace {

using namespace std::chrono_literals;
using testing::connect_options;
using testing::connect_or_fail;
using testing::model_path;
using testing::random_values;
using testing::SidecarProcess;
using testing::unique_name;
using testing::wait_until;

constexpr std::int64_t kShape[] = {1, 16};

enum class Answer { kPlus1000, kPlus2000, kTorn };

// Which model answered: every output element must be its input plus the same one constant.
Answer classify(const std::vector<float>& input, const Tensor& output) {
  const auto values = output.values<float>();
  if (values.size() != input.size()) return Answer::kTorn;
  const auto all_plus = [&](float constant) {
    for (std::size_t i = 0; i < input.size(); ++i) {
      if (std::fabs(values[i] - input[i] - constant) > 0.01f) return false;
    }
    return true;
  };
  if (all_plus(1000.0f)) return Answer::kPlus1000;
  if (all_plus(2000.0f)) return Answer::kPlus2000;
  return Answer::kTorn;
}

std::vector<std::string> plus_args(std::vector<std::string> more = {}) {
  std::vector<std::string> args{"--model", model_path("plus_1000"), "--warmup-shape", "1x16"};
  args.insert(args.end(), more.begin(), more.end());
  return args;
}

Answer ask(Client& client, std::uint32_t seed) {
  const std::vector<float> input = random_values(16, seed, 0.0f);
  auto outputs = client.infer(TensorView::of(input, kShape), 10s);
  if (!outputs.ok() || outputs->size() != 1) return Answer::kTorn;
  return classify(input, (*outputs)[0]);
}

// The test: clients under continuous load, 20 reloads back and forth. No request fails or
// goes unanswered, every answer is wholly one model's, and each reload has taken effect by the time
// it is reported done.
TEST(Reload, TwentyReloadsUnderLoadFailAndLoseNothing) {
  SidecarProcess sidecar(unique_name("reload"), plus_args());
  ASSERT_TRUE(sidecar.wait_ready()) << sidecar.log();
  constexpr int kClients = 3;
  constexpr int kReloads = 20;
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> sent{0}, answered{0}, failed{0}, torn{0}, from_1000{0}, from_2000{0};
  std::vector<std::string> failures;
  std::mutex failures_mutex;
  std::vector<std::thread> clients;
  for (int c = 0; c < kClients; ++c) {
    clients.emplace_back([&, c] {
      Client client = connect_or_fail(sidecar.name(), connect_options(10s));
      for (std::uint32_t i = 0; !stop.load(); ++i) {
        const std::vector<float> input = random_values(16, static_cast<std::uint32_t>(c) * 1'000'000u + i, 0.0f);
        sent.fetch_add(1);
        auto outputs = client.infer(TensorView::of(input, kShape), 10s);
        if (!outputs.ok()) {
          failed.fetch_add(1);
          std::lock_guard lock(failures_mutex);
          failures.push_back(outputs.message());
          continue;
        }
        answered.fetch_add(1);
        switch (classify(input, (*outputs)[0])) {
          case Answer::kPlus1000: from_1000.fetch_add(1); break;
          case Answer::kPlus2000: from_2000.fetch_add(1); break;
          case Answer::kTorn: torn.fetch_add(1); break;
        }
      }
    });
  }
  Client checker = connect_or_fail(sidecar.name(), connect_options(10s));
  int took_effect = 0;
  for (int r = 0; r < kReloads; ++r) {
    const bool to_2000 = r % 2 == 0;
    const std::uint64_t before = answered.load();
    // Some load between reloads, so that every swap happens under it.
    ASSERT_TRUE(wait_until([&] { return answered.load() >= before + 50; }, 60s));
    ConnectOptions options = connect_options(120s);
    auto reloaded = reload_model(sidecar.name(), model_path(to_2000 ? "plus_2000" : "plus_1000"), options);
    ASSERT_TRUE(reloaded.ok()) << reloaded.message() << "\n" << sidecar.log();
    EXPECT_NE(reloaded->find(to_2000 ? "plus_2000" : "plus_1000"), std::string::npos) << *reloaded;
    // Once it is reported done, only the new model answers, whatever the cache held.
    took_effect += ask(checker, 900'000'000u + static_cast<std::uint32_t>(r)) ==
                   (to_2000 ? Answer::kPlus2000 : Answer::kPlus1000);
  }
  stop.store(true);
  for (std::thread& client : clients) client.join();

  std::cout << "[ reload ] " << kReloads << " reloads, " << kClients << " clients: " << sent.load() << " sent, "
            << answered.load() << " answered (" << from_1000.load() << " by plus_1000, " << from_2000.load()
            << " by plus_2000), " << failed.load() << " failed, " << torn.load() << " neither" << std::endl;
  EXPECT_EQ(failed.load(), 0u) << (failures.empty() ? "" : failures.front());
  EXPECT_EQ(answered.load(), sent.load());
  EXPECT_EQ(torn.load(), 0u);
  EXPECT_GT(from_1000.load(), 0u);
  EXPECT_GT(from_2000.load(), 0u);
  EXPECT_EQ(took_effect, kReloads);
  auto status = read_status(sidecar.name(), connect_options(10s));
  ASSERT_TRUE(status.ok()) << status.message();
  EXPECT_EQ(status->reloads, static_cast<std::uint64_t>(kReloads));
  EXPECT_EQ(status->failed_reloads, 0u);
  EXPECT_NE(status->model.model_path.find("plus_1000"), std::string::npos) << status->model.model_path;
  EXPECT_EQ(sidecar.stop(), 0) << sidecar.log();
}

// A model that does not load, is no TorchScript, or fails its warm-up: the reload answers why, and
// the old model serves on.
TEST(Reload, AFailedReloadLeavesTheOldModelServing) {
  SidecarProcess sidecar(unique_name("reload-fail"), plus_args());
  ASSERT_TRUE(sidecar.wait_ready()) << sidecar.log();
  Client client = connect_or_fail(sidecar.name(), connect_options(10s));
  const std::string garbage = testing::test_runtime_dir() + "/" + sidecar.name() + "-garbage.pt";
  std::ofstream(garbage) << "not a model";
  struct Case {
    std::string path;
    std::string said;
  };
  const Case cases[] = {
      {"/nonexistent/model.pt", "/nonexistent/model.pt"},
      {garbage, garbage},
      // Two inputs: warm-up on the declared 1x16 signature fails.
      {model_path("two_in_two_out"), "warm"},
  };
  for (const Case& attempt : cases) {
    auto reloaded = reload_model(sidecar.name(), attempt.path, connect_options(120s));
    ASSERT_FALSE(reloaded.ok()) << attempt.path;
    EXPECT_EQ(reloaded.code(), ErrorCode::kModelError) << reloaded.message();
    EXPECT_NE(reloaded.message().find(attempt.said), std::string::npos) << reloaded.message();
    EXPECT_EQ(ask(client, 17), Answer::kPlus1000);
  }
  ::unlink(garbage.c_str());
  auto status = read_status(sidecar.name(), connect_options(10s));
  ASSERT_TRUE(status.ok());
  EXPECT_EQ(status->reloads, 0u);
  EXPECT_EQ(status->failed_reloads, 3u);
  EXPECT_EQ(sidecar.stop(), 0) << sidecar.log();
}

// SIGHUP (systemd's `kill -HUP`, or an operator's) reloads the file the sidecar serves: replaced
// on disk, the new contents answer.
TEST(Reload, SighupReloadsTheModelFile) {
  const std::string file = testing::test_runtime_dir() + "/" + unique_name("hup") + ".pt";
  std::filesystem::copy_file(model_path("plus_1000"), file, std::filesystem::copy_options::overwrite_existing);
  SidecarProcess sidecar(unique_name("reload-hup"), {"--model", file, "--warmup-shape", "1x16"});
  ASSERT_TRUE(sidecar.wait_ready()) << sidecar.log();
  Client client = connect_or_fail(sidecar.name(), connect_options(10s));
  EXPECT_EQ(ask(client, 1), Answer::kPlus1000);
  std::filesystem::copy_file(model_path("plus_2000"), file, std::filesystem::copy_options::overwrite_existing);
  ASSERT_EQ(::kill(sidecar.pid(), SIGHUP), 0);
  ASSERT_TRUE(wait_until([&] {
    auto status = read_status(sidecar.name(), connect_options(10s));
    return status.ok() && status->reloads == 1;
  }, 120s)) << sidecar.log();
  EXPECT_EQ(ask(client, 2), Answer::kPlus2000);
  EXPECT_EQ(sidecar.stop(), 0) << sidecar.log();
  ::unlink(file.c_str());
}

// With a config file, a reload that names no file reads it again: the model changed there is the
// one loaded (systemctl reload after editing NAME.toml).
TEST(Reload, AReloadReadsTheModelFromTheConfigFileAgain) {
  const std::string config = testing::test_runtime_dir() + "/" + unique_name("reload-config") + ".toml";
  const auto write_config = [&](const std::string& model) {
    std::ofstream(config) << "model = \"" << model_path(model) << "\"\nwarmup-shape = [\"1x16\"]\n";
  };
  write_config("plus_1000");
  SidecarProcess sidecar(unique_name("reload-config"), {"--config", config});
  ASSERT_TRUE(sidecar.wait_ready()) << sidecar.log();
  Client client = connect_or_fail(sidecar.name(), connect_options(10s));
  EXPECT_EQ(ask(client, 1), Answer::kPlus1000);
  write_config("plus_2000");
  auto reloaded = reload_model(sidecar.name(), "", connect_options(120s));
  ASSERT_TRUE(reloaded.ok()) << reloaded.message();
  EXPECT_NE(reloaded->find("plus_2000"), std::string::npos) << *reloaded;
  EXPECT_EQ(ask(client, 2), Answer::kPlus2000);
  EXPECT_NE(client.model().model_path.find("plus_2000"), std::string::npos) << client.model().model_path;
  EXPECT_EQ(sidecar.stop(), 0) << sidecar.log();
  ::unlink(config.c_str());
}

// Swapping the model is the operator's: a client of another user, admitted to serve requests, is
// refused a reload, and the model stays.
TEST(Reload, OnlyTheSidecarsUserOrRootMayReload) {
  if (!testing::running_as_root()) GTEST_SKIP() << "needs root to act as another user";
  SidecarProcess sidecar(unique_name("reload-who"), plus_args({"--socket-mode", "0666"}));
  ASSERT_TRUE(sidecar.wait_ready()) << sidecar.log();
  const std::string name = sidecar.name();
  const int refused = testing::in_child(
      [&] {
        auto client = Client::connect(name, connect_options(10s));
        if (!client.ok()) return false;  // it may serve requests...
        auto reloaded = reload_model(name, model_path("plus_2000"), connect_options(10s));
        return !reloaded.ok() && reloaded.code() == ErrorCode::kPermissionDenied &&
               reloaded.message().find("may reload") != std::string::npos;  // ...but not reload
      },
      testing::kNobody, testing::kNogroup);
  EXPECT_EQ(refused, 0) << sidecar.log();
  Client client = connect_or_fail(name, connect_options(10s));
  EXPECT_EQ(ask(client, 3), Answer::kPlus1000);
  EXPECT_EQ(sidecar.stop(), 0) << sidecar.log();
}

}  // namespace
}  // namespace sidecar
