// What an operator sees of a running sidecar: the metrics (sidecarctl stats in every format, the
// --metrics-file), `sidecarctl health`, and the systemd watchdog, against the real daemon.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <string>
#include <thread>

#include "child_process.hpp"
#include "client_helpers.hpp"
#include "commands.hpp"
#include "sidecar/client.hpp"
#include "sidecar_process.hpp"

namespace sidecar {
namespace {

using namespace std::chrono_literals;
using testing::connect_options;
using testing::connect_or_fail;
using testing::describe;
using testing::kTinyShape;
using testing::model_path;
using testing::parse_prometheus;
using testing::random_values;
using testing::run_sidecarctl;
using testing::ScratchDirectory;
using testing::SidecarProcess;
using testing::unique_name;
using testing::wait_until;

constexpr const char* kTinySignature = "[1, 64] float32";

double sample(const std::map<std::string, double>& samples, const std::string& key) {
  const auto found = samples.find(key);
  return found == samples.end() ? -1 : found->second;
}

// A sample's key as parse_prometheus() writes it: labels sorted by name.
std::string key(const std::string& metric, std::map<std::string, std::string> labels) {
  std::string text = metric + "{";
  for (const auto& [label, value] : labels) text += (text.back() == '{' ? "" : ",") + label + "=" + value;
  return text + "}";
}

std::map<std::string, double> prometheus_of(const std::string& name) {
  const testing::CommandResult stats = run_sidecarctl({"stats", "--name", name, "--prometheus"});
  if (stats.exit_code != 0) throw std::runtime_error(describe(stats));
  return parse_prometheus(stats.out);
}

// Counts in the metrics equal the requests sent, by status, by signature and by histogram; the
// text parses as Prometheus's format (read by prometheus_client, not by us).
TEST(Metrics, CountWhatWasSentByStatusAndSignature) {
  SidecarProcess sidecar(unique_name("metrics"),
                         {"--model", model_path("tiny"), "--warmup-shape", "1x64", "--cache-bytes", "0"});
  ASSERT_TRUE(sidecar.wait_ready()) << sidecar.log();
  Client client = connect_or_fail(sidecar.name(), connect_options(10s));
  constexpr int kGood = 40;
  constexpr int kBad = 7;
  for (int i = 0; i < kGood; ++i) {
    const std::vector<float> input = random_values(64, static_cast<std::uint32_t>(i));
    ASSERT_TRUE(client.infer(TensorView::of(input, kTinyShape), 5s).ok());
  }
  const std::int64_t wrong_shape[] = {1, 32};
  for (int i = 0; i < kBad; ++i) {
    const std::vector<float> input = random_values(32, static_cast<std::uint32_t>(i));
    auto refused = client.infer(TensorView::of(input, wrong_shape), 5s);
    ASSERT_FALSE(refused.ok());
    EXPECT_EQ(refused.code(), ErrorCode::kRejected) << refused.message();
  }

  const auto samples = prometheus_of(sidecar.name());
  const std::string name = sidecar.name();
  EXPECT_EQ(sample(samples, key("inference_sidecar_requests_total", {{"sidecar", name}, {"status", "ok"}})), kGood);
  EXPECT_EQ(sample(samples, key("inference_sidecar_requests_total", {{"sidecar", name}, {"status", "invalid_request"}})),
            kBad);
  EXPECT_EQ(sample(samples, key("inference_sidecar_requests_total", {{"sidecar", name}, {"status", "model_error"}})), 0);
  for (const std::string family : {"inference_sidecar_queue_wait_seconds", "inference_sidecar_inference_seconds",
                                   "inference_sidecar_end_to_end_seconds"}) {
    const std::map<std::string, std::string> labels{{"sidecar", name}, {"signature", kTinySignature}};
    EXPECT_EQ(sample(samples, key(family + "_count", labels)), kGood) << family;
    EXPECT_EQ(sample(samples, key(family + "_bucket", {{"le", "+Inf"}, {"sidecar", name}, {"signature", kTinySignature}})),
              kGood)
        << family;
    EXPECT_GT(sample(samples, key(family + "_sum", labels)), 0) << family;
  }
  // Refused requests ran no forward: they count under "other", with no inference time.
  const std::map<std::string, std::string> other{{"sidecar", name}, {"signature", "other"}};
  EXPECT_EQ(sample(samples, key("inference_sidecar_end_to_end_seconds_count", other)), kBad);
  EXPECT_EQ(sample(samples, key("inference_sidecar_inference_seconds_count", other)), 0);
  EXPECT_EQ(sample(samples, key("inference_sidecar_batch_size_count", {{"sidecar", name}})), kGood);
  EXPECT_EQ(sample(samples, key("inference_sidecar_batch_size_bucket", {{"le", "1"}, {"sidecar", name}})), kGood);
  EXPECT_EQ(sample(samples, key("inference_sidecar_clients", {{"sidecar", name}})), 1);
  EXPECT_EQ(sample(samples, key("inference_sidecar_connections_total", {{"outcome", "admitted"}, {"sidecar", name}})), 1);
  EXPECT_EQ(sample(samples, key("inference_sidecar_ready", {{"sidecar", name}})), 1);

  // The same counts for programs and for people.
  const testing::CommandResult json = run_sidecarctl({"stats", "--name", name, "--json"});
  ASSERT_EQ(json.exit_code, 0) << describe(json);
  const testing::CommandResult checked = testing::run_program(
      {"/usr/bin/python3", "-c",
       "import json,sys; m=json.load(sys.stdin); "
       "assert m['requests']['ok']==" + std::to_string(kGood) + ", m['requests']; "
       "assert m['requests']['invalid_request']==" + std::to_string(kBad) + "; "
       "row=[s for s in m['signatures'] if s['signature']=='" + kTinySignature + "'][0]; "
       "assert row['end_to_end']['count']==" + std::to_string(kGood) + ", row"},
      json.out);
  EXPECT_EQ(checked.exit_code, 0) << describe(checked) << json.out;
  const testing::CommandResult text = run_sidecarctl({"stats", "--name", name});
  ASSERT_EQ(text.exit_code, 0) << describe(text);
  EXPECT_NE(text.out.find("requests: " + std::to_string(kGood + kBad) + " (ok " + std::to_string(kGood) +
                          ", invalid_request " + std::to_string(kBad) + ")"),
            std::string::npos)
      << text.out;
}

// Hits in clients and in the sidecar, and misses, each counted where it happened.
TEST(Metrics, CountCacheHitsOnEachSide) {
  SidecarProcess sidecar(unique_name("metrics-cache"), {"--model", model_path("tiny"), "--warmup-shape", "1x64"});
  ASSERT_TRUE(sidecar.wait_ready()) << sidecar.log();
  Client client = connect_or_fail(sidecar.name(), connect_options(10s));
  const std::vector<float> input = random_values(64, 7);
  ASSERT_TRUE(client.infer(TensorView::of(input, kTinyShape), 5s).ok());  // the miss that stores it
  constexpr int kClientHits = 5;
  constexpr int kSidecarHits = 3;
  for (int i = 0; i < kClientHits; ++i) ASSERT_TRUE(client.infer(TensorView::of(input, kTinyShape), 5s).ok());
  client.set_cache_lookup(CacheLookup::kInSidecar);
  for (int i = 0; i < kSidecarHits; ++i) ASSERT_TRUE(client.infer(TensorView::of(input, kTinyShape), 5s).ok());

  const std::string name = sidecar.name();
  const std::string client_hits = key("inference_sidecar_cache_hits_total", {{"sidecar", name}, {"side", "client"}});
  std::map<std::string, double> samples;
  // Client hits reach the page with the sidecar's next housekeeping pass.
  ASSERT_TRUE(wait_until([&] {
    samples = prometheus_of(name);
    return sample(samples, client_hits) == kClientHits;
  }, 30s)) << sample(samples, client_hits);
  EXPECT_EQ(sample(samples, key("inference_sidecar_cache_hits_total", {{"sidecar", name}, {"side", "sidecar"}})),
            kSidecarHits);
  EXPECT_EQ(sample(samples, key("inference_sidecar_cache_misses_total", {{"sidecar", name}})), 1);
  EXPECT_EQ(sample(samples, key("inference_sidecar_cache_entries", {{"sidecar", name}})), 1);
  // Answered by the sidecar: the miss and its hits; the client's own hits never reached it.
  EXPECT_EQ(sample(samples, key("inference_sidecar_requests_total", {{"sidecar", name}, {"status", "ok"}})),
            1 + kSidecarHits);
}

// --metrics-file: the same text, rewritten while the sidecar serves, always whole.
TEST(Metrics, FileIsRewrittenWithTheCounts) {
  ScratchDirectory scratch;
  const std::string file = scratch.file("sidecar.prom");
  SidecarProcess sidecar(unique_name("metrics-file"),
                         {"--model", model_path("tiny"), "--warmup-shape", "1x64", "--cache-bytes", "0",
                          "--metrics-file", file, "--metrics-interval-ms", "200"});
  ASSERT_TRUE(sidecar.wait_ready()) << sidecar.log();
  Client client = connect_or_fail(sidecar.name(), connect_options(10s));
  constexpr int kRequests = 12;
  for (int i = 0; i < kRequests; ++i) {
    const std::vector<float> input = random_values(64, static_cast<std::uint32_t>(i));
    ASSERT_TRUE(client.infer(TensorView::of(input, kTinyShape), 5s).ok());
  }
  const std::string ok = key("inference_sidecar_requests_total", {{"sidecar", sidecar.name()}, {"status", "ok"}});
  std::map<std::string, double> samples;
  ASSERT_TRUE(wait_until([&] {
    if (!std::filesystem::exists(file)) return false;
    samples = parse_prometheus(testing::read_text(file));  // throws on a torn or malformed file
    return sample(samples, ok) == kRequests;
  }, 30s)) << sample(samples, ok) << "\n" << sidecar.log();
  EXPECT_FALSE(std::filesystem::exists(file + ".tmp"));
}

int health(const std::string& name, const std::string& timeout_ms) {
  return run_sidecarctl({"health", "--name", name, "--timeout-ms", timeout_ms}).exit_code;
}

// One exit code per answer a probe acts on: ready (0), warming up (10), hung (11), not running (1).
TEST(Health, TellsReadyWarmingHungAndGone) {
  EXPECT_EQ(health(unique_name("nobody-home"), "300"), 1);

  // The demo CNN warmed up many times over on two workers takes seconds: long enough to ask.
  SidecarProcess warming(unique_name("health-warm"), {"--model", model_path("demo"), "--warmup-shape",
                                                      "1x3x224x224", "--warmup-iterations", "400"});
  ASSERT_TRUE(wait_until([&] { return testing::socket_exists(warming.name()); }, 60s)) << warming.log();
  const testing::CommandResult during = run_sidecarctl({"health", "--name", warming.name(), "--timeout-ms", "2000"});
  EXPECT_EQ(during.exit_code, 10) << describe(during);

  SidecarProcess sidecar(unique_name("health"), {"--model", model_path("tiny"), "--warmup-shape", "1x64"});
  ASSERT_TRUE(sidecar.wait_ready()) << sidecar.log();
  const testing::CommandResult ready = run_sidecarctl({"health", "--name", sidecar.name(), "--timeout-ms", "5000"});
  EXPECT_EQ(ready.exit_code, 0) << describe(ready);
  EXPECT_NE(ready.out.find("ready"), std::string::npos) << ready.out;

  // Frozen: the socket still takes the connection (the kernel's backlog), and nothing answers.
  ASSERT_EQ(::kill(sidecar.pid(), SIGSTOP), 0);
  const testing::CommandResult hung = run_sidecarctl({"health", "--name", sidecar.name(), "--timeout-ms", "500"});
  ::kill(sidecar.pid(), SIGCONT);
  EXPECT_EQ(hung.exit_code, 11) << describe(hung);
  EXPECT_NE(hung.err.find("hung"), std::string::npos) << hung.err;
  EXPECT_EQ(health(sidecar.name(), "5000"), 0);

  EXPECT_EQ(sidecar.stop(), 0);
  EXPECT_EQ(health(sidecar.name(), "300"), 1);
}

// Another user, whom the socket does not let in, is told so with its own exit code.
TEST(Health, TellsPermissionDenied) {
  if (!testing::running_as_root()) GTEST_SKIP() << "needs root to act as another user";
  SidecarProcess sidecar(unique_name("health-denied"), {"--model", model_path("tiny"), "--warmup-shape", "1x64"});
  ASSERT_TRUE(sidecar.wait_ready()) << sidecar.log();
  const std::string name = sidecar.name();
  const int denied = testing::in_child(
      [&] {
        const testing::CommandResult health = run_sidecarctl({"health", "--name", name, "--timeout-ms", "2000"});
        if (health.exit_code != 9) std::fprintf(stderr, "%s\n", describe(health).c_str());
        return health.exit_code == 9;
      },
      testing::kNobody, testing::kNogroup);
  EXPECT_EQ(denied, 0);
  EXPECT_EQ(sidecar.stop(), 0);
}

// A datagram socket standing in for systemd's notify socket.
class NotifySocket {
 public:
  explicit NotifySocket(const std::string& path) : path_(path) {
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    path.copy(address.sun_path, sizeof address.sun_path - 1);
    if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
      throw std::runtime_error("cannot bind the notify socket");
    }
  }
  ~NotifySocket() {
    ::close(fd_);
    ::unlink(path_.c_str());
  }
  // WATCHDOG=1 messages that arrive within `window`.
  int watchdog_pings(std::chrono::milliseconds window) {
    int pings = 0;
    const auto until = std::chrono::steady_clock::now() + window;
    while (std::chrono::steady_clock::now() < until) {
      char message[512];
      const ssize_t got = ::recv(fd_, message, sizeof message - 1, MSG_DONTWAIT);
      if (got > 0) {
        message[got] = 0;
        if (std::string(message).find("WATCHDOG=1") != std::string::npos) ++pings;
        continue;
      }
      std::this_thread::sleep_for(10ms);
    }
    return pings;
  }
  // Reads what was sent so far.
  void drain() {
    char message[512];
    while (::recv(fd_, message, sizeof message, MSG_DONTWAIT) > 0) {
    }
  }

