// What the sidecar says about itself, as Python dicts; and the module's functions that need no
// Client (status, metrics, reload, cache_stats).
#pragma once

#include <pybind11/pybind11.h>

#include "sidecar/client.hpp"

namespace sidecar::python {

namespace py = pybind11;

py::dict model_info_dict(const ModelInfo& model);
py::dict cache_stats_dict(const CacheStats& stats);

// Adds status(), metrics(), reload() and cache_stats() to `module`.
void define_operations(py::module_& module);

// ConnectOptions from the keyword arguments that Client() and the module's functions share.
ConnectOptions connect_options(double timeout, py::handle runtime_dir);

}  // namespace sidecar::python
