// NumPy arrays (and torch tensors) to the client library's tensors and back, for the Python
// binding. Everything here runs with the GIL held.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <vector>

#include "sidecar/shared/error.hpp"
#include "sidecar/tensor.hpp"

namespace sidecar::python {

namespace py = pybind11;

// Looks up the dtype objects once, at import, so that no call builds one.
void init_dtypes();

// The inputs of one call: views of arrays that `keep` holds until the call returns.
struct Inputs {
  std::vector<TensorView> views;
  std::vector<py::object> keep;
  void clear() {
    views.clear();
    keep.clear();
  }
};

// Adds `value` (a NumPy array, a torch.Tensor, or anything numpy.asarray takes) to `inputs`. An
// array that is not C-contiguous, aligned and in native byte order is copied into one that is:
// the sidecar reads bytes in row-major order. Raises TypeError for a dtype the protocol lacks.
void add_input(py::handle value, Inputs& inputs);

// The dtype that `spec` names: a NumPy dtype, a type such as numpy.float32, or a name
// ("float32", "bfloat16").
DType dtype_from_spec(py::handle spec);

// A NumPy array over `data` (not copied), kept alive by `base`. bfloat16, which NumPy lacks, comes
// as int16 holding the raw bits.
py::array wrap(DType dtype, std::span<const std::int64_t> shape, const void* data, py::handle base, bool writeable);

// The outputs of infer()/wait(): arrays over the tensors' own bytes (moved, not copied), as
// torch tensors when `as_torch`.
py::list to_python(std::vector<Tensor>&& tensors, bool as_torch);

}  // namespace sidecar::python
