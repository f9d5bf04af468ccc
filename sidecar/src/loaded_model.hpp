// A model as the workers run it: the runner, the admission rules its signatures give, what its
// warm-up reported and the output bounds that follow. A reload makes a new one beside the old;
// each request runs wholly on the one its worker was warmed on.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "admission.hpp"
#include "arena_fit.hpp"
#include "model_runner.hpp"
#include "warmed_shapes.hpp"

namespace sidecar {

struct LoadedModel {
  std::unique_ptr<ModelRunner> runner;
  AdmissionRules rules;
  std::string path;
  std::vector<WarmupResult> warmup;  // one per shape of warmed.plan(), in its order
  std::vector<OutputBound> bounds;   // one per accepted signature, once warmed up
  WarmedShapes warmed;               // rules.warmup_plan(), computed once: what every worker warms up on
};

}  // namespace sidecar
