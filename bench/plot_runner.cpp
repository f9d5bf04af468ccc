#include "plot_runner.hpp"

#include <spawn.h>
#include <sys/wait.h>

#include <cstring>
#include <stdexcept>
#include <vector>

extern char** environ;

namespace sidecar::bench {
namespace {

// The script's exit code; it prints its own reason on stderr.
int run_plot_script(std::vector<std::string> args) {
  args.insert(args.begin(), {PLOT_PYTHON, PLOT_SCRIPT});
  std::vector<char*> argv;
  for (auto& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);
  pid_t pid = -1;
  const int rc = ::posix_spawn(&pid, PLOT_PYTHON, nullptr, nullptr, argv.data(), environ);
  if (rc != 0) throw std::runtime_error(std::string("cannot run ") + PLOT_PYTHON + ": " + std::strerror(rc));
  int status = 0;
  if (::waitpid(pid, &status, 0) != pid) throw std::runtime_error("lost the plot script's process");
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

}  // namespace

void check_plotting() {
  if (run_plot_script({"--check"}) != 0) {
    throw std::runtime_error(std::string("--plot needs ") + PLOT_PYTHON +
                             " with matplotlib (Debian: python3-matplotlib, which scripts/deps.sh installs)");
  }
}

void plot_rows(const std::string& json_path, const std::string& out_dir) {
  std::fflush(stdout);  // the table first, then the script's lines
  const int code = run_plot_script({"--out", out_dir, json_path});
  if (code != 0) throw std::runtime_error(std::string(PLOT_SCRIPT) + " failed with exit code " + std::to_string(code));
}

}  // namespace sidecar::bench
