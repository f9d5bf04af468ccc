// Who is alive, told by the socket: clients killed at any point are reclaimed from their hang-up,
// clients of a killed sidecar reconnect to its successor by themselves, one live sidecar per name,
// a forked child leaves its parent's client alone, and no end of the sidecar leaves anything in
// /dev/shm. Real sidecar and client processes throughout.
#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <fstream>
#include <random>
#include <set>
#include <thread>

#include "child_process.hpp"
#include "client_helpers.hpp"
#include "sidecar/client.hpp"
#include "sidecar_process.hpp"

namespace sidecar {
namespace {

using testing::kTinyShape;
using testing::connect_or_fail;
using testing::model_path;
using testing::random_values;
using testing::SidecarProcess;
using testing::socket_exists;
using testing::test_runtime_dir;
using testing::tiny_sidecar_args;
using testing::unique_name;
using namespace std::chrono_literals;


SidecarStatus status_of(const std::string& name) {
  auto status = read_status(name);
  if (!status.ok()) throw std::runtime_error(status.message());
  return *status;
}

// --- Clients that die ------------------------------------------------------------------------------

// 200 client processes killed with SIGKILL at random points (connecting, mid-request, idle), in
// waves, while two honest clients keep calling: every channel is reclaimed from the hang-up.
TEST(KilledClients, EveryChannelIsReclaimedFromTheHangUp) {
  SidecarProcess sidecar(unique_name("killed"), tiny_sidecar_args({"--max-clients", "40", "--arena-bytes", "64K"}));
  ASSERT_TRUE(sidecar.wait_ready()) << sidecar.log();
  std::atomic<bool> honest_stop{false};
  std::atomic<std::uint64_t> honest_calls{0}, honest_failures{0};
  std::vector<std::thread> honest;
  for (int h = 0; h < 2; ++h) {
    honest.emplace_back([&, h] {
      Client client = connect_or_fail(sidecar.name());
      const std::vector<float> input = random_values(64, 70 + static_cast<std::uint32_t>(h));
      auto first = client.infer(TensorView::of(input, kTinyShape), 10s, CachePolicy::kBypass);
      while (!honest_stop.load()) {
        auto output = client.infer(TensorView::of(input, kTinyShape), 10s, CachePolicy::kBypass);
        ++honest_calls;
        if (!output.ok() || !first.ok() || (*output)[0].data != (*first)[0].data) ++honest_failures;
      }
    });
  }
  ASSERT_TRUE(testing::wait_until([&] { return status_of(sidecar.name()).clients_connected == 2; }));

  constexpr int kWaves = 10;
  constexpr int kPerWave = 20;
  std::mt19937 random(99);
  std::vector<double> reclaim_ms;
  for (int wave = 0; wave < kWaves; ++wave) {
    std::vector<pid_t> children;
    for (int c = 0; c < kPerWave; ++c) {
      const pid_t child = ::fork();
      ASSERT_GE(child, 0);
      if (child == 0) {
        auto client = Client::connect(sidecar.name());
        if (!client.ok()) ::_exit(2);
        const std::vector<float> input = random_values(64, 1000 + static_cast<std::uint32_t>(c));
        while (true) (void)client->infer(TensorView::of(input, kTinyShape), 10s, CachePolicy::kBypass);
      }
      children.push_back(child);
    }
    // Killed anywhere from before their handshake to deep in their calls.
    for (pid_t child : children) {
      std::this_thread::sleep_for(std::chrono::microseconds(random() % 3000));
      ::kill(child, SIGKILL);
    }
    const auto killed = std::chrono::steady_clock::now();
    for (pid_t child : children) testing::exit_status_of(child);
    ASSERT_TRUE(testing::wait_until([&] { return status_of(sidecar.name()).clients_connected == 2; }))
        << "wave " << wave << ": " << status_of(sidecar.name()).clients_connected << " connected";
    reclaim_ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - killed).count());
  }
  honest_stop.store(true);
  for (auto& thread : honest) thread.join();