 private:
  std::string path_;
  int fd_ = -1;
};

// The watchdog hears from a sidecar whose scheduling loop moves, and not from a frozen one: systemd
// (WatchdogSec=) restarts it. `sidecarctl health` notices the same freeze (Health test above).
TEST(Watchdog, StopsHearingFromAFrozenSidecar) {
  ScratchDirectory scratch;
  NotifySocket notify(scratch.file("notify"));
  SidecarProcess sidecar(unique_name("watchdog"), {"--model", model_path("tiny"), "--warmup-shape", "1x64"},
                         {"NOTIFY_SOCKET=" + scratch.file("notify"), "WATCHDOG_USEC=1000000"});
  ASSERT_TRUE(sidecar.wait_ready()) << sidecar.log();
  EXPECT_GE(notify.watchdog_pings(2000ms), 3) << sidecar.log();
  ASSERT_EQ(::kill(sidecar.pid(), SIGSTOP), 0);
  notify.drain();  // what was sent before the stop
  const int while_stopped = notify.watchdog_pings(2000ms);
  ::kill(sidecar.pid(), SIGCONT);
  EXPECT_EQ(while_stopped, 0);
  EXPECT_GE(notify.watchdog_pings(2000ms), 3) << sidecar.log();
  EXPECT_EQ(sidecar.stop(), 0);
}

// A sidecar that runs but whose every worker is stuck in a forward: its process (and the thread
// that talks to systemd) lives, its scheduling loop does not move, and the watchdog hears nothing.
TEST(Watchdog, StopsHearingWhileEveryWorkerIsStuck) {
  ScratchDirectory scratch;
  NotifySocket notify(scratch.file("notify"));
  SidecarProcess sidecar(unique_name("watchdog-stuck"),
                         {"--model", model_path("spins"), "--warmup-shape", "1x64", "--workers", "2",
                          "--cache-bytes", "0"},
                         {"NOTIFY_SOCKET=" + scratch.file("notify"), "WATCHDOG_USEC=1000000"});
  ASSERT_TRUE(sidecar.wait_ready()) << sidecar.log();
  EXPECT_GE(notify.watchdog_pings(2000ms), 3) << sidecar.log();

  Client client = connect_or_fail(sidecar.name(), connect_options(10s));
  std::vector<float> stuck(64, 0.5f);
  stuck[0] = 2.0f;  // the model loops for as long as its first value exceeds 1.5
  ASSERT_TRUE(client.submit(std::vector<TensorView>{TensorView::of(stuck, kTinyShape)}).ok());
  ASSERT_TRUE(client.submit(std::vector<TensorView>{TensorView::of(stuck, kTinyShape)}).ok());
  std::this_thread::sleep_for(1000ms);  // both taken, and the progress seen before them too old to count
  notify.drain();
  const int while_stuck = notify.watchdog_pings(2000ms);
  EXPECT_EQ(::kill(sidecar.pid(), 0), 0) << "the sidecar must still run";
  EXPECT_EQ(while_stuck, 0) << sidecar.log();
  const testing::CommandResult hung = run_sidecarctl({"health", "--name", sidecar.name(), "--timeout-ms", "500"});
  EXPECT_EQ(hung.exit_code, 11) << describe(hung);
  EXPECT_NE(sidecar.log().find("has made no progress"), std::string::npos) << sidecar.log();
  sidecar.stop(SIGKILL);
}

}  // namespace
}  // namespace sidecar
