// Naming a process so that a reused pid is not mistaken for the one we knew.
#pragma once

#include <signal.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <cerrno>
#include <cstdint>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>

namespace sidecar {

// Field 22 of /proc/PID/stat (start time in clock ticks since boot), or 0 if the process is gone
// or a zombie (dead, not yet reaped: where PID 1 does not reap, that can last).
inline std::uint64_t process_start_time(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string text;
  if (!std::getline(stat, text)) return 0;
  // The command name (field 2) is in parentheses and may hold spaces: parse after the last ')'.
  const auto close = text.rfind(')');
  if (close == std::string::npos) return 0;
  std::istringstream fields(text.substr(close + 1));
  std::string field;
  // After ')', the first field is field 3; field 22 is the 20th.
  for (int index = 3; index <= 22; ++index) {
    if (!(fields >> field)) return 0;
    if (index == 3 && (field == "Z" || field == "X")) return 0;
  }
  try {
    return std::stoull(field);
  } catch (...) {
    return 0;
  }
}

// True while the process that had `pid` and `start_time` still runs (a zombie counts as gone only
// once reaped, which is what its parent decides).
inline bool process_alive(pid_t pid, std::uint64_t start_time) {
  if (pid <= 0) return false;
  if (::kill(pid, 0) != 0 && errno == ESRCH) return false;
  const std::uint64_t now = process_start_time(pid);
  return now != 0 && (start_time == 0 || now == start_time);
}

// The effective uid a process runs as (the owner of /proc/PID), or nothing when it is gone.
inline std::optional<uid_t> process_uid(pid_t pid) {
  struct stat info {};
  if (pid <= 0 || ::stat(("/proc/" + std::to_string(pid)).c_str(), &info) != 0) return std::nullopt;
  return info.st_uid;
}

}  // namespace sidecar
