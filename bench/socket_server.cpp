// sidecar-socket-server: what a user would write instead of the sidecar, to measure the sidecar
// against. One process, the same frozen and warmed model; a blocking Unix stream socket; each
// request is a length-prefixed block of bytes (the inputs in order), each answer the same (the
// outputs in order). A thread per connection, each warmed up before it reads, so that many clients
// are served at once as a threaded server would. --echo answers with the inputs (no model).
//
//   sidecar-socket-server --socket /tmp/x.sock --model tiny.pt --shape 1x64
//   sidecar-socket-server --socket /tmp/x.sock --echo --shape 1x64
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <thread>
#include <vector>

#include "model_runner.hpp"
#include "served_model.hpp"
#include "sidecar/shared/descriptor_check.hpp"
#include "sidecar/shared/memfd.hpp"
#include "sidecar/shared/unix_socket.hpp"

namespace {

using namespace sidecar;

bool write_reply(int fd, const std::vector<std::uint8_t>& payload) {
  std::uint64_t length = payload.size();
  iovec parts[2] = {{&length, sizeof length}, {const_cast<std::uint8_t*>(payload.data()), payload.size()}};
  std::size_t total = sizeof length + payload.size();
  int first = 0;
  while (total != 0) {
    const ssize_t sent = ::writev(fd, parts + first, 2 - first);
    if (sent <= 0) return false;
    total -= static_cast<std::size_t>(sent);
    auto left = static_cast<std::size_t>(sent);
    while (first < 2 && left >= parts[first].iov_len) left -= parts[first++].iov_len;
    if (first < 2) {
      parts[first].iov_base = static_cast<std::uint8_t*>(parts[first].iov_base) + left;
      parts[first].iov_len -= left;
    }
  }
  return true;
}

// The outputs, concatenated, as the reply carries them.
class CollectingSink final : public OutputSink {
 public:
  explicit CollectingSink(std::vector<std::uint8_t>& bytes) : bytes_(bytes) {}
  Status accept(std::span<const OutputView> outputs, std::string&) override {
    bytes_.clear();
    for (const OutputView& output : outputs) {
      const auto* data = static_cast<const std::uint8_t*>(output.data);
      bytes_.insert(bytes_.end(), data, data + output.bytes);
    }
    return Status::kOk;
  }

 private:
  std::vector<std::uint8_t>& bytes_;
};

// Reads one request into `buffer`: its 8-byte length, then the bytes, as few reads as the kernel
// allows (one, for a small request). The payload starts kTensorAlignment-aligned in `buffer`.
bool read_request(int fd, std::vector<std::uint8_t>& buffer, std::uint64_t expected, std::uint8_t*& payload) {
  const std::size_t header_at = kTensorAlignment - sizeof(std::uint64_t);
  buffer.resize(header_at + sizeof(std::uint64_t) + expected + kTensorAlignment);
  std::uint8_t* start = buffer.data();
  start += align_up(reinterpret_cast<std::uintptr_t>(start), kTensorAlignment) - reinterpret_cast<std::uintptr_t>(start);
  std::uint8_t* cursor = start + header_at;
  std::size_t want = sizeof(std::uint64_t) + expected;
  std::size_t have = 0;
  while (have < want) {
    const ssize_t got = ::read(fd, cursor + have, want - have);
    if (got <= 0) return false;
    have += static_cast<std::size_t>(got);
    if (have >= sizeof(std::uint64_t)) {
      std::uint64_t length = 0;
      std::memcpy(&length, cursor, sizeof length);
      if (length != expected) return false;
    }
  }
  payload = start + kTensorAlignment;
  return true;
}

// Answers one client's requests until it goes, on a thread of its own.
void serve_connection(UniqueFd client, ModelRunner& runner, const InputSignature& signature) {
  runner.prepare_worker_thread();
  runner.warm_up({signature}, 20);
  // The inputs arrive packed; a model input that would not start aligned is copied to a place
  // that does (none is, for one-input models).
  std::vector<std::uint64_t> sizes;
  std::uint64_t packed = 0;
  for (const TensorShape& shape : signature) {
    std::uint64_t bytes = 0;
    shape_byte_size(shape, bytes);
    sizes.push_back(bytes);
    packed += bytes;
  }
  std::vector<std::vector<std::uint8_t>> aligned_copies(signature.size());
  std::vector<std::uint8_t> buffer;
  std::vector<std::uint8_t> reply;
  CollectingSink sink(reply);
  std::vector<InputView> inputs(signature.size());
  std::uint8_t* payload = nullptr;
  while (read_request(client.get(), buffer, packed, payload)) {
    std::uint64_t offset = 0;
    for (std::size_t i = 0; i < signature.size(); ++i) {
      std::uint8_t* data = payload + offset;
      if (offset % kTensorAlignment != 0) {
        aligned_copies[i].resize(sizes[i] + kTensorAlignment);
        std::uint8_t* place = aligned_copies[i].data();
        place += align_up(reinterpret_cast<std::uintptr_t>(place), kTensorAlignment) -
                 reinterpret_cast<std::uintptr_t>(place);
        std::memcpy(place, data, sizes[i]);
        data = place;
      }
      inputs[i] = InputView{signature[i], data};
      offset += sizes[i];
    }
    const CallOutcome outcome = runner.run(inputs, sink);
    if (outcome.status != Status::kOk) reply.clear();
    if (!write_reply(client.get(), reply)) break;
  }
}

int serve(const std::string& socket_path, std::unique_ptr<ModelRunner> runner, const InputSignature& signature) {

  UniqueFd listening(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  const Result<sockaddr_un> address = unix_address(socket_path);
  ::unlink(socket_path.c_str());
  if (!address.ok() ||
      ::bind(listening.get(), reinterpret_cast<const sockaddr*>(&*address), sizeof(sockaddr_un)) != 0 ||
      ::listen(listening.get(), 64) != 0) {
    std::fprintf(stderr, "cannot listen on %s: %s\n", socket_path.c_str(), std::strerror(errno));
    return 1;
  }
  std::fprintf(stderr, "ready\n");
  while (true) {
    UniqueFd client(::accept(listening.get(), nullptr, nullptr));
    if (!client) continue;
    std::thread(serve_connection, std::move(client), std::ref(*runner), signature).detach();
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::string socket_path;
  sidecar::bench::ServedModelFlags served;
  CLI::App app{"sidecar-socket-server: the model behind a plain Unix socket, for sidecar-bench"};
  app.add_option("--socket", socket_path, "where to listen")->required();
  sidecar::bench::add_served_model_flags(app, served);
  CLI11_PARSE(app, argc, argv);
  return sidecar::bench::run_peer_server("sidecar-socket-server", served, [&](const sidecar::InputSignature& signature) {
    return serve(socket_path, sidecar::bench::load_served_model(served, signature), signature);
  });
}
