// A hostile client attacking everything it was given (its channel, its fds, the sidecar's
// read-only memory, its socket) while honest clients check every answer they get. Real sidecar and
// client processes throughout.
#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include "child_process.hpp"
#include "client_helpers.hpp"
#include "raw_client.hpp"
#include "sidecar/client.hpp"
#include "sidecar/shared/protocol.hpp"
#include "sidecar/shared/unix_socket.hpp"
#include "sidecar_process.hpp"

namespace sidecar {
namespace {

using testing::kTinyShape;
using testing::connect_or_fail;
using testing::in_child;
using testing::kNobody;
using testing::kNogroup;
using testing::model_path;
using testing::RawClient;
using testing::random_values;
using testing::running_as_root;
using testing::SidecarProcess;
using testing::socket_exists;
using testing::test_runtime_dir;
using testing::test_socket_path;
using testing::tiny_sidecar_args;
using testing::unique_name;
using namespace std::chrono_literals;


// The tiny model's answers to a few inputs, asked once through the sidecar with the cache
// bypassed: later answers must equal these bit for bit.
struct Expected {
  std::vector<std::vector<float>> inputs;
  std::vector<std::vector<std::byte>> outputs;
};

Expected expected_answers(const std::string& name, int count) {
  Expected expected;
  Client client = connect_or_fail(name);
  for (int i = 0; i < count; ++i) {
    expected.inputs.push_back(random_values(64, 500 + static_cast<std::uint32_t>(i)));
    auto output = client.infer(TensorView::of(expected.inputs.back(), kTinyShape), 10s, CachePolicy::kBypass);
    if (!output.ok()) throw std::runtime_error(output.message());
    expected.outputs.push_back((*output)[0].data);
  }
  return expected;
}

// An honest client's tally: every call checked against the expected answer.
struct Tally {
  std::uint64_t calls = 0;
  std::uint64_t wrong = 0;
  std::uint64_t errors = 0;
  std::string first_error;
};

Tally run_honest_client(const std::string& name, const Expected& expected, int calls, std::uint32_t seed) {
  Tally tally;
  Client client = connect_or_fail(name);
  std::mt19937 random(seed);
  for (int call = 0; call < calls; ++call) {
    const std::size_t which = random() % expected.inputs.size();
    // Both paths: the cache (found here or in the sidecar) and the model itself.
    const CachePolicy policy = call % 2 ? CachePolicy::kUse : CachePolicy::kBypass;
    auto output = client.infer(TensorView::of(expected.inputs[which], kTinyShape), 10s, policy);
    ++tally.calls;
    if (!output.ok()) {
      if (tally.errors++ == 0) tally.first_error = std::string(error_code_name(output.code())) + ": " + output.message();
      continue;
    }
    if (output->size() != 1 || (*output)[0].data != expected.outputs[which]) ++tally.wrong;
  }
  return tally;
}

// --- A hostile client ------------------------------------------------------------------------------

// What the hostile client tried, and what the kernel or the sidecar let through that it must not.
struct HostileReport {
  std::uint64_t rounds = 0;
  std::uint64_t channels_scribbled = 0;
  std::uint64_t garbage_handshakes = 0;
  std::uint64_t garbage_after_handshake = 0;
  std::uint64_t eventfd_floods = 0;
  std::uint64_t refused_connections = 0;
  std::uint64_t stubborn = 0;
  // Each must stay 0: a writable mapping, an upgrade to writable, a resize or new seal, a write or
  // a hole, on what is the sidecar's (status page, cache), or a resize of its own channel.
  std::uint64_t sidecar_memory_writable = 0;
  std::uint64_t resized = 0;
};

// Shared with the hostile child: the test stops it once the honest clients are done and it has
// attacked enough rounds.
struct AttackControl {
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> rounds{0};
};

// Tries everything it can with what it is given, until told to stop.
HostileReport attack(const std::string& name, AttackControl& control, std::uint32_t seed) {
  HostileReport report;
  std::mt19937_64 random(seed);
  std::vector<std::unique_ptr<RawClient>> held;
  while (!control.stop.load()) {
    control.rounds.fetch_add(1);
    ++report.rounds;
    const int action = static_cast<int>(random() % 4);
    if (action == 0) {
      // Garbage on a fresh connection: random bytes, a true prefix of another version, or nothing.
      UniqueFd socket = RawClient::connect_socket(test_socket_path(name));
      if (!socket) continue;
      std::vector<std::uint8_t> bytes(random() % 5000 + 1);
      for (auto& byte : bytes) byte = static_cast<std::uint8_t>(random());
      if (random() % 2) {
        const HandshakePrefix prefix{kHandshakeMagic, static_cast<std::uint32_t>(random() % 8),
                                     static_cast<std::uint32_t>(bytes.size())};
        if (bytes.size() >= sizeof prefix) std::memcpy(bytes.data(), &prefix, sizeof prefix);
      }
      if (random() % 8 != 0) ::send(socket.get(), bytes.data(), bytes.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      ++report.garbage_handshakes;
      continue;
    }
    std::unique_ptr<RawClient> client;
    try {
      client = std::make_unique<RawClient>(name, ConnectKind::kAttach, (random() % 4) * 4096, 2000ms);
    } catch (const std::exception&) {
      ++report.refused_connections;
      continue;
    }
    std::vector<UniqueFd>& fds = client->fds();
    // The sidecar's memory: no writable mapping, no upgrade, no resize, no new seal, no write,
    // no hole, whatever this client does.
    for (std::uint32_t which : {static_cast<std::uint32_t>(kStatusPageFd), static_cast<std::uint32_t>(kCacheFd)}) {
      if (which >= fds.size()) continue;
      const int fd = fds[which].get();
      const std::uint64_t bytes = which == kStatusPageFd ? client->reply().status_page_bytes : client->reply().cache_bytes;
      void* writable = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
      if (writable != MAP_FAILED) {
        ++report.sidecar_memory_writable;
        ::munmap(writable, bytes);
      }
      void* read_only = ::mmap(nullptr, bytes, PROT_READ, MAP_SHARED, fd, 0);
      if (read_only != MAP_FAILED) {
        if (::mprotect(read_only, bytes, PROT_READ | PROT_WRITE) == 0) ++report.sidecar_memory_writable;
        ::munmap(read_only, bytes);
      }
      if (::pwrite(fd, "x", 1, 0) == 1) ++report.sidecar_memory_writable;
      if (::fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 4096) == 0) ++report.sidecar_memory_writable;
      if (::fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE) == 0) ++report.sidecar_memory_writable;
      if (::ftruncate(fd, 0) == 0 || ::ftruncate(fd, static_cast<off_t>(bytes) * 2) == 0) ++report.resized;
    }
    // Its own channel: writable, but never resizable, and re-sealing is refused.
    const int channel_fd = fds[kChannelFd].get();
    if (::ftruncate(channel_fd, 4096) == 0 || ::ftruncate(channel_fd, 1 << 30) == 0) ++report.resized;
    if (::fcntl(channel_fd, F_ADD_SEALS, F_SEAL_WRITE) == 0) ++report.resized;
    // Random bytes over every byte of its channel: rings, indices, wait flag, arena.
    const SharedMapping& channel = client->channel_mapping();
    for (std::uint64_t offset = 0; offset + 8 <= channel.size(); offset += 8) {
      const std::uint64_t noise = random();
      std::memcpy(channel.base() + offset, &noise, 8);
    }
    if (random() % 4 == 0) ::fallocate(channel_fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 1 << 16);
    ++report.channels_scribbled;
    // Its eventfds: floods, a counter at its maximum, and reading away its own wake-ups.
    for (int i = 0; i < 64; ++i) {
      const std::uint64_t value = i == 0 ? 0xfffffffffffffffeull : random() | 1;
      [[maybe_unused]] const ssize_t a = ::write(fds[kRequestEventFd].get(), &value, sizeof value);
      std::uint64_t drained = 0;
      [[maybe_unused]] const ssize_t c = ::read(fds[kRequestEventFd].get(), &drained, sizeof drained);
    }
    ++report.eventfd_floods;
    if (random() % 4 == 0) {
      // A stubborn client: every fd it shares with the sidecar made blocking, its wake-up counter
      // full, asleep by its flag, with valid requests queued, and never reading its wake-ups.
      for (int fd : {fds[kRequestEventFd].get(), client->socket()}) ::fcntl(fd, F_SETFL, 0);
      const std::uint64_t full = 0xfffffffffffffffeull;
      [[maybe_unused]] const ssize_t filled = ::write(fds[kRequestEventFd].get(), &full, sizeof full);
      client->channel()->requests.head.store(0);
      client->channel()->responses.head.store(0);
      for (RequestRing::Cell& cell : client->channel()->requests.cells) cell.fills.store(0);
      for (ResponseRing::Cell& cell : client->channel()->responses.cells) cell.fills.store(0);
      for (std::uint64_t id = 0; id < kRingCapacity; ++id) {
        RequestDescriptor request = testing::tiny_request(id, 0, 1024, 1024);
        request.flags = kRequestFlagBypassCache;
        client->channel()->requests.cells[id].slot = request;
      }
      client->channel()->client_waiting.store(1);
      for (RequestRing::Cell& cell : client->channel()->requests.cells) cell.fills.store(1, std::memory_order_seq_cst);
      ++report.stubborn;
    } else if (random() % 3 == 0) {
      // Talking after the handshake ends the connection.
      const std::uint64_t noise = random();
      ::send(client->socket(), &noise, sizeof noise, MSG_NOSIGNAL | MSG_DONTWAIT);
      ++report.garbage_after_handshake;
    }
    // Keep a few open for a while, scribbled, beside fresh ones.
    held.push_back(std::move(client));
    if (held.size() > 4) held.erase(held.begin() + static_cast<std::ptrdiff_t>(random() % held.size()));
  }
  return report;
}

TEST(HostileClient, CannotHurtTheSidecarOrTheAnswersOfOtherClients) {
  SidecarProcess sidecar(unique_name("hostile"), tiny_sidecar_args({"--max-clients", "16", "--arena-bytes", "64K"}));
  ASSERT_TRUE(sidecar.wait_ready()) << sidecar.log();
  const Expected expected = expected_answers(sidecar.name(), 16);

  void* shared = ::mmap(nullptr, sizeof(AttackControl), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(shared, MAP_FAILED);
  auto* control = new (shared) AttackControl;
  testing::ReportingChild<HostileReport> hostile([&] { return attack(sidecar.name(), *control, 17); });

  // Counted, not timed: the honest clients make their calls while the attack goes on, and the
  // attack goes on for at least kRounds rounds however fast they are.
  constexpr int kCalls = 20000;
  constexpr std::uint64_t kRounds = 1000;
  Tally honest[2];
  std::thread first([&] { honest[0] = run_honest_client(sidecar.name(), expected, kCalls, 1); });
  std::thread second([&] { honest[1] = run_honest_client(sidecar.name(), expected, kCalls, 2); });
  first.join();
  second.join();
  const std::uint64_t rounds_during_honest_calls = control->rounds.load();
  while (control->rounds.load() < kRounds) std::this_thread::sleep_for(10ms);
  control->stop.store(true);
  HostileReport report;
  int hostile_status = -1;
  ASSERT_TRUE(hostile.collect(report, hostile_status)) << "the hostile client died: status " << hostile_status;
  ::munmap(shared, sizeof(AttackControl));
  EXPECT_GT(rounds_during_honest_calls, 0u) << "the attack did not overlap the honest calls";

  std::printf("hostile client: %llu rounds, %llu channels scribbled over, %llu garbage handshakes, %llu talks after "
              "the handshake, %llu eventfd floods, %llu stubborn clients, %llu connections refused\n",
              static_cast<unsigned long long>(report.rounds), static_cast<unsigned long long>(report.channels_scribbled),
              static_cast<unsigned long long>(report.garbage_handshakes),
              static_cast<unsigned long long>(report.garbage_after_handshake),
              static_cast<unsigned long long>(report.eventfd_floods), static_cast<unsigned long long>(report.stubborn),
              static_cast<unsigned long long>(report.refused_connections));
  for (const Tally& tally : honest) {
    EXPECT_EQ(tally.calls, static_cast<std::uint64_t>(kCalls));
    EXPECT_EQ(tally.wrong, 0u);
    EXPECT_EQ(tally.errors, 0u) << tally.first_error;
  }
  EXPECT_EQ(report.sidecar_memory_writable, 0u);
  EXPECT_EQ(report.resized, 0u);
  EXPECT_GT(report.channels_scribbled, 0u);
  EXPECT_GT(report.garbage_handshakes, 0u);
  EXPECT_GT(report.stubborn, 0u);
  ASSERT_FALSE(sidecar.has_exited()) << sidecar.log();
  auto status = read_status(sidecar.name());
  ASSERT_TRUE(status.ok()) << status.message();
  EXPECT_TRUE(status->ready);
  // Its channels were all taken back when it went.
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (read_status(sidecar.name())->clients_connected != 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_EQ(read_status(sidecar.name())->clients_connected, 0u);
  EXPECT_EQ(run_honest_client(sidecar.name(), expected, 100, 3).wrong, 0u);
  EXPECT_EQ(sidecar.stop(), 0) << sidecar.log();
  if (std::getenv("SHOW_LOG")) std::printf("%s\n", sidecar.log().c_str());
}

}  // namespace
}  // namespace sidecar
