// Who may connect: the socket's mode decides who can reach the sidecar at all; this narrows it to
// the users and groups given by --allow-user and --allow-group, judged by the credentials the
// kernel recorded for the connection (SO_PEERCRED, SO_PEERGROUPS), which a client cannot forge.
#pragma once

#include <sys/types.h>

#include <span>
#include <string>
#include <vector>

#include "sidecar/shared/error.hpp"
#include "sidecar/shared/unix_socket.hpp"
#include "sidecar/shared/user_names.hpp"

namespace sidecar {

class AccessPolicy {
 public:
  // Names or numbers; an unknown name is an error. Both empty: everyone who can connect.
  static Result<AccessPolicy> resolve(const std::vector<std::string>& users, const std::vector<std::string>& groups);

  // Empty when the peer may use the sidecar, else why not, in one line fit for the peer to read.
  // The sidecar's own user is always admitted.
  std::string refusal(const PeerCredentials& peer, std::span<const gid_t> supplementary_groups) const;

  bool restricts() const noexcept { return !users_.empty() || !groups_.empty(); }
  // "users alice (1001); groups ml (2000)" or "anyone the socket's mode lets connect"
  std::string describe() const;

 private:
  std::vector<uid_t> users_;
  std::vector<gid_t> groups_;
};

}  // namespace sidecar
