// A model that answers with its inputs (--echo): the sidecar, and the peers it is measured against,
// serve it to show what moving the bytes costs without any forward. No LibTorch here.
#pragma once

#include <memory>

#include "model_runner.hpp"

namespace sidecar {

// Takes `input_count` tensors and returns them as its outputs, in order, whatever their dtype and
// shape. Its warm-up describes each signature's outputs as its inputs.
std::unique_ptr<ModelRunner> make_echo_runner(std::size_t input_count);

// The input count every signature shares: what an echo runner must take. Throws
// std::invalid_argument when there is none (echo needs --warmup-shape) or they differ.
std::size_t echo_input_count(const std::vector<InputSignature>& signatures);

}  // namespace sidecar
