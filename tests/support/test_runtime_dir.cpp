// Every test binary gets a runtime directory of its own, made when it starts and exported as
// $INFERENCE_SIDECAR_RUNTIME_DIR, so that the sidecars it starts and the clients it connects (in
// this process and in children) meet there, away from /run/inference-sidecar and from test
// binaries running at the same time. Traversable by all, for the tests that run clients as
// another user.
#include "test_runtime_dir.hpp"

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <stdexcept>

#include "sidecar/shared/runtime_dir.hpp"

namespace sidecar::testing {
namespace {

struct TestRuntimeDir {
  std::string path;
  pid_t owner = 0;
  TestRuntimeDir() {
    char pattern[] = "/tmp/sidecar-tests-XXXXXX";
    if (::mkdtemp(pattern) == nullptr || ::chmod(pattern, 0755) != 0) {
      throw std::runtime_error("cannot make a runtime directory for the tests");
    }
    path = pattern;
    owner = ::getpid();
    ::setenv(kRuntimeDirEnvironment, path.c_str(), 1);
  }
  ~TestRuntimeDir() {
    if (::getpid() != owner) return;  // a forked child leaving
    std::error_code ignored;
    std::filesystem::remove_all(path, ignored);
  }
};

TestRuntimeDir& directory() {
  static TestRuntimeDir instance;
  return instance;
}

// Made before main(), so that even a test that only connects finds it in its environment.
[[maybe_unused]] const std::string& made_at_start = directory().path;

}  // namespace

const std::string& test_runtime_dir() { return directory().path; }

}  // namespace sidecar::testing
