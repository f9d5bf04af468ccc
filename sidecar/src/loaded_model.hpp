// A model as the workers run it: the runner, the admission rules its signatures give, and what its
// warm-up reported. A reload makes a new one beside the old; each request runs wholly on the one
// its worker was warmed on.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "admission.hpp"
#include "model_runner.hpp"

namespace sidecar {

struct LoadedModel {
  std::unique_ptr<ModelRunner> runner;
  AdmissionRules rules;
  std::string path;
  std::vector<WarmupResult> warmup;  // one per declared signature, in their order
};

}  // namespace sidecar
