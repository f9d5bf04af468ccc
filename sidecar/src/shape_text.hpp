// Shapes as people write them on the command line and in the config file: --warmup-shape's fixed
// shapes ("1x3x224x224", "1x8:int64,1x8" for two inputs) and --accept-shape's ranges ("1x1..512:int64",
// "1x?x80"). Every error is a std::invalid_argument naming what is wrong.
#pragma once

#include <span>
#include <string>

#include "sidecar/shared/signature.hpp"

namespace sidecar {

// Fixed shapes, one entry per model input, separated by commas.
InputSignature parse_signature(const std::string& text);

// Like parse_signature, but a dim may also be `lo..hi` (both included) or `?` (any size).
AcceptedSignature parse_accepted_signature(const std::string& text);

// "1x3x224x224", or "1x8:int64,1x8" for two inputs: --warmup-shape's spelling.
std::string shape_flag_text(std::span<const TensorShape> signature);

}  // namespace sidecar
