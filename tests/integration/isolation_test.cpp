// The trust boundary, tried by another local user: squatting the sidecar's names, posing as it,
// making its runtime directory first, being refused, crowding the handshake. The hostile client is
// in hostile_client_test.cpp. Real sidecar and client processes throughout.
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

  SidecarProcess sidecar(name, tiny_sidecar_args());
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
  SidecarProcess closed(unique_name("closed"), tiny_sidecar_args());  // socket mode 0660, root:root
  SidecarProcess narrowed(unique_name("narrow"), tiny_sidecar_args({"--socket-mode", "0666", "--allow-user", "root",
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

// A refused client that sends its request only after the sidecar has refused it still reads why:
// the sidecar holds the refused connection until the request comes, since a send to a connection
// already closed makes the kernel drop the reply waiting for the sender.
TEST(AnotherUser, ARefusedClientReadsWhyWhenItAsksOrReadsLate) {
  if (!running_as_root()) GTEST_SKIP() << "needs root to act as another user";
  SidecarProcess sidecar(unique_name("late"), tiny_sidecar_args({"--socket-mode", "0666", "--allow-user", "root"}));
  ASSERT_TRUE(sidecar.wait_ready()) << sidecar.log();
  // Asking late: the sidecar refused at accept long before the request. Reading late: the request
  // was there when it refused, and the reply waits for a client that reads it only later.
  for (const bool ask_late : {true, false}) {
    SCOPED_TRACE(ask_late ? "asks late" : "reads late");
    const int read_why = in_child(
      [&] {
        UniqueFd socket = RawClient::connect_socket(test_socket_path(sidecar.name()));
        if (ask_late) std::this_thread::sleep_for(300ms);
        ConnectRequest request{};
        request.prefix = make_prefix(sizeof request);
        request.kind = static_cast<std::uint32_t>(ConnectKind::kAttach);
        [[maybe_unused]] const Done sent = send_message(socket.get(), &request, sizeof request);
        if (!ask_late) std::this_thread::sleep_for(300ms);
        alignas(8) std::byte buffer[kMaxHandshakeBytes];
        Result<ReceivedMessage> received = receive_message(socket.get(), buffer, sizeof buffer, 0);
        if (!received.ok() || received->kind != ReceivedMessage::Kind::kMessage) return false;
        Result<ConnectReply> reply = parse_connect_reply(std::span<const std::byte>(buffer, received->bytes));
        return reply.ok() && reply->outcome == static_cast<std::uint32_t>(ConnectOutcome::kNotAllowed) &&
               reply_message(*reply).find("may not use this sidecar") != std::string::npos;
      },
      kNobody, kNogroup);
    EXPECT_EQ(read_why, 0);
  }
  EXPECT_EQ(sidecar.stop(), 0);
}

// One user holding many connections open without a word cannot crowd out another user's
// handshake: the queue of handshakes is bounded per user.
TEST(AnotherUser, CannotBeCrowdedOutOfTheHandshake) {
  if (!running_as_root()) GTEST_SKIP() << "needs root to act as another user";
  SidecarProcess sidecar(unique_name("crowd"), tiny_sidecar_args({"--socket-mode", "0666"}));
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

}  // namespace
}  // namespace sidecar