  const SidecarStatus status = status_of(sidecar.name());
  std::sort(reclaim_ms.begin(), reclaim_ms.end());
  std::printf("reclaimed %llu channels; in the sidecar, from a hang-up to its channel's reclaim: at most %.3f ms; "
              "seen from here, %d waves of %d kills, from the last kill of a wave to all reclaimed: median %.2f ms, "
              "max %.2f ms; honest calls meanwhile: %llu\n",
              static_cast<unsigned long long>(status.clients_reclaimed), status.slowest_reclaim_ns / 1e6, kWaves,
              kPerWave, reclaim_ms[reclaim_ms.size() / 2], reclaim_ms.back(),
              static_cast<unsigned long long>(honest_calls.load()));
  // Every channel handed out was taken back (the honest two included, after they left: their
  // hang-ups reach the sidecar after their threads are joined, so this is waited for).
  EXPECT_TRUE(testing::wait_until([&] {
    const SidecarStatus now = status_of(sidecar.name());
    return now.clients_connected == 0 && now.clients_reclaimed == now.clients_admitted;
  }));
  EXPECT_GE(status_of(sidecar.name()).clients_admitted, 2u);
  EXPECT_EQ(honest_failures.load(), 0u);
  EXPECT_GT(honest_calls.load(), 0u);
  EXPECT_FALSE(sidecar.has_exited());
  EXPECT_EQ(sidecar.stop(), 0) << sidecar.log();
}

// --- A sidecar that dies ---------------------------------------------------------------------------

// The sidecar killed with SIGKILL under load and started again: the clients, left alone by their
// application, answer "sidecar gone" (or "not running") while it is down, never anything else,
// and their next calls once it is back succeed with correct answers over a new connection.
TEST(KilledSidecar, ClientsReconnectByThemselvesAndNeverAnswerOverloaded) {
  const std::string name = unique_name("restart");
  auto first = std::make_unique<SidecarProcess>(name, tiny_sidecar_args());
  ASSERT_TRUE(first->wait_ready()) << first->log();
  const std::uint64_t first_generation = status_of(name).model.start_generation;

  constexpr int kClients = 4;
  std::atomic<bool> back{false};
  std::atomic<int> clients_started{0};
  std::atomic<int> clients_done{0};
  struct Outcome {
    std::uint64_t before = 0, during_allowed = 0, during_other = 0, after_ok = 0, after_failed = 0, wrong = 0;
    std::uint64_t connections = 0, generation = 0;
    std::string other;
  };
  std::vector<Outcome> outcomes(kClients);
  std::vector<std::thread> clients;
  for (int c = 0; c < kClients; ++c) {
    clients.emplace_back([&, c] {
      Outcome& outcome = outcomes[c];
      ConnectOptions options;
      options.timeout = 100ms;  // while it is down, each call waits at most this long for it
      Client client = connect_or_fail(name, options);
      const std::vector<float> input = random_values(64, 80 + static_cast<std::uint32_t>(c));
      auto reference = client.infer(TensorView::of(input, kTinyShape), 10s, CachePolicy::kBypass);
      if (!reference.ok()) {
        outcome.other = "reference call: " + reference.message();
        return;
      }
      const std::vector<std::byte> expected = (*reference)[0].data;
      ++clients_started;
      // Before, during and after: keep calling until 200 calls after the restart succeeded.
      while (outcome.after_ok < 200 && outcome.after_failed < 200) {
        const bool restarted = back.load();
        auto output = client.infer(TensorView::of(input, kTinyShape), 200ms, CachePolicy::kBypass);
        if (output.ok()) {
          if ((*output)[0].data != expected) ++outcome.wrong;
          if (restarted) ++outcome.after_ok;
          else ++outcome.before;
          continue;
        }
        if (restarted) {
          ++outcome.after_failed;
          outcome.other = std::string(error_code_name(output.code())) + ": " + output.message();
        } else if (output.code() == ErrorCode::kSidecarGone || output.code() == ErrorCode::kNotRunning ||
                   output.code() == ErrorCode::kNotReady) {
          ++outcome.during_allowed;
          std::this_thread::sleep_for(1ms);
        } else {
          ++outcome.during_other;
          outcome.other = std::string(error_code_name(output.code())) + ": " + output.message();
        }
      }
      outcome.connections = client.connections();
      outcome.generation = client.model().start_generation;
      ++clients_done;
    });
  }
  // Killed once every client has its reference answer and is calling.
  ASSERT_TRUE(testing::wait_until([&] { return clients_started.load() == kClients && status_of(name).requests > 400; }));
  first->stop(SIGKILL);
  first.reset();
  SidecarProcess second(name, tiny_sidecar_args());
  ASSERT_TRUE(second.wait_ready()) << second.log();
  back.store(true);
  for (auto& thread : clients) thread.join();
  for (int c = 0; c < kClients; ++c) {
    SCOPED_TRACE("client " + std::to_string(c));
    const Outcome& outcome = outcomes[c];
    EXPECT_GT(outcome.before, 0u);
    EXPECT_EQ(outcome.during_other, 0u) << outcome.other;
    EXPECT_EQ(outcome.after_ok, 200u) << outcome.other;
    EXPECT_EQ(outcome.after_failed, 0u) << outcome.other;
    EXPECT_EQ(outcome.wrong, 0u);
    EXPECT_EQ(outcome.connections, 2u);
    EXPECT_EQ(outcome.generation, first_generation + 1);
  }
  EXPECT_EQ(clients_done.load(), kClients);
  EXPECT_EQ(second.stop(), 0) << second.log();
}

