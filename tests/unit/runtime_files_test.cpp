// The runtime directory, the instance lock, the listening socket and the access policy, each by
// itself.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "access_policy.hpp"
#include "runtime_files.hpp"
#include "sidecar/shared/runtime_dir.hpp"

namespace sidecar {
namespace {

class ScratchDir {
 public:
  ScratchDir() {
    char pattern[] = "/tmp/sidecar-runtime-test-XXXXXX";
    if (::mkdtemp(pattern) == nullptr) throw std::runtime_error("mkdtemp");
    path_ = pattern;
  }
  ~ScratchDir() { std::filesystem::remove_all(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

TEST(RuntimeDir, IsMadeWhenMissingAndRefusedWhenOthersCouldWriteIt) {
  ScratchDir scratch;
  const std::string made = scratch.path() + "/run";
  auto prepared = prepare_runtime_dir(made);
  ASSERT_TRUE(prepared.ok()) << prepared.message();
  struct stat info {};
  ASSERT_EQ(::stat(made.c_str(), &info), 0);
  EXPECT_EQ(info.st_mode & 0777, 0755u);

  ASSERT_EQ(::chmod(made.c_str(), 0775), 0);
  auto group_writable = prepare_runtime_dir(made);
  EXPECT_EQ(group_writable.code(), ErrorCode::kPermissionDenied);
  EXPECT_NE(group_writable.message().find("is writable by others, who could squat the sidecar's names"),
            std::string::npos)
      << group_writable.message();

  const std::string file = scratch.path() + "/file";
  { std::ofstream(file) << "x"; }
  EXPECT_NE(prepare_runtime_dir(file).message().find("is not a directory"), std::string::npos);

  if (::geteuid() == 0) {
    ASSERT_EQ(::chmod(made.c_str(), 0755), 0);
    ASSERT_EQ(::chown(made.c_str(), 65534, 65534), 0);
    auto foreign = prepare_runtime_dir(made);
    EXPECT_EQ(foreign.code(), ErrorCode::kPermissionDenied);
    EXPECT_NE(foreign.message().find("belongs to uid 65534, not to this sidecar's uid 0"), std::string::npos)
        << foreign.message();
  }
}

TEST(InstanceLock, OneHolderAtATimeAndTheGenerationGrows) {
  ScratchDir scratch;
  std::uint64_t generation = 0;
  {
    auto first = InstanceLock::acquire(scratch.path(), "x");
    ASSERT_TRUE(first.ok()) << first.message();
    generation = first->start_generation();
    EXPECT_EQ(generation, 1u);
    // Another open file description of the same lock, as another process would have.
    auto second = InstanceLock::acquire(scratch.path(), "x");
    EXPECT_EQ(second.code(), ErrorCode::kBusy);
    EXPECT_NE(second.message().find("another sidecar named 'x' is running (pid " + std::to_string(::getpid())),
              std::string::npos)
        << second.message();
  }
  auto again = InstanceLock::acquire(scratch.path(), "x");
  ASSERT_TRUE(again.ok()) << again.message();
  EXPECT_EQ(again->start_generation(), generation + 1);
  struct stat info {};
  ASSERT_EQ(::stat(lock_path(scratch.path(), "x").c_str(), &info), 0);
  EXPECT_EQ(info.st_mode & 0777, 0600u) << "nobody else may open (and so flock) it";
}

TEST(ListeningSocket, ReplacesAStaleSocketTakesItsModeAndRemovesItself) {
  ScratchDir scratch;
  const std::string path = socket_path(scratch.path(), "x");
  { std::ofstream(path) << "stale"; }
  {
    auto listening = ListeningSocket::bind(scratch.path(), "x", 0640);
    ASSERT_TRUE(listening.ok()) << listening.message();
    struct stat info {};
    ASSERT_EQ(::stat(path.c_str(), &info), 0);
    EXPECT_TRUE(S_ISSOCK(info.st_mode));
    EXPECT_EQ(info.st_mode & 0777, 0640u);
  }
  EXPECT_FALSE(std::filesystem::exists(path));
  EXPECT_TRUE(std::filesystem::is_empty(scratch.path())) << "no temporary name left behind";
}

TEST(AccessPolicy, AdmitsByUserOrGroupAndSaysWhom) {
  auto open = AccessPolicy::resolve({}, {});
  ASSERT_TRUE(open.ok());
  EXPECT_EQ(open->refusal(PeerCredentials{1, 4242, 4242}, {}), "");
  auto narrow = AccessPolicy::resolve({"root", "4242"}, {"daemon"});
  ASSERT_TRUE(narrow.ok()) << narrow.message();
  EXPECT_EQ(narrow->refusal(PeerCredentials{1, 4242, 9}, {}), "");
  EXPECT_EQ(narrow->refusal(PeerCredentials{1, 777, 1}, {}), "") << "by primary group";
  const gid_t daemon_group[] = {1};
  EXPECT_EQ(narrow->refusal(PeerCredentials{1, 777, 9}, daemon_group), "") << "by supplementary group";
  if (::geteuid() != 777) {
    EXPECT_NE(narrow->refusal(PeerCredentials{1, 777, 9}, {}).find("may not use this sidecar: it admits users root "
                                                                   "4242 and members of groups daemon"),
              std::string::npos)
        << narrow->refusal(PeerCredentials{1, 777, 9}, {});
  }
  EXPECT_EQ(narrow->refusal(PeerCredentials{1, ::geteuid(), 9}, {}), "") << "the sidecar's own user";
  EXPECT_EQ(AccessPolicy::resolve({"no-such-user-here"}, {}).code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(AccessPolicy::resolve({}, {"no-such-group-here"}).code(), ErrorCode::kInvalidArgument);
}

}  // namespace
}  // namespace sidecar
