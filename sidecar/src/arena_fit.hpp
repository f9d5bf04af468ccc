// Whether the requests the sidecar was warmed up for fit a client's default arena. A client lays a
// request out in its arena as [cancel word][inputs][outputs] (clientlib's submit), and a request
// whose outputs do not fit is answered kOutputTooLarge every time: with the shapes known after
// warm-up, that is a start-up error, said once, with the --arena-bytes that would do.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "model_runner.hpp"
#include "sidecar/shared/error.hpp"

namespace sidecar {

// Bytes of arena one request of these inputs and outputs takes, laid out as the client does.
std::uint64_t arena_bytes_for_request(std::span<const TensorShape> inputs, std::span<const TensorShape> outputs);

// "1x3x224x224", or "1x8:int64,1x8" for two inputs: --warmup-shape's spelling.
std::string shape_flag_text(std::span<const TensorShape> signature);

// kOutputTooLarge naming the first warmed signature (at `max_batch` rows when it is batchable, the
// most a request may carry) that does not fit `arena_bytes`, and the --arena-bytes that would.
Done check_requests_fit_arena(std::span<const WarmupResult> warmed, std::uint32_t max_batch, std::uint64_t arena_bytes);

}  // namespace sidecar
