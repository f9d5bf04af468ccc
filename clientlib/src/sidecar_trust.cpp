#include "sidecar_trust.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdlib>

#include "sidecar/shared/unix_socket.hpp"
#include "sidecar/shared/user_names.hpp"

namespace sidecar {
namespace {

std::string describe_user(uid_t uid) { return user_name(uid) + " (uid " + std::to_string(uid) + ")"; }

// The first directory above `path` (resolved) that a user other than root and `owner` could
// write, or "" when there is none.
std::string writable_parent(const std::string& path, uid_t owner) {
  char resolved[PATH_MAX];
  if (::realpath(path.c_str(), resolved) == nullptr) return path;
  std::string parent = resolved;
  while (true) {
    const auto slash = parent.rfind('/');
    if (slash == std::string::npos) return {};
    parent = slash == 0 ? "/" : parent.substr(0, slash);
    struct stat info {};
    if (::stat(parent.c_str(), &info) != 0) return parent;
    if ((info.st_uid != 0 && info.st_uid != owner) || (info.st_mode & 0022)) return parent;
    if (parent == "/") return {};
  }
}

}  // namespace

TrustedSidecar trusted_sidecar(const std::string& runtime_dir, std::optional<uid_t> expected) {
  if (expected) return TrustedSidecar{{*expected}, "the uid this client was told to expect"};
  struct stat info {};
  std::vector<uid_t> root_or_self{0};
  if (::geteuid() != 0) root_or_self.push_back(::geteuid());
  if (::stat(runtime_dir.c_str(), &info) != 0) {
    return TrustedSidecar{root_or_self, "root or this client's own user: " + runtime_dir + " cannot be read"};
  }
  if (const std::string open = writable_parent(runtime_dir, info.st_uid); !open.empty()) {
    return TrustedSidecar{root_or_self, "root or this client's own user: " + runtime_dir + " lies under " + open +
                                            ", which others can write, so its owner proves nothing"};
  }
  return TrustedSidecar{{info.st_uid}, "the owner of " + runtime_dir};
}

Done check_sidecar_peer(int socket, const std::string& socket_path, const TrustedSidecar& trusted) {
  const Result<PeerCredentials> peer = peer_credentials(socket);
  if (!peer.ok()) return peer.error();
  if (std::find(trusted.uids.begin(), trusted.uids.end(), peer->uid) != trusted.uids.end()) return {};
  std::string whom;
  for (std::size_t i = 0; i < trusted.uids.size(); ++i) {
    if (i) whom += " or ";
    whom += describe_user(trusted.uids[i]);
  }
  return {ErrorCode::kUntrusted, "the process listening on " + socket_path + " (pid " + std::to_string(peer->pid) +
                                     ") runs as " + describe_user(peer->uid) + ", not as " + whom + " (" +
                                     trusted.because + "): it is not the sidecar; nothing was sent to it"};
}

}  // namespace sidecar
