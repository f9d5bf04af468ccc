// Whom a client takes for the sidecar: the process behind the socket must run as the user that
// owns the runtime directory, since no other user can put a socket there, unless that directory
// lies under one that others can write (then anyone could have made it, and only root or this
// client's own user is trusted), or the client was told which uid to expect. Checked on the
// kernel's record of the peer (SO_PEERCRED) before the client sends anything.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "sidecar/shared/error.hpp"

namespace sidecar {

struct TrustedSidecar {
  std::vector<uid_t> uids;
  std::string because;  // for the refusal: why these and no other
};

TrustedSidecar trusted_sidecar(const std::string& runtime_dir, std::optional<uid_t> expected);

// kUntrusted, naming the peer and whom it should have been, when `socket`'s peer is not trusted.
Done check_sidecar_peer(int socket, const std::string& socket_path, const TrustedSidecar& trusted);

}  // namespace sidecar
