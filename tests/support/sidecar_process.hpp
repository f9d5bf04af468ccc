// Test support: runs the real inference-sidecar binary as a child process.
#pragma once

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "sidecar/shared/runtime_dir.hpp"
#include "test_runtime_dir.hpp"

namespace sidecar::testing {

// Paths baked in by tests/CMakeLists.txt.
inline std::string sidecar_binary() { return SIDECAR_BINARY; }
inline std::string models_dir() { return SIDECAR_MODELS_DIR; }
inline std::string model_path(const std::string& name) { return models_dir() + "/" + name + ".pt"; }

// The tiny model (Linear 64->10) served with its one shape warmed up briefly, then `more` flags.
inline std::vector<std::string> tiny_sidecar_args(std::vector<std::string> more = {}) {
  std::vector<std::string> args{"--model", model_path("tiny"), "--warmup-shape", "1x64", "--warmup-iterations", "3"};
  args.insert(args.end(), more.begin(), more.end());
  return args;
}

// A name no other test (or concurrent ctest job) uses.
inline std::string unique_name(const std::string& prefix) {
  static int counter = 0;
  return prefix + "-" + std::to_string(::getpid()) + "-" + std::to_string(counter++);
}

inline std::string test_socket_path(const std::string& name) { return socket_path(test_runtime_dir(), name); }

inline bool socket_exists(const std::string& name) {
  struct stat info {};
  return ::lstat(test_socket_path(name).c_str(), &info) == 0;
}

class SidecarProcess {
 public:
  // Starts `inference-sidecar --name NAME ARGS...`; stderr and stdout go to a log file. With
  // `as_journal_stream`, $JOURNAL_STREAM names that file, as systemd's does its journal's stream.
  SidecarProcess(std::string name, const std::vector<std::string>& args, const std::vector<std::string>& extra_env = {},
                 bool as_journal_stream = false)
      : name_(std::move(name)), log_path_(unique_log_path(name_)) {
    std::vector<std::string> argv_strings{sidecar_binary(), "--name", name_};
    argv_strings.insert(argv_strings.end(), args.begin(), args.end());
    // Opened here, not in the child: its device and inode must be known before the fork.
    const int log = ::open(log_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    std::string journal_stream;
    struct stat log_info {};
    if (as_journal_stream && log >= 0 && ::fstat(log, &log_info) == 0) {
      journal_stream = "JOURNAL_STREAM=" + std::to_string(log_info.st_dev) + ":" + std::to_string(log_info.st_ino);
    }
    pid_ = ::fork();
    if (pid_ < 0) throw std::runtime_error("fork failed");
    if (pid_ == 0) {
      if (log >= 0) {
        ::dup2(log, 1);
        ::dup2(log, 2);
      }
      for (const std::string& assignment : extra_env) ::putenv(const_cast<char*>(assignment.c_str()));
      if (!journal_stream.empty()) ::putenv(journal_stream.data());
      std::vector<char*> argv;
      for (auto& arg : argv_strings) argv.push_back(arg.data());
      argv.push_back(nullptr);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    if (log >= 0) ::close(log);
  }

  ~SidecarProcess() {
    if (pid_ > 0 && !exited_) {
      // A test that failed half-way: the killed sidecar's socket must not outlive the test run.
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
      ::unlink(test_socket_path(name_).c_str());
    }
    if (!keep_log_) ::unlink(log_path_.c_str());
  }

  SidecarProcess(const SidecarProcess&) = delete;
  SidecarProcess& operator=(const SidecarProcess&) = delete;

  const std::string& name() const { return name_; }
  pid_t pid() const { return pid_; }

  // One file per process, even for two processes of one name: a log left by the first must not
  // make the second look ready.
  static std::string unique_log_path(const std::string& name) {
    static int started = 0;
    return "/tmp/sidecar-test-" + name + "-" + std::to_string(started++) + ".log";
  }

  // Waits until the log says ready, or the process exits. True when ready.
  bool wait_ready(std::chrono::seconds timeout = std::chrono::seconds(120)) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      if (has_exited()) return false;
      if (log().find("] ready:") != std::string::npos) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return false;
  }

  // Sends `signal_number` and waits for the exit status (-1 when it did not exit in time).
  int stop(int signal_number = SIGTERM, std::chrono::seconds timeout = std::chrono::seconds(60)) {
    if (!exited_) ::kill(pid_, signal_number);
    return wait_exit(timeout);
  }

  int wait_exit(std::chrono::seconds timeout = std::chrono::seconds(120)) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!has_exited()) {
      if (std::chrono::steady_clock::now() >= deadline) return -1;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return exit_code_;
  }

  bool has_exited() {
    if (exited_) return true;
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      exited_ = true;
      exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    return exited_;
  }

  std::string log() const {
    std::ifstream file(log_path_);
    std::stringstream text;
    text << file.rdbuf();
    return text.str();
  }

  void keep_log() { keep_log_ = true; }

 private:
  std::string name_;
  std::string log_path_;
  pid_t pid_ = -1;
  bool exited_ = false;
  int exit_code_ = -1;
  bool keep_log_ = false;
};

// One sidecar shared by all tests of a suite (starting LibTorch costs seconds):
//   class MySuite : public SuiteSidecar<MySuite> {
//    public:
//     static std::vector<std::string> sidecar_args() { return {"--model", ...}; }
//   };
template <typename Suite>
class SuiteSidecar : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    sidecar_ = new SidecarProcess(unique_name("suite"), Suite::sidecar_args());
    ASSERT_TRUE(sidecar_->wait_ready()) << sidecar_->log();
  }
  static void TearDownTestSuite() {
    EXPECT_EQ(sidecar_->stop(), 0) << sidecar_->log();
    delete sidecar_;
    sidecar_ = nullptr;
  }
  static inline SidecarProcess* sidecar_ = nullptr;
};

}  // namespace sidecar::testing
