// What crosses the rings: fixed-size descriptors of requests and responses. Tensor bytes never
// cross; they stay in the client's arena, named by offsets from the arena's start.
//
// Every field a client can write is untrusted input to the sidecar, which copies a descriptor out
// of shared memory before it checks it (descriptor_check.hpp) and computes every bound itself.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "sidecar/shared/dtype.hpp"
#include "sidecar/shared/error.hpp"
#include "sidecar/shared/version.hpp"

namespace sidecar {

inline constexpr std::uint32_t kMaxRank = 8;
inline constexpr std::uint32_t kMaxTensors = 8;     // inputs per request, outputs per response
// Accepted signatures: each has latency histograms of its own in every worker's metrics shard. A
// signature may take ranges of sizes (`--accept-shape 1x1..512`), so a few go a long way.
inline constexpr std::uint32_t kMaxSignatures = 8;
// Concrete shapes to warm up (--warmup-shape) within the accepted signatures.
inline constexpr std::uint32_t kMaxWarmupShapes = 64;
// Warmed shapes the status page lists (declared ones, the largest of each range, batch sizes).
inline constexpr std::uint32_t kMaxWarmedShapes = 128;
inline constexpr std::uint32_t kRingCapacity = 16;  // descriptors in flight per channel
inline constexpr std::uint32_t kMessageBytes = 512;  // error text carried in a response
inline constexpr std::uint64_t kArenaAlignment = 4096;
inline constexpr std::uint64_t kTensorAlignment = 64;

// Status of one request; numbers are part of the protocol.
enum class Status : std::uint32_t {
  kOk = 0,
  kInvalidRequest = 1,     // wrong dtype, rank, shape, byte count, offset or input count
  kModelError = 2,         // the model threw: the message is TorchScript's text
  kUnsupportedOutput = 3,  // the model returned something other than tensors
  kOutputTooLarge = 4,     // the outputs do not fit the space the client reserved
  kDeadlineExceeded = 5,
  kOverloaded = 6,
  kCancelled = 7,
  kShuttingDown = 8,
  kInternal = 9,
};

// What a response's status means to a caller of the client library.
constexpr ErrorCode error_code_for(Status status) noexcept {
  switch (status) {
    case Status::kOk: return ErrorCode::kOk;
    case Status::kInvalidRequest: return ErrorCode::kRejected;
    case Status::kModelError: return ErrorCode::kModelError;
    case Status::kUnsupportedOutput: return ErrorCode::kUnsupportedOutput;
    case Status::kOutputTooLarge: return ErrorCode::kOutputTooLarge;
    case Status::kDeadlineExceeded: return ErrorCode::kDeadlineExceeded;
    case Status::kOverloaded: return ErrorCode::kOverloaded;
    case Status::kCancelled: return ErrorCode::kCancelled;
    case Status::kShuttingDown: return ErrorCode::kShuttingDown;
    case Status::kInternal: return ErrorCode::kProtocolError;
  }
  return ErrorCode::kProtocolError;
}

// Request flags.
inline constexpr std::uint32_t kRequestFlagNone = 0;
// Neither look the inputs up in the result cache nor store the result.
inline constexpr std::uint32_t kRequestFlagBypassCache = 1u << 0;
// The client looked the inputs up itself and missed: the sidecar stores the result but does not
// look again. Only saves work; the sidecar trusts nothing else about it.
inline constexpr std::uint32_t kRequestFlagCacheChecked = 1u << 1;
// A control request with no inputs: empty the result cache. The answer's message says how much.
inline constexpr std::uint32_t kRequestFlagFlushCache = 1u << 2;
// The request can be cancelled: `cancel_offset` names an 8-byte word in the channel's arena that
// the client sets to non-zero to cancel. Checked before the request runs.
inline constexpr std::uint32_t kRequestFlagCancellable = 1u << 3;
// A control request with no inputs: answered by the scheduling loop without the model, proving a
// round trip through the rings works (`sidecarctl health`).
inline constexpr std::uint32_t kRequestFlagPing = 1u << 4;
inline constexpr std::uint32_t kRequestFlagsKnown = kRequestFlagBypassCache | kRequestFlagCacheChecked |
                                                    kRequestFlagFlushCache | kRequestFlagCancellable |
                                                    kRequestFlagPing;

// Response flags.
inline constexpr std::uint32_t kResponseFlagFromCache = 1u << 0;  // the sidecar answered from its cache

// dtype + shape of one tensor, as stored in descriptors and in the model description.
struct TensorShape {
  std::uint8_t dtype;  // a DType value
  std::uint8_t rank;   // <= kMaxRank
  std::uint16_t reserved0;
  std::uint32_t reserved1;
  std::int64_t dims[kMaxRank];
};
static_assert(sizeof(TensorShape) == 72 && alignof(TensorShape) == 8);

// A tensor's bytes in the channel's arena: [offset, offset + bytes), dense, row-major.
struct TensorDescriptor {
  TensorShape shape;
  std::uint64_t offset;  // from the start of the channel's arena, kTensorAlignment-aligned
  std::uint64_t bytes;
  std::uint64_t reserved;
};
static_assert(sizeof(TensorDescriptor) == 96);

// Client -> sidecar.
struct RequestDescriptor {
  std::uint64_t request_id;   // chosen by the client, echoed in the response
  std::uint64_t deadline_ns;  // CLOCK_MONOTONIC; 0 = none
  std::uint32_t flags;
  std::uint16_t input_count;
  std::uint16_t reserved0;
  // Where the sidecar may write the outputs: [output_offset, output_offset + output_capacity).
  std::uint64_t output_offset;
  std::uint64_t output_capacity;
  std::uint64_t cancel_offset;  // with kRequestFlagCancellable: the cancel word, 8-byte aligned
  // CLOCK_MONOTONIC when the client posted it; 0 = unknown. For the latency metrics and the
  // leader's spin policy: a client that lies about it misstates its own requests' latency, and
  // can make the leader spin more or less, never past --spin-us.
  std::uint64_t posted_ns;
  std::uint64_t reserved1;
  TensorDescriptor inputs[kMaxTensors];
};
static_assert(sizeof(RequestDescriptor) == 64 + kMaxTensors * sizeof(TensorDescriptor));

// Sidecar -> client.
struct ResponseDescriptor {
  std::uint64_t request_id;
  std::uint32_t status;  // a Status value
  std::uint16_t output_count;
  std::uint16_t message_length;  // bytes of `message` used
  std::uint32_t flags;           // kResponseFlag*
  std::uint16_t batch_size;      // requests in the forward that answered this one (0: none ran)
  std::uint16_t reserved0;
  // The order in which the sidecar took requests, across all channels: lets a client (and the
  // fairness test) see how many others were served in between.
  std::uint64_t service_order;
  std::uint64_t reserved[4];
  TensorDescriptor outputs[kMaxTensors];
  char message[kMessageBytes];
};
static_assert(sizeof(ResponseDescriptor) == 64 + kMaxTensors * sizeof(TensorDescriptor) + kMessageBytes);

static_assert(std::is_trivially_copyable_v<RequestDescriptor> && std::is_standard_layout_v<RequestDescriptor>);

// The part of a request descriptor in use with `input_count` inputs (capped at kMaxTensors, whatever
// the count says): the header and that many tensors. Both sides copy only this much.
constexpr std::size_t request_bytes_used(std::uint32_t input_count) noexcept {
  return offsetof(RequestDescriptor, inputs) +
         sizeof(TensorDescriptor) * (input_count < kMaxTensors ? input_count : kMaxTensors);
}

// Copies a request out of shared memory into private memory: the header first, then as many
// tensors as the copied header's count says, so that the count and the tensors copied agree
// whatever the other side writes meanwhile.
inline void copy_request_out(RequestDescriptor& to, const RequestDescriptor& shared) noexcept {
  std::memcpy(&to, &shared, offsetof(RequestDescriptor, inputs));
  std::memcpy(to.inputs, shared.inputs, request_bytes_used(to.input_count) - offsetof(RequestDescriptor, inputs));
}
static_assert(std::is_trivially_copyable_v<ResponseDescriptor> && std::is_standard_layout_v<ResponseDescriptor>);

// The part of a response in use for an answer with `output_count` outputs and no message.
constexpr std::size_t response_bytes_used(std::uint32_t output_count) noexcept {
  return offsetof(ResponseDescriptor, outputs) +
         sizeof(TensorDescriptor) * (output_count < kMaxTensors ? output_count : kMaxTensors);
}

// A client's hit in the result cache, reported back so that the sidecar's eviction order (LRU) sees
// it: the slot and the slot's sequence when it was read, so a report about an entry replaced since
// then is ignored.
struct CacheHitRecord {
  std::uint32_t slot;
  std::uint32_t reserved;
  std::uint64_t sequence;
};
inline constexpr std::uint32_t kHitLogCapacity = 64;  // hits beyond this between two drains are not reported

constexpr std::uint64_t align_up(std::uint64_t value, std::uint64_t alignment) noexcept {
  return (value + alignment - 1) / alignment * alignment;
}

inline std::uint64_t element_count(const TensorShape& shape) noexcept {
  std::uint64_t count = 1;
  for (std::uint32_t i = 0; i < shape.rank && i < kMaxRank; ++i) {
    count *= static_cast<std::uint64_t>(shape.dims[i]);
  }
  return count;
}

}  // namespace sidecar
