// The memory behind clients' channels: committed when a channel is made, bounded by a budget that
// a client cannot stretch, refused with a clear error when the memory is not there (the host's or
// the service's cgroup limit), and a client that frees pages under the sidecar is dropped.
#include <fcntl.h>
#include <poll.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "child_process.hpp"
#include "client_helpers.hpp"
#include "raw_client.hpp"
#include "sidecar/client.hpp"
#include "sidecar_process.hpp"

namespace sidecar {
namespace {

using testing::kTinyShape;
using testing::connect_or_fail;
using testing::model_path;
using testing::RawClient;
using testing::random_values;
using testing::SidecarProcess;
using testing::unique_name;
using namespace std::chrono_literals;

std::vector<std::string> tiny_args(std::vector<std::string> more = {}) {
  more.insert(more.begin(), {"--cache-bytes", "0"});
  return testing::tiny_sidecar_args(std::move(more));
}

ConnectOptions with_arena(std::uint64_t bytes) {
  ConnectOptions options;
  options.timeout = 2s;
  options.arena_bytes = bytes;
  return options;
}

// A client may ask for its arena's size, up to --max-arena-bytes; together the channels commit at
// most --channel-memory, counted by what was committed, so freeing pages does not make room.
TEST(ChannelMemory, ArenasAreAskedForWithinLimitsAndTheBudgetHolds) {
  SidecarProcess sidecar(unique_name("budget"),
                         tiny_args({"--arena-bytes", "256K", "--max-arena-bytes", "1M", "--channel-memory", "3M"}));
  ASSERT_TRUE(sidecar.wait_ready()) << sidecar.log();
  auto small = Client::connect(sidecar.name());
  ASSERT_TRUE(small.ok()) << small.message();
  EXPECT_EQ(small->model().arena_bytes, 256u << 10);
  auto big = Client::connect(sidecar.name(), with_arena(1 << 20));
  ASSERT_TRUE(big.ok()) << big.message();
  EXPECT_EQ(big->model().arena_bytes, 1u << 20);
  auto rounded = Client::connect(sidecar.name(), with_arena(5000));
  ASSERT_TRUE(rounded.ok()) << rounded.message();
  EXPECT_EQ(rounded->model().arena_bytes, 8192u) << "rounded up to whole pages";
  auto too_big = Client::connect(sidecar.name(), with_arena(2 << 20));
  EXPECT_EQ(too_big.code(), ErrorCode::kInvalidArgument) << too_big.message();
  EXPECT_NE(too_big.message().find("allows at most 1048576 (--max-arena-bytes)"), std::string::npos)
      << too_big.message();
  // 256K + 1M + 8K of arenas (and their rings) are in; another 1M would pass 3M.
  auto another = Client::connect(sidecar.name(), with_arena(1 << 20));
  ASSERT_TRUE(another.ok()) << another.message();
  auto over = Client::connect(sidecar.name(), with_arena(1 << 20));
  EXPECT_EQ(over.code(), ErrorCode::kOutOfMemory) << over.message();
  EXPECT_NE(over.message().find("bytes this sidecar gives them (--channel-memory)"), std::string::npos)
      << over.message();
  EXPECT_TRUE(big->infer(TensorView::of(random_values(64, 1), kTinyShape), 5s).ok());
  big = Result<Client>(ErrorCode::kCancelled, "let go");  // its channel goes back
  EXPECT_TRUE(testing::wait_until([&] { return Client::connect(sidecar.name(), with_arena(1 << 20)).ok(); }));
  EXPECT_EQ(sidecar.stop(), 0);
}

// A client that punches holes in its own channel frees pages the sidecar would fault back in,
// charged to itself: it is dropped (its socket closed) once seen, and nobody else notices.
TEST(ChannelMemory, AClientPunchingHolesInItsChannelIsDropped) {
  SidecarProcess sidecar(unique_name("holes"), tiny_args({"--arena-bytes", "64K"}));
  ASSERT_TRUE(sidecar.wait_ready()) << sidecar.log();
  Client honest = connect_or_fail(sidecar.name());
  RawClient puncher(sidecar.name());
  ASSERT_EQ(::fallocate(puncher.fds()[kChannelFd].get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 40960, 4096), 0);
  pollfd hangup{puncher.socket(), POLLRDHUP, 0};
  ASSERT_EQ(::poll(&hangup, 1, 10000), 1) << "not dropped";
  EXPECT_TRUE(hangup.revents & (POLLRDHUP | POLLHUP));
  EXPECT_NE(sidecar.log().find("punched a hole in its channel at byte 40960; dropping it"), std::string::npos)
      << sidecar.log();
  EXPECT_TRUE(honest.infer(TensorView::of(random_values(64, 2), kTinyShape), 5s).ok());
  EXPECT_EQ(sidecar.stop(), 0);
}

// --- A memory limit (cgroup) ----------------------------------------------------------------------

// A child memory cgroup (v1 or v2) with a limit, for as long as the object lives, or nothing when
// this machine does not let the test make one.
class MemoryCgroup {
 public:
  explicit MemoryCgroup(std::uint64_t limit) {
    std::ifstream membership("/proc/self/cgroup");
    for (std::string line; std::getline(membership, line);) {
      const auto first = line.find(':');
      const auto second = line.find(':', first + 1);
      const std::string controllers = "," + line.substr(first + 1, second - first - 1) + ",";
      if (controllers.find(",memory,") != std::string::npos) {
        path_ = "/sys/fs/cgroup/memory" + line.substr(second + 1) + "/sidecar-test-" + std::to_string(::getpid());
        limit_file_ = "memory.limit_in_bytes";
      }
    }
    if (path_.empty() || ::mkdir(path_.c_str(), 0755) != 0) {
      path_.clear();
      return;
    }
    std::ofstream(path_ + "/" + limit_file_) << limit;
  }
  ~MemoryCgroup() {
    if (!path_.empty()) ::rmdir(path_.c_str());
  }
  bool made() const { return !path_.empty(); }
  bool adopt(pid_t pid) const {
    std::ofstream procs(path_ + "/cgroup.procs");
    procs << pid << std::flush;
    return static_cast<bool>(procs);
  }

