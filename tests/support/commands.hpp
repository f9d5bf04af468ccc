// Test support: running the project's programs (and Python) as child processes and reading what
// they printed.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace sidecar::testing {

struct CommandResult {
  int exit_code = -1;  // -1: did not finish in time
  std::string out;
  std::string err;
};

inline std::string read_text(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  std::stringstream text;
  text << file.rdbuf();
  return text.str();
}

// A scratch directory per test, removed afterwards.
class ScratchDirectory {
 public:
  ScratchDirectory() {
    std::string pattern = (std::filesystem::temp_directory_path() / "sidecar-test-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = pattern;
  }
  ~ScratchDirectory() { std::filesystem::remove_all(path_); }
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  std::string path() const { return path_.string(); }

 private:
  std::filesystem::path path_;
};

// Runs `argv` (argv[0] a path) with `stdin_text` on its standard input; captures stdout and stderr.
inline CommandResult run_program(const std::vector<std::string>& argv_strings, const std::string& stdin_text = {},
                                 std::chrono::seconds limit = std::chrono::seconds(60)) {
  ScratchDirectory scratch;
  const std::string in_path = scratch.file("stdin");
  const std::string out_path = scratch.file("stdout");
  const std::string err_path = scratch.file("stderr");
  std::ofstream(in_path, std::ios::binary) << stdin_text;
  const pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    const int in = ::open(in_path.c_str(), O_RDONLY);
    const int out = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    const int err = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (in < 0 || out < 0 || err < 0) ::_exit(126);
    ::dup2(in, 0);
    ::dup2(out, 1);
    ::dup2(err, 2);
    std::vector<std::string> copies = argv_strings;
    std::vector<char*> argv;
    for (auto& arg : copies) argv.push_back(arg.data());
    argv.push_back(nullptr);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  CommandResult result;
  const auto deadline = std::chrono::steady_clock::now() + limit;
  int status = 0;
  while (::waitpid(pid, &status, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() >= deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
      result.err = argv_strings[0] + " did not finish within " + std::to_string(limit.count()) + " s";
      return result;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  result.out = read_text(out_path);
  result.err = read_text(err_path);
  return result;
}

inline std::string describe(const CommandResult& result) {
  return "exit " + std::to_string(result.exit_code) + "\nstdout: " + result.out + "\nstderr: " + result.err;
}

#ifdef SIDECARCTL_BINARY
inline CommandResult run_sidecarctl(const std::vector<std::string>& args) {
  std::vector<std::string> argv{SIDECARCTL_BINARY};
  argv.insert(argv.end(), args.begin(), args.end());
  return run_program(argv);
}
#endif

#ifdef SIDECAR_SOURCE_DIR
// Prometheus text parsed by the prometheus_client library (Debian's python3-prometheus-client),
// an independent reader of the format: one sample per key "name{label=value,...}" (labels sorted by
// name; values as written, spaces and all).
// Throws when the text does not parse.
inline std::map<std::string, double> parse_prometheus(const std::string& text) {
  const CommandResult parsed =
      run_program({"/usr/bin/python3", std::string(SIDECAR_SOURCE_DIR) + "/tests/support/parse_prometheus.py"}, text);
  if (parsed.exit_code != 0) throw std::runtime_error("the Prometheus text does not parse: " + describe(parsed));
  std::map<std::string, double> samples;
  std::istringstream lines(parsed.out);
  std::string line;
  while (std::getline(lines, line)) {
    const std::size_t tab = line.rfind('\t');
    if (tab != std::string::npos) samples[line.substr(0, tab)] = std::stod(line.substr(tab + 1));
  }
  return samples;
}
#endif

}  // namespace sidecar::testing
