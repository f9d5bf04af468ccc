// How admission_fuzz reads its input, shared with make_seeds.cpp so that the seeds stay valid when
// the layout changes: a fixed header choosing the arena, the clock and the rules, then the bytes of
// a RequestDescriptor (copied into a zeroed one: short inputs are padded with zeros).
#pragma once

#include <cstdint>
#include <vector>

#include "sidecar/shared/descriptors.hpp"
#include "sidecar/shared/signature.hpp"

namespace sidecar::fuzz {

struct AdmissionHeader {
  std::uint8_t arena_choice;  // an index into kArenaSizes; past its end: arena_raw
  std::uint8_t signatures;    // bit i: kSignatures[i] is declared (none: every shape is accepted)
  std::uint8_t input_count;   // forward()'s input count, % 4
  std::uint8_t max_batch;     // --max-batch
  std::uint8_t now_choice;    // 0: now = 0; 1: now = deadline; 2: deadline + 1; else now_raw
  std::uint8_t pad[3];
  std::uint64_t arena_raw;
  std::uint64_t now_raw;
};
static_assert(sizeof(AdmissionHeader) == 24);

inline constexpr std::uint64_t kArenaSizes[] = {
    0, 8, 64, 4096, 64 * 1024, 8ull << 20, 1ull << 40, ~0ull - 63, ~0ull,
};
inline constexpr std::size_t kArenaChoices = sizeof kArenaSizes / sizeof kArenaSizes[0];

inline TensorShape shape(DType dtype, std::initializer_list<std::int64_t> dims) {
  TensorShape s{};
  s.dtype = static_cast<std::uint8_t>(dtype);
  s.rank = static_cast<std::uint8_t>(dims.size());
  std::uint32_t i = 0;
  for (std::int64_t d : dims) s.dims[i++] = d;
  return s;
}

// A declared signature: per input, the smallest and the largest size of each dim (-1: any size).
struct Declared {
  InputSignature smallest;
  InputSignature largest;
};

inline Declared fixed(InputSignature shapes) { return {shapes, shapes}; }

// The signatures a fuzzed sidecar may declare: batchable ones (leading dim 1) and others, one and
// two inputs, a scalar and an empty tensor, ranges of sizes and a dim of any size.
inline std::vector<Declared> signatures() {
  return {
      fixed({shape(DType::kFloat32, {1, 3, 224, 224})}),                      // batchable, the demo CNN
      {{shape(DType::kInt64, {1, 1}), shape(DType::kFloat32, {1, 1})},        // batchable, two inputs,
       {shape(DType::kInt64, {1, 8}), shape(DType::kFloat32, {1, 8})}},       //   lengths 1..8
      {{shape(DType::kFloat32, {4, 2})}, {shape(DType::kFloat32, {4, 16})}},  // not batchable, 2..16
      fixed({shape(DType::kInt64, {2, 8}), shape(DType::kFloat16, {8})}),     // not batchable, two inputs
      fixed({shape(DType::kFloat64, {})}),                                    // a scalar
      fixed({shape(DType::kUInt8, {1})}),                                     // batchable, rank 1
      {{shape(DType::kBool, {1, 0})}, {shape(DType::kBool, {1, -1})}},        // batchable, any length
      fixed({shape(DType::kInt32, {1, 2}), shape(DType::kInt32, {3, 2})}),    // second input not batchable
  };
}

}  // namespace sidecar::fuzz