// A client that slept for its last answer leaves the wake-up byte unread on its socket until its
// next sleep. The sidecar's hang-up behind that byte must still be seen before the next request
// is posted, rather than the request posted into a dead channel.
TEST(StoppedSidecar, TheNextCallSeesTheHangUpBehindAnUnreadWakeUp) {
  const std::string name = unique_name("behind");
  SidecarProcess sidecar(name, tiny_sidecar_args({"--spin-us", "0", "--cache-bytes", "0"}));
  ASSERT_TRUE(sidecar.wait_ready()) << sidecar.log();
  ConnectOptions options;
  options.spin = 0us;  // every answer comes by a wake-up
  Client client = connect_or_fail(name, options);
  const auto input = random_values(64, 3);
  ASSERT_TRUE(client.infer(TensorView::of(input, kTinyShape), 5s).ok());
  ASSERT_EQ(sidecar.stop(), 0);
  std::this_thread::sleep_for(10ms);  // past the client's once-a-millisecond look at its socket
  auto after = client.infer(TensorView::of(input, kTinyShape), 500ms);
  // Seen before posting, the hang-up sends the client to reconnect, and there is no sidecar; seen
  // only while waiting, it would be "gone while the request was in flight".
  ASSERT_FALSE(after.ok());
  EXPECT_EQ(after.code(), ErrorCode::kNotRunning) << after.message();
}

// Two sidecars of one name started 10 ms apart, twenty times over: exactly one serves; the other
// is refused at once, naming the one that holds the name.
TEST(OneLiveSidecarPerName, TwoStartsTenMillisecondsApartServeOnce) {
  const std::string name = unique_name("twice");
  for (int round = 0; round < 20; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    SidecarProcess first(name, tiny_sidecar_args());
    std::this_thread::sleep_for(10ms);
    SidecarProcess second(name, tiny_sidecar_args());
    const bool first_ready = first.wait_ready();
    const bool second_ready = !first_ready && second.wait_ready();
    SidecarProcess& winner = first_ready ? first : second;
    SidecarProcess& loser = first_ready ? second : first;
    ASSERT_TRUE(first_ready || second_ready) << first.log() << second.log();
    EXPECT_EQ(loser.wait_exit(), 1) << loser.log();
    EXPECT_NE(loser.log().find("another sidecar named '" + name + "' is running (pid " + std::to_string(winner.pid())),
              std::string::npos)
        << loser.log();
    EXPECT_EQ(status_of(name).model.sidecar_pid, winner.pid());
    EXPECT_EQ(winner.stop(), 0) << winner.log();
  }
}

// --- A forked child ------------------------------------------------------------------------------

