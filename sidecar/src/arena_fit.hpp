// How much room the outputs of a request may need, and whether the largest requests fit a client's
// default arena. A client lays a
// request out in its arena as [cancel word][inputs][outputs] (clientlib's submit), and a request
// whose outputs do not fit is answered kOutputTooLarge: with the shapes known after warm-up, a
// signature whose largest request could never fit is a start-up error, said once, with the
// --arena-bytes that would do.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include <vector>

#include "admission.hpp"
#include "model_runner.hpp"
#include "sidecar/shared/error.hpp"

namespace sidecar {

// Bytes of arena one request of these inputs and outputs takes, laid out as the client does.
std::uint64_t arena_bytes_for_request(std::span<const TensorShape> inputs, std::span<const TensorShape> outputs);

// What the outputs of an accepted signature's requests take at most: the outputs the model gave at
// warm-up on the signature's largest request. A signature with a dim of any size has none (known
// is false): its clients reserve what their arena has left, and the sidecar's check of every
// forward's outputs against the room reserved is all that stands.
struct OutputBound {
  AcceptedSignature accepted;
  std::vector<TensorShape> outputs;
  bool known = false;
};

// One per accepted signature, in their order.
std::vector<OutputBound> output_bounds(const AdmissionRules& rules, std::span<const WarmupResult> warmed);

// kOutputTooLarge naming the first accepted signature whose largest request (at `max_batch` rows
// when it is batchable) does not fit `arena_bytes` with its outputs, and the --arena-bytes that
// would.
Done check_requests_fit_arena(std::span<const OutputBound> bounds, std::uint32_t max_batch, std::uint64_t arena_bytes);

}  // namespace sidecar
