// The trust boundary, tried as a hostile local user would: another user squatting the sidecar's
// names or posing as it, a client attacking everything it was given, a forked child, and what the
// sidecar leaves in /dev/shm (nothing). Real sidecar and client processes throughout.
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
using testing::unique_name;
using namespace std::chrono_literals;

constexpr std::int64_t kTinyShape[] = {1, 64};

std::vector<std::string> tiny_args(std::vector<std::string> more = {}) {
  std::vector<std::string> args{"--model", model_path("tiny"), "--warmup-shape", "1x64", "--warmup-iterations", "3"};
  args.insert(args.end(), more.begin(), more.end());
  return args;
}

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

// --- Another user ----------------------------------------------------------------------------------

// The attacks of the old design, by a user in no group of the sidecar's: squatting the names it
// used in /dev/shm, creating files or sockets under the name in its runtime directory, taking its
// lock, and listening on a socket where a client looks. None of them lets it pose as the sidecar
// or keep it from starting.
TEST(AnotherUser, CanNeitherPoseAsTheSidecarNorKeepItFromStarting) {
  if (!running_as_root()) GTEST_SKIP() << "needs root to act as another user";
  const std::string name = unique_name("squat");

  // Squatting what the old design used, before the sidecar starts.
  const int squatted = in_child(
      [&] {
        for (const std::string& path : {"/dev/shm/sidecar." + name, "/dev/shm/sidecar-cache." + name}) {
          const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL, 0666);
          if (fd < 0 || ::ftruncate(fd, 1 << 20) != 0) return false;
          std::vector<std::uint32_t> forged(1024, 1);  // "pid 1", "ready", answers of all ones
          [[maybe_unused]] const ssize_t written = ::write(fd, forged.data(), forged.size() * 4);
          ::close(fd);
        }
        // Nothing can be created in the runtime directory, and the lock cannot be opened.
        const std::string planted = test_socket_path(name);
        if (::open(planted.c_str(), O_RDWR | O_CREAT, 0666) >= 0 || errno != EACCES) return false;
        UniqueFd fake(::socket(AF_UNIX, SOCK_SEQPACKET, 0));
        const Result<sockaddr_un> address = unix_address(planted);
        if (::bind(fake.get(), reinterpret_cast<const sockaddr*>(&*address), sizeof(sockaddr_un)) == 0) return false;
        return errno == EACCES;
      },
      kNobody, kNogroup);
  ASSERT_EQ(squatted, 0);

  SidecarProcess sidecar(name, tiny_args());
  ASSERT_TRUE(sidecar.wait_ready()) << sidecar.log();
  const int locked_out = in_child(
      [&] {
        const int fd = ::open(lock_path(test_runtime_dir(), name).c_str(), O_RDONLY);
        return fd < 0 && errno == EACCES;
      },
      kNobody, kNogroup);
  EXPECT_EQ(locked_out, 0) << "another user could open (and flock) the lock file";
  Client client = connect_or_fail(name);
  EXPECT_EQ(client.model().sidecar_pid, sidecar.pid()) << "answered by someone else";
  const std::vector<float> input = random_values(64, 3);
  auto output = client.infer(TensorView::of(input, kTinyShape), 5s);
  ASSERT_TRUE(output.ok()) << output.message();
  for (const std::string& path : {"/dev/shm/sidecar." + name, "/dev/shm/sidecar-cache." + name}) ::unlink(path.c_str());
  EXPECT_EQ(sidecar.stop(), 0);
}

