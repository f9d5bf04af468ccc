// The one error model of the project: a code a caller can act on, and a message a person can read.
// The client library returns it through Result<T>; the daemon and the shared code use the same
// types, so nothing ever decides what went wrong by reading the message.
//
//   sidecar::Result<int> parse(std::string_view text);
//   auto value = parse("42");
//   if (!value.ok()) std::cerr << sidecar::error_code_name(value.code()) << ": " << value.message();
#pragma once

#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <utility>

namespace sidecar {

// The numbers are part of the C API (sidecar_status): new codes go at the end.
enum class ErrorCode {
  kOk = 0,
  kNotRunning,         // no sidecar listens under that name (no socket, or a stale one)
  kNotReady,           // it runs but did not finish warming up within the timeout
  kVersionMismatch,    // it speaks another protocol version: the message names both
  kTooManyClients,     // it serves as many clients as --max-clients allows
  kInvalidArgument,    // refused by this library before anything was sent
  kRejected,           // the sidecar refused the inputs (dtype, shape...): the message says what it expects
  kModelError,         // the model raised: the message is TorchScript's
  kUnsupportedOutput,  // the model returned something other than tensors
  kOutputTooLarge,
  kTimeout,
  kSidecarGone,  // the sidecar stopped or crashed while this client was connected
  kShuttingDown,
  kDeadlineExceeded,
  kOverloaded,
  kCancelled,
  kBusy,              // an earlier request that timed out is still running in the sidecar: retry
  kProtocolError,     // the other side sent something malformed
  kPermissionDenied,  // the socket's permissions, or the sidecar's --allow-user/--allow-group, refuse this user
  kUntrusted,         // the process behind the socket is not the sidecar's user: nothing was sent to it
  kOutOfMemory,       // the sidecar could not commit the memory this client's channel needs
};

constexpr const char* error_code_name(ErrorCode code) noexcept {
  switch (code) {
    case ErrorCode::kOk: return "ok";
    case ErrorCode::kNotRunning: return "not running";
    case ErrorCode::kNotReady: return "not ready";
    case ErrorCode::kVersionMismatch: return "version mismatch";
    case ErrorCode::kTooManyClients: return "too many clients";
    case ErrorCode::kInvalidArgument: return "invalid argument";
    case ErrorCode::kRejected: return "rejected";
    case ErrorCode::kModelError: return "model error";
    case ErrorCode::kUnsupportedOutput: return "unsupported output";
    case ErrorCode::kOutputTooLarge: return "output too large";
    case ErrorCode::kTimeout: return "timeout";
    case ErrorCode::kSidecarGone: return "sidecar gone";
    case ErrorCode::kShuttingDown: return "shutting down";
    case ErrorCode::kDeadlineExceeded: return "deadline exceeded";
    case ErrorCode::kOverloaded: return "overloaded";
    case ErrorCode::kCancelled: return "cancelled";
    case ErrorCode::kBusy: return "busy";
    case ErrorCode::kProtocolError: return "protocol error";
    case ErrorCode::kPermissionDenied: return "permission denied";
    case ErrorCode::kUntrusted: return "untrusted";
    case ErrorCode::kOutOfMemory: return "out of memory";
  }
  return "unknown";
}

struct Error {
  ErrorCode code = ErrorCode::kOk;
  std::string message;
};

// A value or an error. Check ok() before value().
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : value_(std::move(value)) {}  // NOLINT: implicit by design
  Result(ErrorCode code, std::string message) : code_(code), message_(std::move(message)) {}
  Result(Error error) : code_(error.code), message_(std::move(error.message)) {}  // NOLINT: implicit by design

  bool ok() const noexcept { return code_ == ErrorCode::kOk; }
  ErrorCode code() const noexcept { return code_; }
  const std::string& message() const noexcept { return message_; }
  Error error() const { return Error{code_, message_}; }
  // Calling these on an error is a bug in the caller: it aborts rather than read garbage.
  T& value() & { return checked(); }
  const T& value() const& { return const_cast<Result*>(this)->checked(); }
  T&& value() && { return std::move(checked()); }
  T* operator->() { return &checked(); }
  const T* operator->() const { return &const_cast<Result*>(this)->checked(); }
  T& operator*() { return checked(); }
  const T& operator*() const { return const_cast<Result*>(this)->checked(); }

 private:
  T& checked() {
    if (!value_) {
      std::fprintf(stderr, "sidecar::Result: value() called on an error (%s: %s)\n", error_code_name(code_),
                   message_.c_str());
      std::abort();
    }
    return *value_;
  }

  std::optional<T> value_;
  ErrorCode code_ = ErrorCode::kOk;
  std::string message_;
};

// Success or an error, for operations that return nothing else.
template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(ErrorCode code, std::string message) : code_(code), message_(std::move(message)) {}
  Result(Error error) : code_(error.code), message_(std::move(error.message)) {}  // NOLINT: implicit by design

  bool ok() const noexcept { return code_ == ErrorCode::kOk; }
  ErrorCode code() const noexcept { return code_; }
  const std::string& message() const noexcept { return message_; }
  Error error() const { return Error{code_, message_}; }

 private:
  ErrorCode code_ = ErrorCode::kOk;
  std::string message_;
};

using Done = Result<void>;

}  // namespace sidecar
