// sidecarctl's exit codes and its one way of failing: one line on stderr.
#pragma once

#include <iostream>
#include <string>

#include "sidecar/client.hpp"

namespace sidecarctl {

using sidecar::ErrorCode;


// One exit code per class of failure, so that a script can tell "start it" from "fix the input".
enum ExitCode : int {
  kExitOk = 0,
  kExitNotRunning = 1,   // no sidecar by that name, or it died
  kExitUsage = 2,        // bad command line
  kExitUnavailable = 3,  // it exists but cannot serve now: not ready, too many clients, other version, stopping
  kExitFile = 4,         // an input could not be read or an output written
  kExitRejected = 5,     // the inputs do not fit the model (dtype, shape, count)
  kExitModelError = 6,   // the model raised, or returned something that is not tensors
  kExitTimeout = 7,      // no answer within --timeout-ms
  kExitProtocol = 8,     // the sidecar answered with something malformed
  kExitDenied = 9,       // this user may not connect, or the socket's owner is not to be trusted
  kExitWarmingUp = 10,   // health: the sidecar is starting or warming up
  kExitHung = 11,        // health: it exists but did not answer within --timeout-ms
};

constexpr const char* kExitCodeHelp =
    "Exit codes:\n"
    "  0  success\n"
    "  1  no sidecar by that name is running (or it died)\n"
    "  2  bad command line\n"
    "  3  the sidecar exists but cannot serve: not ready, too many clients, other protocol version, shutting "
    "down, overloaded, out of memory\n"
    "  4  an input .npy could not be read or an output written\n"
    "  5  the sidecar refused the inputs (dtype, shape or count): the message says what it expects\n"
    "  6  the model raised, or returned something other than tensors\n"
    "  7  no answer within --timeout-ms\n"
    "  8  the sidecar answered with something malformed\n"
    "  9  permission denied: the socket or the sidecar's --allow-user/--allow-group refuse this user, or the\n"
    "     process behind the socket is not the sidecar's user\n"
    " 10  health: the sidecar is starting or warming up\n"
    " 11  health: the sidecar did not answer within --timeout-ms (stopped, wedged, or overloaded)\n"
    "Errors are one line on stderr: 'sidecarctl: <error>: <message>'.";

inline int exit_code_for(ErrorCode code) {
  switch (code) {
    case ErrorCode::kOk: return kExitOk;
    case ErrorCode::kNotRunning:
    case ErrorCode::kSidecarGone: return kExitNotRunning;
    case ErrorCode::kNotReady:
    case ErrorCode::kVersionMismatch:
    case ErrorCode::kTooManyClients:
    case ErrorCode::kOutOfMemory:
    case ErrorCode::kShuttingDown:
    case ErrorCode::kOverloaded:
    case ErrorCode::kBusy:
    case ErrorCode::kCancelled: return kExitUnavailable;
    case ErrorCode::kInvalidArgument:
    case ErrorCode::kRejected: return kExitRejected;
    case ErrorCode::kModelError:
    case ErrorCode::kUnsupportedOutput:
    case ErrorCode::kOutputTooLarge: return kExitModelError;
    case ErrorCode::kTimeout:
    case ErrorCode::kDeadlineExceeded: return kExitTimeout;
    case ErrorCode::kProtocolError: return kExitProtocol;
    case ErrorCode::kPermissionDenied:
    case ErrorCode::kUntrusted: return kExitDenied;
  }
  return kExitProtocol;
}

// TorchScript errors span several lines; the caller gets one, so a log line stays one record.
inline std::string one_line(const std::string& text) {
  std::string line;
  bool pending_break = false;
  for (char c : text) {
    if (c == '\n' || c == '\r') {
      pending_break = !line.empty();
      continue;
    }
    if (pending_break) {
      if (c == ' ' || c == '\t') continue;  // the next line's indentation
      line += " | ";
      pending_break = false;
    }
    line += c;
  }
  return line;
}

inline int fail(int exit_code, const std::string& what) {
  std::cerr << "sidecarctl: " << one_line(what) << std::endl;
  return exit_code;
}

inline int fail(ErrorCode code, const std::string& message) {
  return fail(exit_code_for(code), std::string(sidecar::error_code_name(code)) + ": " + message);
}

}  // namespace sidecarctl
