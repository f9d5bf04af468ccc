// The library's errors as the package's exception classes (SidecarError and its subclasses, which
// inference_sidecar/__init__.py defines and registers at import).
#pragma once

#include <pybind11/pybind11.h>

#include <chrono>
#include <string>

#include "sidecar/shared/error.hpp"

namespace sidecar::python {

namespace py = pybind11;

// `base` is SidecarError; classes[code] the class raised for that ErrorCode.
void register_errors(py::handle base, py::list classes);

// Raises the class registered for `code`, constructed as cls(code, message).
[[noreturn]] void raise_error(ErrorCode code, const std::string& message);

template <typename T>
T take(Result<T>&& result) {
  if (!result.ok()) raise_error(result.code(), result.message());
  return std::move(result).value();
}

inline void check(const Done& done) {
  if (!done.ok()) raise_error(done.code(), done.message());
}

// Seconds, as Python gives them, to the library's microseconds (ValueError unless >= 0).
std::chrono::microseconds to_microseconds(double seconds);

}  // namespace sidecar::python