// A child forked from a process with a connected client may try to use it, drop it, or just exit:
// the parent's client keeps working, because the child never touches the parent's connection.
TEST(ForkedChild, LeavesItsParentsClientAlone) {
  SidecarProcess sidecar(unique_name("fork"), tiny_sidecar_args());
  ASSERT_TRUE(sidecar.wait_ready()) << sidecar.log();
  auto client = std::make_unique<Client>(connect_or_fail(sidecar.name()));
  const std::vector<float> input = random_values(64, 5);
  auto before = client->infer(TensorView::of(input, kTinyShape), 5s, CachePolicy::kBypass);
  ASSERT_TRUE(before.ok()) << before.message();
  for (const char* what : {"uses it", "destroys it", "exits"}) {
    SCOPED_TRACE(what);
    const int child = testing::in_child([&] {
      if (std::string(what) == "uses it") {
        auto used = client->infer(TensorView::of(input, kTinyShape), 1s);
        auto submitted = client->submit(std::vector<TensorView>{TensorView::of(input, kTinyShape)});
        return used.code() == ErrorCode::kInvalidArgument && submitted.code() == ErrorCode::kInvalidArgument &&
               used.message().find("connected before fork()") != std::string::npos;
      }
      if (std::string(what) == "destroys it") client.reset();
      std::exit(0);  // runs atexit handlers and static destructors, as a real child's exit would
    });
    EXPECT_EQ(child, 0);
    for (int call = 0; call < 50; ++call) {
      auto after = client->infer(TensorView::of(input, kTinyShape), 5s, CachePolicy::kBypass);
      ASSERT_TRUE(after.ok()) << after.message();
      EXPECT_EQ((*after)[0].data, (*before)[0].data);
    }
    EXPECT_EQ(client->connections(), 1u);
    EXPECT_EQ(status_of(sidecar.name()).clients_connected, 1u);
  }
  // A child that outlives its parent's client: the parent's hang-up still reaches the sidecar,
  // because the child let go of the inherited connection when it was born.
  int release[2];
  ASSERT_EQ(::pipe(release), 0);
  const pid_t lingering = ::fork();
  ASSERT_GE(lingering, 0);
  if (lingering == 0) {
    char byte = 0;
    [[maybe_unused]] const ssize_t waited = ::read(release[0], &byte, 1);
    ::_exit(0);
  }
  client.reset();
  EXPECT_TRUE(testing::wait_until([&] { return status_of(sidecar.name()).clients_connected == 0; }, 10s))
      << "the child kept its parent's channel alive";
  [[maybe_unused]] const ssize_t released = ::write(release[1], "x", 1);
  EXPECT_EQ(testing::exit_status_of(lingering), 0);
  ::close(release[0]);
  ::close(release[1]);
  EXPECT_EQ(sidecar.stop(), 0);
}

// --- Nothing left behind ---------------------------------------------------------------------------

std::set<std::string> dev_shm_entries() {
  std::set<std::string> names;
  if (DIR* directory = ::opendir("/dev/shm")) {
    while (const dirent* entry = ::readdir(directory)) {
      if (std::strcmp(entry->d_name, ".") != 0 && std::strcmp(entry->d_name, "..") != 0) names.insert(entry->d_name);
    }
    ::closedir(directory);
  }
  return names;
}

// What process `pid` maps or holds open under /dev/shm; empty when nothing.
std::string dev_shm_use_of(pid_t pid) {
  std::ifstream maps("/proc/" + std::to_string(pid) + "/maps");
  for (std::string line; std::getline(maps, line);) {
    if (line.find("/dev/shm/") != std::string::npos) return "maps " + line;
  }
  const std::string fd_dir = "/proc/" + std::to_string(pid) + "/fd";
  std::string found;
  if (DIR* directory = ::opendir(fd_dir.c_str())) {
    while (const dirent* entry = ::readdir(directory)) {
      char target[4096] = {};
      const std::string link = fd_dir + "/" + entry->d_name;
      if (::readlink(link.c_str(), target, sizeof target - 1) > 0 && std::strncmp(target, "/dev/shm/", 9) == 0) {
        found = "holds " + std::string(target);
      }
    }
    ::closedir(directory);
  }
  return found;
}

// What the runtime directory holds for `name` besides NAME.lock and a socket the next start
// replaces.
std::vector<std::string> leftovers_of(const std::string& name) {
  std::vector<std::string> left;
  if (DIR* directory = ::opendir(test_runtime_dir().c_str())) {
    while (const dirent* entry = ::readdir(directory)) {
      const std::string file = entry->d_name;
      if (file.find(name) == std::string::npos) continue;
      if (file != name + ".lock" && file != name + ".sock") left.push_back(file);
    }
    ::closedir(directory);
  }
  return left;
}

