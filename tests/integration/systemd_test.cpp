// The systemd contract: READY=1 only once the sidecar can serve (every worker warmed, its status
// page says ready), STOPPING=1 on SIGTERM, and a unit file that systemd-analyze accepts.
//
// The notify tests stand in for systemd: they bind the AF_UNIX datagram socket that NOTIFY_SOCKET
// names and read what sd_notify sends. The unit tests need systemd-analyze / systemd-sysusers and
// skip when the systemd package is not installed; no running systemd is needed.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "sidecar/client.hpp"
#include "sidecar_process.hpp"

namespace sidecar {
namespace {

using testing::model_path;
using testing::socket_exists;
using testing::SidecarProcess;
using testing::unique_name;
using namespace std::chrono_literals;

const std::string kUnitPath = std::string(SIDECAR_SOURCE_DIR) + "/systemd/inference-sidecar@.service";
const std::string kSysusersPath = std::string(SIDECAR_SOURCE_DIR) + "/systemd/inference-sidecar.sysusers.conf";

constexpr int kWorkers = 2;
// The demo CNN with small channels: 1 MiB holds a 1x3x224x224 float32 input.
const std::vector<std::string> kDemoArgs = {"--model",
                                            model_path("demo"),
                                            "--warmup-shape",
                                            "1x3x224x224",
                                            "--workers",
                                            std::to_string(kWorkers),
                                            "--max-clients",
                                            "2",
                                            "--arena-bytes",
                                            "1M",
                                            "--warmup-iterations",
                                            "2"};

// A fresh directory under /tmp, removed with everything in it when the test ends.
class TemporaryDirectory {
 public:
  TemporaryDirectory() {
    std::string pattern = "/tmp/sidecar-systemd-XXXXXX";
    if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = pattern;
  }
  ~TemporaryDirectory() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  TemporaryDirectory(const TemporaryDirectory&) = delete;
  TemporaryDirectory& operator=(const TemporaryDirectory&) = delete;

  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// The receiving end of NOTIFY_SOCKET, as systemd binds it.
class NotifySocket {
 public:
  explicit NotifySocket(const std::string& path) : path_(path) {
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0) throw std::runtime_error("socket failed");
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    if (path.size() >= sizeof(address.sun_path)) throw std::runtime_error("socket path too long: " + path);
    std::copy(path.begin(), path.end(), address.sun_path);
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
      throw std::runtime_error("bind " + path + " failed");
    }
    // Short, so the reading loop notices a sidecar that exited without notifying.
    timeval timeout{0, 100'000};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  }
  ~NotifySocket() {
    ::close(fd_);
    ::unlink(path_.c_str());
  }
  NotifySocket(const NotifySocket&) = delete;
  NotifySocket& operator=(const NotifySocket&) = delete;

  // One datagram, or nothing within the receive timeout. A plain recv drops the SCM_CREDENTIALS
  // that sd_notify may attach.
  std::optional<std::string> receive() {
    char buffer[4096];
    const ssize_t bytes = ::recv(fd_, buffer, sizeof(buffer), 0);
    if (bytes < 0) return std::nullopt;
    return std::string(buffer, static_cast<std::size_t>(bytes));
  }

 private:
  std::string path_;
  int fd_ = -1;
};

// sd_notify sends newline-separated assignments; true when one of them is exactly `assignment`.
bool has_assignment(const std::string& message, const std::string& assignment) {
  std::istringstream lines(message);
  for (std::string line; std::getline(lines, line);) {
    if (line == assignment) return true;
  }
  return false;
}

std::size_t count_occurrences(const std::string& text, const std::string& needle) {
  std::size_t count = 0;
  for (auto at = text.find(needle); at != std::string::npos; at = text.find(needle, at + needle.size())) ++count;
  return count;
}

// What the log and the sidecar's status page said at the moment one notification was read.
struct Observation {
  std::string message;
  std::size_t warmed_lines = 0;
  bool log_says_ready = false;
  std::optional<std::string> state;  // empty: no socket to ask yet
};

Observation observe(const std::string& message, const SidecarProcess& sidecar) {
  Observation seen;
  seen.message = message;
  const std::string log = sidecar.log();
  seen.warmed_lines = count_occurrences(log, "warmed (");
  seen.log_says_ready = log.find("] ready:") != std::string::npos;
  ConnectOptions once;
  once.timeout = std::chrono::milliseconds(0);
  // Not listening yet when STATUS=warming up is sent.
  if (auto status = read_status(sidecar.name(), once); status.ok()) seen.state = status->state;
  return seen;
}

std::string describe(const std::vector<Observation>& observations) {
  std::ostringstream text;
  for (const Observation& seen : observations) {
    std::string message = seen.message;
    std::replace(message.begin(), message.end(), '\n', '|');
    text << "  '" << message << "': " << seen.warmed_lines << " warmed lines, log ready " << seen.log_says_ready
         << ", state " << (seen.state ? *seen.state : "none") << "\n";
  }
  return text.str();
}

// Reads notifications until one holds `assignment`, the sidecar exits, or a hang guard (not a
// timing assertion) runs out. Each message is observed the moment it is read.
bool read_until(NotifySocket& socket, SidecarProcess& sidecar, const std::string& assignment,
                std::vector<Observation>& observations) {
  const auto give_up = std::chrono::steady_clock::now() + 120s;
  while (std::chrono::steady_clock::now() < give_up) {
    if (auto message = socket.receive()) {
      observations.push_back(observe(*message, sidecar));
      if (has_assignment(*message, assignment)) return true;
      continue;
    }
    if (sidecar.has_exited()) {
      // Datagrams sent just before the exit are still queued.
      while (auto message = socket.receive()) {
        observations.push_back(observe(*message, sidecar));
        if (has_assignment(*message, assignment)) return true;
      }
      return false;
    }
  }
  return false;
}

TEST(SystemdNotify, ReadyOnlyAfterEveryWorkerWarmedAndStoppingOnSigterm) {
  TemporaryDirectory directory;
  const std::string socket_path = directory.path() + "/notify";
  NotifySocket socket(socket_path);
  const std::string name = unique_name("sd-notify");
  SidecarProcess sidecar(name, kDemoArgs, {"NOTIFY_SOCKET=" + socket_path});

  std::vector<Observation> observations;
  ASSERT_TRUE(read_until(socket, sidecar, "READY=1", observations)) << "no READY=1; messages:\n"
                                                                    << describe(observations) << sidecar.log();

  // read_until stopped at the first READY=1, observed as it was read: by then every worker had
  // logged its warm-up, the ready line was out, and the status page said ready.
  const Observation& ready = observations.back();
  EXPECT_EQ(ready.warmed_lines, static_cast<std::size_t>(kWorkers)) << describe(observations) << sidecar.log();
  EXPECT_TRUE(ready.log_says_ready) << describe(observations) << sidecar.log();
  ASSERT_TRUE(ready.state.has_value()) << describe(observations);
  EXPECT_EQ(*ready.state, "ready") << describe(observations);
  EXPECT_TRUE(has_assignment(ready.message, "STATUS=serving")) << describe(observations);
  // The status sent before warm-up shows this test watched the start-up, not only its end.
  ASSERT_GE(observations.size(), 2u) << describe(observations);
  EXPECT_TRUE(has_assignment(observations.front().message, "STATUS=warming up")) << describe(observations);

  EXPECT_EQ(sidecar.stop(SIGTERM), 0) << sidecar.log();
  std::vector<Observation> after_stop;
  EXPECT_TRUE(read_until(socket, sidecar, "STOPPING=1", after_stop)) << "no STOPPING=1; messages:\n"
                                                                     << describe(after_stop) << sidecar.log();
  EXPECT_FALSE(socket_exists(sidecar.name()));
}

// Type=notify reports a start-up failure instead of a service that claims to be ready, and
// Restart=on-failure gets a non-zero exit code to act on.
TEST(SystemdNotify, NoReadyWhenWarmupFails) {
  TemporaryDirectory directory;
  const std::string socket_path = directory.path() + "/notify";
  NotifySocket socket(socket_path);
  // The demo CNN takes 3 channels; 5 makes the first warm-up forward throw.
  const std::string name = unique_name("sd-nowarm");
  SidecarProcess sidecar(name,
                         {"--model", model_path("demo"), "--warmup-shape", "1x5x224x224", "--workers", "1",
                          "--max-clients", "2", "--arena-bytes", "2M"},
                         {"NOTIFY_SOCKET=" + socket_path});

  std::vector<Observation> observations;
  EXPECT_FALSE(read_until(socket, sidecar, "READY=1", observations)) << describe(observations);
  EXPECT_EQ(sidecar.wait_exit(), 1) << sidecar.log();
  EXPECT_FALSE(socket_exists(sidecar.name()));
}

// Under the unit, systemd makes /run/inference-sidecar (RuntimeDirectory=) and passes it as
// $RUNTIME_DIRECTORY: the sidecar serves there, and a client pointed there finds it.
TEST(SystemdRuntimeDirectory, TheSidecarServesFromTheDirectorySystemdMade) {
  TemporaryDirectory directory;
  ASSERT_EQ(::chmod(directory.path().c_str(), 0750), 0);
  const std::string name = unique_name("sd-rundir");
  // The test binary points every sidecar at its own directory; this one must find systemd's.
  SidecarProcess sidecar(name, {"--model", model_path("tiny"), "--warmup-shape", "1x64"},
                         {"INFERENCE_SIDECAR_RUNTIME_DIR=", "RUNTIME_DIRECTORY=" + directory.path()});
  ASSERT_TRUE(sidecar.wait_ready()) << sidecar.log();
  EXPECT_TRUE(std::filesystem::exists(directory.path() + "/" + name + ".sock")) << sidecar.log();
  EXPECT_TRUE(std::filesystem::exists(directory.path() + "/" + name + ".lock"));
  ConnectOptions options;
  options.runtime_dir = directory.path();
  auto client = Client::connect(name, options);
  EXPECT_TRUE(client.ok()) << client.message();
  EXPECT_EQ(sidecar.stop(), 0);
  EXPECT_FALSE(std::filesystem::exists(directory.path() + "/" + name + ".sock"));
}

// Path of `command` on PATH, or "" when it is not installed.
std::string find_on_path(const std::string& command) {
  const char* path = std::getenv("PATH");
  std::istringstream directories(path ? path : "/usr/bin:/bin");
  for (std::string directory; std::getline(directories, directory, ':');) {
    std::string candidate = directory + "/" + command;
    if (!directory.empty() && ::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return {};
}

struct CommandResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr
};

CommandResult run_command(const std::string& command_line) {
  CommandResult result;
  FILE* pipe = ::popen((command_line + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return result;
  char buffer[4096];
  while (std::size_t bytes = std::fread(buffer, 1, sizeof(buffer), pipe)) result.output.append(buffer, bytes);
  const int status = ::pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

std::string read_text(const std::string& path) {
  std::ifstream file(path);
  std::stringstream text;
  text << file.rdbuf();
  return text.str();
}

std::string quoted(const std::string& text) { return "'" + text + "'"; }

std::optional<int> systemd_version(const std::string& systemd_analyze) {
  // First line: "systemd 252 (252.39-1~deb12u2)".
  const CommandResult result = run_command(quoted(systemd_analyze) + " --version");
  int version = 0;
  if (result.exit_code != 0 || std::sscanf(result.output.c_str(), "systemd %d", &version) != 1) return std::nullopt;
  return version;
}

TEST(SystemdUnit, VerifyAcceptsAnInstanceOfTheTemplate) {
  const std::string systemd_analyze = find_on_path("systemd-analyze");
  if (systemd_analyze.empty()) GTEST_SKIP() << "systemd-analyze is not installed (package systemd)";

  // verify needs an instance name, and checks that ExecStart's and ExecReload's binaries exist:
  // test a copy named inference-sidecar@test.service that runs the binaries just built. The real
  // file stays as is.
  std::string unit = read_text(kUnitPath);
  ASSERT_FALSE(unit.empty()) << kUnitPath;
  const std::string installed = "\nExecStart=/usr/bin/inference-sidecar ";
  const auto at = unit.find(installed);
  ASSERT_NE(at, std::string::npos) << "ExecStart no longer runs /usr/bin/inference-sidecar";
  ASSERT_EQ(unit.find(installed, at + 1), std::string::npos) << "more than one ExecStart";
  unit.replace(at, installed.size(), "\nExecStart=" + std::string(SIDECAR_BINARY) + " ");
  const std::string reload = "\nExecReload=/usr/bin/sidecarctl ";
  const auto reload_at = unit.find(reload);
  ASSERT_NE(reload_at, std::string::npos) << "ExecReload no longer runs /usr/bin/sidecarctl";
  unit.replace(reload_at, reload.size(), "\nExecReload=" + std::string(SIDECARCTL_BINARY) + " ");

  TemporaryDirectory directory;
  const std::string copy = directory.path() + "/inference-sidecar@test.service";
  std::ofstream(copy) << unit;

  // No systemd runs as PID 1 here: --man=no skips man: lookups, --generators=no skips running
  // generators; verify then only loads unit files. --recursive-errors (v250+) keeps failures in
  // the units ours pulls in (tmp.mount, ...) from failing this test.
  std::string command = quoted(systemd_analyze) + " verify --man=no --generators=no";
  if (const auto version = systemd_version(systemd_analyze); version && *version >= 250) {
    command += " --recursive-errors=no";
  }
  const CommandResult result = run_command(command + " " + quoted(copy));
  EXPECT_EQ(result.exit_code, 0) << command << "\n" << result.output;

  // verify warns and still exits 0 for an unknown key or a value it cannot parse.
  std::istringstream lines(result.output);
  for (std::string line; std::getline(lines, line);) {
    if (line.find("inference-sidecar@") == std::string::npos) continue;
    for (const char* complaint : {"Unknown", "Invalid", "Failed to parse", "ignoring"}) {
      if (line.find(complaint) != std::string::npos) {
        ADD_FAILURE() << line;
        break;
      }
    }
  }
}

// Every value assigned to `key` in a unit file (comments skipped).
std::vector<std::string> values_of(const std::string& unit, const std::string& key) {
  std::vector<std::string> values;
  std::istringstream lines(unit);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind(key + "=", 0) == 0) values.push_back(line.substr(key.size() + 1));
  }
  return values;
}

using Values = std::vector<std::string>;

// Settings whose loss would break the sidecar or its clients, each explained in the unit file.
TEST(SystemdUnit, KeepsTheSettingsTheSidecarReliesOn) {
  const std::string unit = read_text(kUnitPath);
  ASSERT_FALSE(unit.empty()) << kUnitPath;
  EXPECT_EQ(values_of(unit, "Type"), Values{"notify"});
  EXPECT_EQ(values_of(unit, "NotifyAccess"), Values{"main"});
  // Every setting comes from the instance's config file, not from an environment file.
  EXPECT_EQ(values_of(unit, "ExecStart"),
            Values{"/usr/bin/inference-sidecar --name %i --config /etc/inference-sidecar/%i.toml"});
  EXPECT_EQ(values_of(unit, "EnvironmentFile"), Values{});
  EXPECT_EQ(values_of(unit, "User"), Values{"inference-sidecar"});
  EXPECT_EQ(values_of(unit, "Group"), Values{"inference-sidecar"});
  // oneDNN needs W+X memory.
  EXPECT_EQ(values_of(unit, "MemoryDenyWriteExecute"), Values{"no"});
  // Clients trust the sidecar by its runtime directory's owner: a stable uid, the directory shared
  // by every instance and kept when one stops (or it would take the others' sockets with it).
  EXPECT_EQ(values_of(unit, "DynamicUser"), Values{"no"});
  EXPECT_EQ(values_of(unit, "RuntimeDirectory"), Values{"inference-sidecar"});
  EXPECT_EQ(values_of(unit, "RuntimeDirectoryMode"), Values{"0750"});
  EXPECT_EQ(values_of(unit, "RuntimeDirectoryPreserve"), Values{"yes"});
  // LibTorch reads /proc/cpuinfo.
  EXPECT_EQ(values_of(unit, "ProcSubset"), Values{});
}

TEST(SystemdSysusers, CreatesTheUserAndGroupInAnAlternateRoot) {
  const std::string sysusers = find_on_path("systemd-sysusers");
  if (sysusers.empty()) GTEST_SKIP() << "systemd-sysusers is not installed (package systemd)";

  TemporaryDirectory root;
  std::filesystem::create_directories(root.path() + "/etc");
  const std::string command = quoted(sysusers) + " --root=" + quoted(root.path()) + " " + quoted(kSysusersPath);
  const CommandResult result = run_command(command);
  ASSERT_EQ(result.exit_code, 0) << command << "\n" << result.output;
  EXPECT_EQ(result.output.find("gnored"), std::string::npos) << result.output;
  EXPECT_EQ(read_text(root.path() + "/etc/passwd").rfind("inference-sidecar:", 0), 0u) << result.output;
  EXPECT_EQ(read_text(root.path() + "/etc/group").rfind("inference-sidecar:", 0), 0u) << result.output;
}

}  // namespace
}  // namespace sidecar
