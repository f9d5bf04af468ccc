// Request admission on arbitrary descriptors: admit_request and batch_rows_of, the checks that
// stand between a client's descriptor (every field untrusted) and the sidecar reading and writing
// its arena at the offsets it names. The input is an AdmissionHeader (arena size, clock, declared
// signatures, --max-batch; admission_input.hpp) and then a RequestDescriptor.
//
// Every verdict is checked against an independent reading of the rules, in 128-bit arithmetic:
//  - kRun only when every byte the sidecar will touch lies inside the arena (inputs, output
//    region, cancel word), offsets are aligned, byte counts equal the shapes' sizes, the input
//    count is the model's, and the shapes lie within a declared signature's ranges or are a batch
//    of a batchable one;
//  - and conversely, a request that satisfies all of that is run (no false refusals);
//  - batch_rows_of, which the scheduler calls before admission, on any descriptor.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>

#include "admission.hpp"
#include "admission_input.hpp"
#include "fuzz_check.hpp"

namespace {

using namespace sidecar;
using u128 = unsigned __int128;

// The shape's byte size, refusing unknown dtypes, ranks over kMaxRank, negative dims and sizes
// that do not fit 64 bits at any step (dims multiplied in order, as the protocol defines).
bool byte_size(const TensorShape& shape, std::uint64_t& bytes) {
  const std::size_t element = dtype_size(static_cast<DType>(shape.dtype));
  if (element == 0 || shape.rank > kMaxRank) return false;
  u128 total = element;
  for (std::uint32_t i = 0; i < shape.rank; ++i) {
    if (shape.dims[i] < 0) return false;
    total *= static_cast<u128>(shape.dims[i]);
    if (total > ~0ull) return false;
  }
  bytes = static_cast<std::uint64_t>(total);
  return true;
}

bool inside(std::uint64_t offset, std::uint64_t bytes, std::uint64_t arena) {
  return static_cast<u128>(offset) + bytes <= arena;
}

bool dim_accepted(std::int64_t size, std::int64_t smallest, std::int64_t largest) {
  return size >= smallest && (largest == -1 || size <= largest);
}

// `got` within one declared input, from dim `first_dim` on.
bool within_declared(const TensorShape& got, const TensorShape& smallest, const TensorShape& largest,
                     std::uint32_t first_dim) {
  if (got.dtype != smallest.dtype || got.rank != smallest.rank || got.rank > kMaxRank) return false;
  for (std::uint32_t d = first_dim; d < got.rank; ++d) {
    if (!dim_accepted(got.dims[d], smallest.dims[d], largest.dims[d])) return false;
  }
  return true;
}

// Rows of the request under a batchable declared signature (0: none).
std::uint32_t expected_rows(const RequestDescriptor& request, const std::vector<fuzz::Declared>& declared,
                            std::uint32_t max_batch) {
  if (max_batch <= 1 || (request.flags & (kRequestFlagFlushCache | kRequestFlagPing))) return 0;
  if (request.input_count == 0 || request.input_count > kMaxTensors) return 0;
  for (const fuzz::Declared& signature : declared) {
    if (signature.smallest.size() != request.input_count) continue;
    bool batchable = true;
    for (std::size_t i = 0; i < signature.smallest.size(); ++i) {
      const TensorShape& low = signature.smallest[i];
      batchable =
          batchable && low.rank >= 1 && low.rank <= kMaxRank && low.dims[0] == 1 && signature.largest[i].dims[0] == 1;
    }
    if (!batchable) continue;
    const std::int64_t rows = request.inputs[0].shape.dims[0];
    if (request.inputs[0].shape.rank < 1 || rows < 1 || rows > static_cast<std::int64_t>(max_batch)) continue;
    bool match = true;
    for (std::size_t i = 0; i < signature.smallest.size() && match; ++i) {
      const TensorShape& got = request.inputs[i].shape;
      match = got.dims[0] == rows && within_declared(got, signature.smallest[i], signature.largest[i], 1);
    }
    if (match) return static_cast<std::uint32_t>(rows);
  }
  return 0;
}

bool matches_declared(const RequestDescriptor& request, const std::vector<fuzz::Declared>& declared) {
  if (declared.empty()) return true;
  for (const fuzz::Declared& signature : declared) {
    if (signature.smallest.size() != request.input_count) continue;
    bool match = true;
    for (std::size_t i = 0; i < signature.smallest.size() && match; ++i) {
      match = within_declared(request.inputs[i].shape, signature.smallest[i], signature.largest[i], 0);
    }
    if (match) return true;
  }
  return false;
}

// The rules' spelling of a declared signature.
AcceptedSignature accepted_of(const fuzz::Declared& signature) {
  AcceptedSignature accepted;
  for (std::size_t i = 0; i < signature.smallest.size(); ++i) {
    ShapeRange range{};
    range.dtype = signature.smallest[i].dtype;
    range.rank = signature.smallest[i].rank;
    for (std::uint32_t d = 0; d < range.rank; ++d) {
      range.smallest[d] = signature.smallest[i].dims[d];
      range.largest[d] = signature.largest[i].dims[d] == -1 ? kAnySize : signature.largest[i].dims[d];
    }
    accepted.push_back(range);
  }
  return accepted;
}

// Everything but the clock: may the sidecar touch this request's bytes and run it?
bool well_formed(const RequestDescriptor& request, std::uint64_t arena) {
  if (request.input_count == 0 || request.input_count > kMaxTensors) return false;
  for (std::uint32_t i = 0; i < request.input_count; ++i) {
    const TensorDescriptor& input = request.inputs[i];
    std::uint64_t bytes = 0;
    if (!byte_size(input.shape, bytes) || input.bytes != bytes || input.offset % kTensorAlignment != 0 ||
        !inside(input.offset, input.bytes, arena)) {
      return false;
    }
  }
  if (request.output_offset % kTensorAlignment != 0 || !inside(request.output_offset, request.output_capacity, arena)) {
    return false;
  }
  if ((request.flags & kRequestFlagCancellable) &&
      (request.cancel_offset % 8 != 0 || !inside(request.cancel_offset, 8, arena))) {
    return false;
  }
  return true;
}

void dump(const RequestDescriptor& request, std::uint64_t arena, std::uint64_t now) {
  std::fprintf(stderr, "arena %llu now %llu flags %#x input_count %u output [%llu, +%llu) cancel %llu deadline %llu\n",
               (unsigned long long)arena, (unsigned long long)now, request.flags, request.input_count,
               (unsigned long long)request.output_offset, (unsigned long long)request.output_capacity,
               (unsigned long long)request.cancel_offset, (unsigned long long)request.deadline_ns);
  for (std::uint32_t i = 0; i < request.input_count && i < kMaxTensors; ++i) {
    const TensorDescriptor& t = request.inputs[i];
    std::fprintf(stderr, "  input %u: %s at %llu, %llu bytes\n", i, describe_shape(t.shape).c_str(),
                 (unsigned long long)t.offset, (unsigned long long)t.bytes);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  fuzz::AdmissionHeader header{};
  std::memcpy(&header, data, std::min(size, sizeof header));
  const std::size_t rest = size > sizeof header ? size - sizeof header : 0;
  RequestDescriptor request{};
  std::memcpy(&request, data + sizeof header, std::min(rest, sizeof request));

  const std::uint64_t arena =
      header.arena_choice < fuzz::kArenaChoices ? fuzz::kArenaSizes[header.arena_choice] : header.arena_raw;
  const std::uint64_t now = header.now_choice == 0   ? 0
                            : header.now_choice == 1 ? request.deadline_ns
                            : header.now_choice == 2 ? request.deadline_ns + 1
                                                     : header.now_raw;
  std::vector<fuzz::Declared> declared;
  std::vector<AcceptedSignature> accepted;
  const std::vector<fuzz::Declared> all = fuzz::signatures();
  for (std::size_t i = 0; i < all.size(); ++i) {
    if (header.signatures & (1u << i)) {
      declared.push_back(all[i]);
      accepted.push_back(accepted_of(all[i]));
    }
  }
  const std::size_t input_count = header.input_count % 4;
  const std::uint32_t max_batch = header.max_batch;
  const AdmissionRules rules = AdmissionRules::from(input_count, accepted, {}, max_batch);

  // The scheduler asks for rows before admission, on the raw copy: any descriptor.
  const std::uint32_t rows = batch_rows_of(request, rules);
  const std::uint32_t want_rows = expected_rows(request, declared, max_batch);
  if (rows != want_rows) dump(request, arena, now);
  FUZZ_CHECK(rows == want_rows, "batch_rows_of %u, expected %u", rows, want_rows);
  FUZZ_CHECK(rows <= max_batch, "rows %u over max_batch %u", rows, max_batch);

  const AdmissionVerdict verdict = admit_request(request, arena, rules, now);
  using Kind = AdmissionVerdict::Kind;
  const bool known_flags = (request.flags & ~kRequestFlagsKnown) == 0;
  if (!known_flags) {
    FUZZ_CHECK(verdict.kind == Kind::kRefuse && verdict.status == Status::kInvalidRequest, "unknown flags %#x admitted",
               request.flags);
    return 0;
  }
  if (request.flags & kRequestFlagFlushCache) {
    FUZZ_CHECK(verdict.kind == Kind::kFlushCache, "a flush was not treated as one");
    return 0;
  }
  FUZZ_CHECK(verdict.kind != Kind::kFlushCache, "flush without the flag");
  if (request.flags & kRequestFlagPing) {
    FUZZ_CHECK(verdict.kind == Kind::kPing, "a ping was not treated as one");
    return 0;
  }
  FUZZ_CHECK(verdict.kind != Kind::kPing, "ping without the flag");

  const bool sound = well_formed(request, arena);
  const bool on_time = request.deadline_ns == 0 || now <= request.deadline_ns;
  const bool count_ok = request.input_count == rules.input_count;
  const bool shapes_ok = rows != 0 || matches_declared(request, declared);
  const bool runnable = sound && on_time && count_ok && shapes_ok;
  if ((verdict.kind == Kind::kRun) != runnable) dump(request, arena, now);
  FUZZ_CHECK((verdict.kind == Kind::kRun) == runnable,
             "verdict %s (%s), expected %s: sound %d on_time %d count_ok %d shapes_ok %d",
             verdict.kind == Kind::kRun ? "run" : "refuse", verdict.message.c_str(), runnable ? "run" : "refuse", sound,
             on_time, count_ok, shapes_ok);
  if (verdict.kind == Kind::kRefuse) {
    FUZZ_CHECK(!verdict.message.empty(), "refusal without a message");
    FUZZ_CHECK(verdict.status == (sound && !on_time ? Status::kDeadlineExceeded : Status::kInvalidRequest),
               "refused with status %u", static_cast<unsigned>(verdict.status));
    return 0;
  }

  // kRun: restate, field by field, what the executor then relies on without checking again.
  FUZZ_CHECK(verdict.status == Status::kOk, "run with status %u", static_cast<unsigned>(verdict.status));
  FUZZ_CHECK(request.input_count >= 1 && request.input_count <= kMaxTensors && request.input_count == rules.input_count,
             "input count %u", request.input_count);
  for (std::uint32_t i = 0; i < request.input_count; ++i) {
    const TensorDescriptor& input = request.inputs[i];
    std::uint64_t bytes = 0;
    FUZZ_CHECK(byte_size(input.shape, bytes) && bytes == input.bytes, "input %u: bytes %llu", i,
               (unsigned long long)input.bytes);
    FUZZ_CHECK(input.offset % kTensorAlignment == 0 && inside(input.offset, input.bytes, arena), "input %u outside", i);
  }
  FUZZ_CHECK(
      request.output_offset % kTensorAlignment == 0 && inside(request.output_offset, request.output_capacity, arena),
      "output region outside");
  if (request.flags & kRequestFlagCancellable) {
    FUZZ_CHECK(request.cancel_offset % 8 == 0 && inside(request.cancel_offset, 8, arena), "cancel word outside");
  }
  if (rows != 0) {
    // A batch member: run_batched divides its bytes by its rows and concatenates along dim 0.
    for (std::uint32_t i = 0; i < request.input_count; ++i) {
      const TensorShape& s = request.inputs[i].shape;
      FUZZ_CHECK(s.rank >= 1 && s.dims[0] == static_cast<std::int64_t>(rows), "input %u rows", i);
      FUZZ_CHECK(request.inputs[i].bytes % rows == 0, "input %u bytes not a multiple of rows", i);
    }
  } else {
    FUZZ_CHECK(matches_declared(request, declared), "shapes match no declared signature");
  }
  // The metrics row it is counted under: one of the page's signature rows, or the unmatched one.
  FUZZ_CHECK(verdict.signature_row < kSignatureRows, "signature row %u", verdict.signature_row);
  FUZZ_CHECK(declared.empty() ? verdict.signature_row == kUnmatchedSignature
                              : verdict.signature_row < declared.size() || declared.size() > kMaxSignatures,
             "signature row %u of %zu declared", verdict.signature_row, declared.size());
  return 0;
}