// No file under /dev/shm while a sidecar serves (and clients use it), nor after any way it ends:
// SIGTERM, SIGKILL at start, during warm-up, while serving, while stopping. Each time the next
// start under the name replaces what is left (at most the socket) and serves.
TEST(NothingLeftBehind, NoFileInDevShmWhileServingOrAfterAnyEnd) {
  const std::set<std::string> before = dev_shm_entries();
  const std::string name = unique_name("leftover");
  const std::vector<std::string> slow_warmup = {"--model", model_path("demo"), "--warmup-shape", "1x3x224x224",
                                                "--workers", "1", "--warmup-iterations", "100000"};
  struct End {
    const char* what;
    std::vector<std::string> args;
    // Brings the sidecar to the moment of its end, then ends it; returns its exit status.
    std::function<int(SidecarProcess&)> end;
  };
  const std::vector<float> image = random_values(testing::kImageElements, 1);
  const std::vector<End> ends = {
      {"SIGTERM while serving", tiny_sidecar_args(),
       [&](SidecarProcess& sidecar) {
         EXPECT_TRUE(sidecar.wait_ready()) << sidecar.log();
         Client client = connect_or_fail(sidecar.name());
         EXPECT_TRUE(client.infer(TensorView::of(random_values(64, 2), kTinyShape), 5s).ok());
         EXPECT_EQ(dev_shm_use_of(sidecar.pid()), "");
         EXPECT_EQ(dev_shm_use_of(::getpid()), "") << "the client";
         EXPECT_EQ(dev_shm_entries(), before);
         return sidecar.stop(SIGTERM);
       }},
      {"SIGKILL at start", tiny_sidecar_args(), [&](SidecarProcess& sidecar) { return sidecar.stop(SIGKILL); }},
      {"SIGKILL during warm-up", slow_warmup,
       [&](SidecarProcess& sidecar) {
         EXPECT_TRUE(testing::wait_until([&] { return sidecar.log().find("listening on") != std::string::npos; }));
         EXPECT_EQ(dev_shm_use_of(sidecar.pid()), "");
         return sidecar.stop(SIGKILL);
       }},
      {"SIGKILL while serving", tiny_sidecar_args(),
       [&](SidecarProcess& sidecar) {
         EXPECT_TRUE(sidecar.wait_ready()) << sidecar.log();
         Client client = connect_or_fail(sidecar.name());
         EXPECT_TRUE(client.infer(TensorView::of(random_values(64, 2), kTinyShape), 5s).ok());
         return sidecar.stop(SIGKILL);
       }},
      {"SIGKILL while stopping",
       {"--model", model_path("demo"), "--warmup-shape", "1x3x224x224", "--workers", "1", "--warmup-iterations", "1"},
       [&](SidecarProcess& sidecar) {
         EXPECT_TRUE(sidecar.wait_ready()) << sidecar.log();
         Client client = connect_or_fail(sidecar.name());
         auto handle = client.submit(std::vector<TensorView>{TensorView::of(image, testing::kImageShape)});
         EXPECT_TRUE(handle.ok()) << handle.message();
         ::kill(sidecar.pid(), SIGTERM);
         EXPECT_TRUE(testing::wait_until([&] { return sidecar.log().find("draining") != std::string::npos; }));
         return sidecar.stop(SIGKILL);
       }},
  };
  for (const End& end : ends) {
    SCOPED_TRACE(end.what);
    {
      SidecarProcess sidecar(name, end.args);
      end.end(sidecar);
    }
    EXPECT_EQ(dev_shm_entries(), before);
    EXPECT_EQ(leftovers_of(name), std::vector<std::string>{});
    SidecarProcess next(name, tiny_sidecar_args());
    ASSERT_TRUE(next.wait_ready()) << next.log();
    EXPECT_TRUE(connect_or_fail(name).infer(TensorView::of(random_values(64, 4), kTinyShape), 5s).ok());
    EXPECT_EQ(next.stop(), 0);
    EXPECT_FALSE(socket_exists(name));
  }
}

}  // namespace
}  // namespace sidecar
