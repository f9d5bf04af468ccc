#include "access_policy.hpp"

#include <grp.h>
#include <pwd.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>

namespace sidecar {
namespace {

template <typename Id>
bool parse_number(const std::string& text, Id& id) {
  unsigned long long value = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc() || end != text.data() + text.size() || value > 0xFFFFFFFEull) return false;
  id = static_cast<Id>(value);
  return true;
}

}  // namespace

Result<AccessPolicy> AccessPolicy::resolve(const std::vector<std::string>& users,
                                           const std::vector<std::string>& groups) {
  AccessPolicy policy;
  for (const std::string& user : users) {
    uid_t uid = 0;
    if (!parse_number(user, uid)) {
      passwd entry{};
      passwd* found = nullptr;
      char buffer[4096];
      if (::getpwnam_r(user.c_str(), &entry, buffer, sizeof buffer, &found) != 0 || found == nullptr) {
        return Error{ErrorCode::kInvalidArgument, "--allow-user: no user named '" + user + "'"};
      }
      uid = found->pw_uid;
    }
    policy.users_.push_back(uid);
  }
  for (const std::string& name : groups) {
    gid_t gid = 0;
    if (!parse_number(name, gid)) {
      group entry{};
      group* found = nullptr;
      char buffer[4096];
      if (::getgrnam_r(name.c_str(), &entry, buffer, sizeof buffer, &found) != 0 || found == nullptr) {
        return Error{ErrorCode::kInvalidArgument, "--allow-group: no group named '" + name + "'"};
      }
      gid = found->gr_gid;
    }
    policy.groups_.push_back(gid);
  }
  return policy;
}

std::string AccessPolicy::refusal(const PeerCredentials& peer, std::span<const gid_t> supplementary_groups) const {
  if (!restricts() || peer.uid == ::geteuid()) return {};
  if (std::find(users_.begin(), users_.end(), peer.uid) != users_.end()) return {};
  for (gid_t allowed : groups_) {
    if (peer.gid == allowed) return {};
    if (std::find(supplementary_groups.begin(), supplementary_groups.end(), allowed) != supplementary_groups.end()) {
      return {};
    }
  }
  return "user " + user_name(peer.uid) + " (uid " + std::to_string(peer.uid) +
         ") may not use this sidecar: it admits " + describe();
}

std::string AccessPolicy::describe() const {
  if (!restricts()) return "anyone the socket's mode lets connect";
  std::string text;
  if (!users_.empty()) {
    text += "users";
    for (uid_t uid : users_) text += " " + user_name(uid);
  }
  if (!groups_.empty()) {
    if (!text.empty()) text += " and ";
    text += "members of groups";
    for (gid_t gid : groups_) text += " " + group_name(gid);
  }
  return text;
}

}  // namespace sidecar
