// Users and groups by name, for messages people read: "alice" for a uid with a name, else the
// number.
#pragma once

#include <grp.h>
#include <pwd.h>
#include <sys/types.h>

#include <string>

namespace sidecar {

inline std::string user_name(uid_t uid) {
  passwd entry{};
  passwd* found = nullptr;
  char buffer[4096];
  if (::getpwuid_r(uid, &entry, buffer, sizeof buffer, &found) == 0 && found != nullptr) return found->pw_name;
  return std::to_string(uid);
}

inline std::string group_name(gid_t gid) {
  group entry{};
  group* found = nullptr;
  char buffer[4096];
  if (::getgrgid_r(gid, &entry, buffer, sizeof buffer, &found) == 0 && found != nullptr) return found->gr_name;
  return std::to_string(gid);
}

}  // namespace sidecar