// A process of another user behind the socket a client would use is refused before the client
// sends it anything, by default (the runtime directory's owner is the uid to trust) and when the
// client was told which uid the sidecar runs as.
TEST(AnotherUser, BehindTheSocketIsRefusedAsUntrustedBeforeAnythingIsSent) {
  if (!running_as_root()) GTEST_SKIP() << "needs root to act as another user";
  const std::string name = unique_name("pose");
  const std::string path = test_socket_path(name);
  // Bound here (the directory is ours), listened on by the impostor: the kernel records the
  // credentials of the process that calls listen().
  UniqueFd listening(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  const Result<sockaddr_un> address = unix_address(path);
  ASSERT_EQ(::bind(listening.get(), reinterpret_cast<const sockaddr*>(&*address), sizeof(sockaddr_un)), 0);
  ASSERT_EQ(::chmod(path.c_str(), 0666), 0);
  int report[2];
  ASSERT_EQ(::pipe(report), 0);
  const pid_t impostor = ::fork();
  ASSERT_GE(impostor, 0);
  if (impostor == 0) {
    if (::setgid(kNogroup) != 0 || ::setuid(kNobody) != 0 || ::listen(listening.get(), 8) != 0) ::_exit(90);
    ::close(report[0]);
    // Counts the bytes clients send it before they hang up.
    std::uint64_t received = 0;
    for (int connection = 0; connection < 2; ++connection) {
      UniqueFd accepted(::accept(listening.get(), nullptr, nullptr));
      char buffer[4096];
      ssize_t got = 0;
      while ((got = ::recv(accepted.get(), buffer, sizeof buffer, 0)) > 0) received += static_cast<std::uint64_t>(got);
    }
    [[maybe_unused]] const ssize_t written = ::write(report[1], &received, sizeof received);
    ::_exit(0);
  }
  ::close(report[1]);

  auto by_default = Client::connect(name, testing::connect_options(5s, 0us));
  EXPECT_EQ(by_default.code(), ErrorCode::kUntrusted) << by_default.message();
  EXPECT_NE(by_default.message().find("runs as nobody (uid 65534), not as root (uid 0)"), std::string::npos)
      << by_default.message();
  EXPECT_NE(by_default.message().find("it is not the sidecar; nothing was sent to it"), std::string::npos)
      << by_default.message();
  ConnectOptions told;
  told.timeout = 5s;
  told.sidecar_uid = 0;
  auto when_told = Client::connect(name, told);
  EXPECT_EQ(when_told.code(), ErrorCode::kUntrusted) << when_told.message();

  std::uint64_t received = ~0ull;
  EXPECT_EQ(::read(report[0], &received, sizeof received), static_cast<ssize_t>(sizeof received));
  ::close(report[0]);
  EXPECT_EQ(testing::exit_status_of(impostor), 0);
  EXPECT_EQ(received, 0u) << "a client sent bytes to the impostor";
  ::unlink(path.c_str());
}

// Another user who makes a runtime directory first, under /tmp, and listens there: its ownership
// of the directory proves nothing (anyone may create under /tmp), so a client pointed there trusts
// only root or its own user, and refuses the squatter.
TEST(AnotherUser, OwningADirectoryOthersCouldHaveMadeProvesNothing) {
  if (!running_as_root()) GTEST_SKIP() << "needs root to act as another user";
  const std::string dir = "/tmp/sidecar-squatted-" + std::to_string(::getpid());
  const std::string name = "demo";
  int report[2];
  ASSERT_EQ(::pipe(report), 0);
  const pid_t squatter = ::fork();
  ASSERT_GE(squatter, 0);
  if (squatter == 0) {
    if (::setgid(kNogroup) != 0 || ::setuid(kNobody) != 0 || ::mkdir(dir.c_str(), 0755) != 0) ::_exit(90);
    UniqueFd listening(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
    const Result<sockaddr_un> address = unix_address(socket_path(dir, name));
    if (::bind(listening.get(), reinterpret_cast<const sockaddr*>(&*address), sizeof(sockaddr_un)) != 0 ||
        ::chmod(socket_path(dir, name).c_str(), 0666) != 0 || ::listen(listening.get(), 4) != 0) {
      ::_exit(91);
    }
    const char ready = 'r';
    [[maybe_unused]] const ssize_t said = ::write(report[1], &ready, 1);
    UniqueFd accepted(::accept(listening.get(), nullptr, nullptr));
    char buffer[64];
    const ssize_t got = ::recv(accepted.get(), buffer, sizeof buffer, 0);
    ::_exit(got > 0 ? 1 : 0);  // 1: a client told it something
  }
  char ready = 0;
  ASSERT_EQ(::read(report[0], &ready, 1), 1);
  ConnectOptions options = testing::connect_options(2s, 0us);
  options.runtime_dir = dir;
  auto client = Client::connect(name, options);
  EXPECT_EQ(client.code(), ErrorCode::kUntrusted) << client.message();
  EXPECT_NE(client.message().find("lies under /tmp, which others can write, so its owner proves nothing"),
            std::string::npos)
      << client.message();
  EXPECT_EQ(testing::exit_status_of(squatter), 0) << "the squatter received bytes";
  ::close(report[0]);
  ::close(report[1]);
  std::filesystem::remove_all(dir);
}

// A user the socket's mode keeps out is told so, with the socket and the group to join; one the
// socket lets in but --allow-user/--allow-group do not is told who is admitted.
TEST(AnotherUser, IsToldWhyItMayNotConnect) {
  if (!running_as_root()) GTEST_SKIP() << "needs root to act as another user";
  SidecarProcess closed(unique_name("closed"), tiny_args());  // socket mode 0660, root:root
  SidecarProcess narrowed(unique_name("narrow"), tiny_args({"--socket-mode", "0666", "--allow-user", "root",
                                                            "--allow-group", "daemon"}));
  ASSERT_TRUE(closed.wait_ready()) << closed.log();
  ASSERT_TRUE(narrowed.wait_ready()) << narrowed.log();
  struct Seen {
    ErrorCode code;
    char message[1024];
  };
  auto attempt = [&](const std::string& name, gid_t gid) {
    testing::ReportingChild<Seen> child([&] {
      Seen seen{};
      if (::setgroups(0, nullptr) != 0 || ::setgid(gid) != 0 || ::setuid(kNobody) != 0) {
        seen.code = ErrorCode::kProtocolError;
        std::strncpy(seen.message, "the test could not change user", sizeof seen.message - 1);
        return seen;
      }
      auto client = Client::connect(name, testing::connect_options(2s, 0us));
      seen.code = client.code();
      std::strncpy(seen.message, client.message().c_str(), sizeof seen.message - 1);
      return seen;
    });
    Seen seen{};
    int status = 0;
    EXPECT_TRUE(child.collect(seen, status));
    return seen;
  };
  const Seen denied = attempt(closed.name(), kNogroup);
  EXPECT_EQ(denied.code, ErrorCode::kPermissionDenied) << denied.message;
  EXPECT_NE(std::string(denied.message).find("permission denied on " + test_socket_path(closed.name()) +
                                             " (owner root, group root, mode 0660): run as a member of group 'root'"),
            std::string::npos)
      << denied.message;
  const Seen refused = attempt(narrowed.name(), kNogroup);
  EXPECT_EQ(refused.code, ErrorCode::kPermissionDenied) << refused.message;
  EXPECT_NE(std::string(refused.message)
                .find("user nobody (uid 65534) may not use this sidecar: it admits users root and members of groups "
                      "daemon"),
            std::string::npos)
      << refused.message;
  EXPECT_NE(narrowed.log().find("refused pid"), std::string::npos) << "refusals are logged";
  const Seen admitted = attempt(narrowed.name(), 1);  // gid 1 is daemon on Debian
  EXPECT_EQ(admitted.code, ErrorCode::kOk) << admitted.message;
  EXPECT_EQ(closed.stop(), 0);
  EXPECT_EQ(narrowed.stop(), 0);
}

// One user holding many connections open without a word cannot crowd out another user's
// handshake: the queue of handshakes is bounded per user.
TEST(AnotherUser, CannotBeCrowdedOutOfTheHandshake) {
  if (!running_as_root()) GTEST_SKIP() << "needs root to act as another user";
  SidecarProcess sidecar(unique_name("crowd"), tiny_args({"--socket-mode", "0666"}));
  ASSERT_TRUE(sidecar.wait_ready()) << sidecar.log();
  std::vector<UniqueFd> silent;
  for (int i = 0; i < 300; ++i) silent.push_back(RawClient::connect_socket(test_socket_path(sidecar.name())));
  auto crowded = Client::connect(sidecar.name(), testing::connect_options(300ms, 0us));
  EXPECT_EQ(crowded.code(), ErrorCode::kBusy) << error_code_name(crowded.code()) << ": " << crowded.message();
  EXPECT_NE(crowded.message().find("has 64 connections in their handshake already"), std::string::npos)
      << crowded.message();
  const int other_user = in_child(
      [&] {
        auto client = Client::connect(sidecar.name(), testing::connect_options(5s, 0us));
        return client.ok() && client->infer(TensorView::of(random_values(64, 1), kTinyShape), 5s).ok();
      },
      kNobody, kNogroup);
  EXPECT_EQ(other_user, 0);
  silent.clear();
  EXPECT_TRUE(Client::connect(sidecar.name()).ok());
  EXPECT_EQ(sidecar.stop(), 0);
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
      client->channel()->requests.tail.store(0);
      client->channel()->responses.head.store(0);
      client->channel()->responses.tail.store(0);
      for (std::uint64_t id = 0; id < kRingCapacity; ++id) {
        RequestDescriptor request{};
        request.request_id = id;
        request.input_count = 1;
        request.inputs[0].shape.dtype = static_cast<std::uint8_t>(DType::kFloat32);
        request.inputs[0].shape.rank = 2;
        request.inputs[0].shape.dims[0] = 1;
        request.inputs[0].shape.dims[1] = 64;
        request.inputs[0].bytes = 256;
        request.output_offset = 1024;
        request.output_capacity = 1024;
        request.flags = kRequestFlagBypassCache;
        client->channel()->requests.slots[id] = request;
      }
      client->channel()->client_waiting.store(1);
      client->channel()->requests.tail.store(kRingCapacity, std::memory_order_seq_cst);
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
  SidecarProcess sidecar(unique_name("hostile"), tiny_args({"--max-clients", "16", "--arena-bytes", "64K"}));
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
