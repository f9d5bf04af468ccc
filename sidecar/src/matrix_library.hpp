// Which BLAS LibTorch's matrix multiplies reach. Debian's libtorch calls sgemm through the
// libblas.so.3 alternative, which is the unblocked reference BLAS unless an optimized one is
// installed: then a linear layer costs as much per row in a batch of 8 as alone, and batching
// gains nothing (docs/benchmarks.md, "The BLAS").
#pragma once

#include <string>

namespace sidecar {

struct MatrixLibrary {
  enum class Kind { kOptimized, kReference, kUnknown, kNone };
  Kind kind = Kind::kNone;
  std::string name;  // "OpenBLAS 0.3.21 ...", "BLIS 0.9.0", "Intel MKL", "reference BLAS"
  std::string path;  // the file that defines sgemm_, symlinks resolved; empty when none is loaded
};

// Looks at the sgemm_ this process would call. Meaningful in a process that links LibTorch.
MatrixLibrary loaded_matrix_library();

// One line in the log at start: the library, and a warning with the fix when it is the reference one.
void log_matrix_library();

}  // namespace sidecar
