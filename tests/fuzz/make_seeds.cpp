// Writes the seed corpora of the fuzzers from the real structs, so they stay valid when a layout
// changes: make_seeds DIR writes DIR/handshake/* and DIR/admission/* (tests/fuzz/corpus is its
// output, committed). Seeds only need to be valid; the fuzzers find the rest.
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "admission_input.hpp"
#include "sidecar/shared/descriptor_check.hpp"  // shape_byte_size
#include "sidecar/shared/protocol.hpp"

namespace {

using namespace sidecar;
namespace fs = std::filesystem;

void write(const fs::path& path, const void* a, std::size_t a_bytes, const void* b = nullptr, std::size_t b_bytes = 0) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(static_cast<const char*>(a), static_cast<std::streamsize>(a_bytes));
  if (b) out.write(static_cast<const char*>(b), static_cast<std::streamsize>(b_bytes));
}

void handshake_seeds(const fs::path& dir) {
  ConnectRequest attach{};
  attach.prefix = make_prefix(sizeof attach);
  attach.kind = static_cast<std::uint32_t>(ConnectKind::kAttach);
  write(dir / "request-attach", &attach, sizeof attach);
  ConnectRequest observe = attach;
  observe.kind = static_cast<std::uint32_t>(ConnectKind::kObserve);
  observe.arena_bytes = 1 << 20;
  write(dir / "request-observe", &observe, sizeof observe);
  ConnectRequest future = attach;  // a later version: only the prefix is read
  future.prefix.protocol_version = kProtocolVersion + 1;
  write(dir / "request-version-mismatch", &future, sizeof future.prefix);

  ConnectReply accepted{};
  accepted.prefix = make_prefix(sizeof accepted);
  accepted.outcome = static_cast<std::uint32_t>(ConnectOutcome::kAccepted);
  accepted.fd_count = 4;
  accepted.sidecar_pid = 1234;
  accepted.channel_bytes = 8 << 20;
  accepted.arena_offset = 4096;
  accepted.arena_bytes = (8 << 20) - 4096;
  write(dir / "reply-accepted", &accepted, sizeof accepted);
  ConnectReply warming = accepted;
  warming.outcome = static_cast<std::uint32_t>(ConnectOutcome::kWarmingUp);
  warming.fd_count = 0;
  set_reply_message(warming, "the sidecar is warming up: 2 of 4 shapes");
  write(dir / "reply-warming-up", &warming, sizeof warming);
}

struct Seed {
  fuzz::AdmissionHeader header{};
  RequestDescriptor request{};
};

// An input of `s`, placed at the next free aligned offset.
void add_input(RequestDescriptor& request, std::uint64_t& cursor, const TensorShape& s) {
  TensorDescriptor& input = request.inputs[request.input_count++];
  input.shape = s;
  shape_byte_size(s, input.bytes);
  input.offset = cursor;
  cursor = align_up(cursor + input.bytes, kTensorAlignment);
}

void admission_seeds(const fs::path& dir) {
  const std::vector<fuzz::Declared> signatures = fuzz::signatures();
  std::vector<std::pair<std::string, Seed>> seeds;

  Seed cnn;  // the demo CNN: one [1, 3, 224, 224] float32 in an 8 MiB arena, --max-batch 4
  cnn.header.arena_choice = 5;
  cnn.header.signatures = 1u << 0;
  cnn.header.input_count = 1;
  cnn.header.max_batch = 4;
  std::uint64_t cursor = 0;
  add_input(cnn.request, cursor, signatures[0].smallest[0]);
  cnn.request.output_offset = cursor;
  cnn.request.output_capacity = 4096;
  seeds.emplace_back("cnn", cnn);

  Seed rows = cnn;  // three rows of it, cancellable, with a deadline not yet passed
  rows.request.inputs[0].shape.dims[0] = 3;
  rows.request.inputs[0].bytes *= 3;
  rows.request.output_offset = align_up(rows.request.inputs[0].bytes, kTensorAlignment);
  rows.request.flags = kRequestFlagCancellable | kRequestFlagCacheChecked;
  rows.request.cancel_offset = rows.request.output_offset + rows.request.output_capacity;
  rows.request.deadline_ns = 1'000'000'000;
  rows.header.now_choice = 1;
  seeds.emplace_back("cnn-3-rows-cancellable", rows);

  Seed pair;  // two inputs, [1, 8] int64 and [1, 8] float32, with the non-batchable pair declared too
  pair.header.arena_choice = 3;
  pair.header.signatures = (1u << 1) | (1u << 3);
  pair.header.input_count = 2;
  pair.header.max_batch = 8;
  cursor = 0;
  for (const TensorShape& s : signatures[1].smallest) add_input(pair.request, cursor, s);
  pair.request.output_offset = cursor;
  pair.request.output_capacity = 512;
  seeds.emplace_back("two-inputs", pair);

  Seed any;  // nothing declared: any shape, here a float64 scalar; arena size given raw
  any.header.arena_choice = 0xff;
  any.header.arena_raw = 1 << 16;
  any.header.input_count = 1;
  any.header.max_batch = 1;
  cursor = 128;
  add_input(any.request, cursor, signatures[4].smallest[0]);
  any.request.output_offset = cursor;
  any.request.output_capacity = 64;
  any.request.flags = kRequestFlagBypassCache;
  seeds.emplace_back("undeclared-scalar", any);

  Seed wraps = any;  // refused: 2^64 - 8 bytes at offset 64 end past 2^64, i.e. "at 56" if the sum wraps
  wraps.request.inputs[0].shape = fuzz::shape(DType::kInt64, {(1ll << 61) - 1});
  wraps.request.inputs[0].bytes = ~0ull - 7;
  wraps.request.inputs[0].offset = 64;
  seeds.emplace_back("bytes-wrap-around", wraps);

  Seed flush = cnn;  // a control request
  flush.request = RequestDescriptor{};
  flush.request.flags = kRequestFlagFlushCache;
  seeds.emplace_back("flush-cache", flush);

  for (const auto& [name, seed] : seeds) {
    write(dir / name, &seed.header, sizeof seed.header, &seed.request, sizeof seed.request);
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_seeds DIR\n");
    return 2;
  }
  const fs::path root = argv[1];
  fs::create_directories(root / "handshake");
  fs::create_directories(root / "admission");
  handshake_seeds(root / "handshake");
  admission_seeds(root / "admission");
  return 0;
}