 private:
  std::string path_;
  std::string limit_file_;
};

// Under a cgroup memory limit (systemd's MemoryMax=, a container's), a channel the limit cannot
// hold is refused with the reason before its memory is committed: committing past the limit
// would have the kernel kill the sidecar instead. The sidecar serves on, and when a client leaves,
// the next one fits again.
TEST(ChannelMemory, UnderACgroupLimitAChannelThatDoesNotFitIsRefusedClearly) {
  if (!testing::running_as_root()) GTEST_SKIP() << "needs root to make a cgroup";
  MemoryCgroup cgroup(160 << 20);
  if (!cgroup.made()) GTEST_SKIP() << "no cgroup v1 memory controller to make a child cgroup in";
  SidecarProcess sidecar(unique_name("cgroup"), tiny_args({"--max-arena-bytes", "64M", "--channel-memory", "1G"}));
  ASSERT_TRUE(sidecar.wait_ready()) << sidecar.log();
  ASSERT_TRUE(cgroup.adopt(sidecar.pid()));
  std::vector<Client> clients;
  Result<Client> refused(ErrorCode::kOk, "");
  for (int i = 0; i < 4; ++i) {
    auto client = Client::connect(sidecar.name(), with_arena(48 << 20));
    if (!client.ok()) {
      refused = std::move(client);
      break;
    }
    clients.push_back(std::move(*client));
  }
  ASSERT_FALSE(refused.ok()) << "four 48 MiB channels fit under a 160 MiB limit";
  EXPECT_EQ(refused.code(), ErrorCode::kOutOfMemory) << refused.message();
  EXPECT_NE(refused.message().find("bytes of memory are available"), std::string::npos) << refused.message();
  EXPECT_GE(clients.size(), 2u);
  ASSERT_FALSE(sidecar.has_exited()) << sidecar.log();
  for (Client& client : clients) EXPECT_TRUE(client.infer(TensorView::of(random_values(64, 3), kTinyShape), 5s).ok());
  clients.pop_back();
  EXPECT_TRUE(testing::wait_until([&] { return Client::connect(sidecar.name(), with_arena(48 << 20)).ok(); }));
  EXPECT_EQ(sidecar.stop(), 0) << sidecar.log();
}

}  // namespace
}  // namespace sidecar
