// The runtime directory of this test binary (see test_runtime_dir.cpp).
#pragma once

#include <string>

namespace sidecar::testing {

const std::string& test_runtime_dir();

}  // namespace sidecar::testing
