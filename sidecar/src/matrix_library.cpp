#include "matrix_library.hpp"

#include <dlfcn.h>
#include <spdlog/spdlog.h>

#include <climits>
#include <cstdlib>

namespace sidecar {

MatrixLibrary loaded_matrix_library() {
  MatrixLibrary library;
  void* sgemm = ::dlsym(RTLD_DEFAULT, "sgemm_");
  if (sgemm == nullptr) {
    library.name = "no BLAS loaded";
    return library;
  }
  library.kind = MatrixLibrary::Kind::kUnknown;
  library.name = "an unrecognised BLAS";
  Dl_info info{};
  if (::dladdr(sgemm, &info) == 0 || info.dli_fname == nullptr) return library;
  char resolved[PATH_MAX];
  library.path = ::realpath(info.dli_fname, resolved) ? resolved : info.dli_fname;
  // Ask the library that defines sgemm_ (and what it links), not the whole process: Debian's
  // OpenBLAS LAPACK may be loaded beside a reference BLAS and would answer for it.
  void* handle = ::dlopen(info.dli_fname, RTLD_LAZY | RTLD_NOLOAD);
  if (handle == nullptr) return library;
  // Each optimized BLAS exports a function that names it; the reference BLAS exports none.
  using NameText = const char* (*)();
  if (auto config = reinterpret_cast<NameText>(::dlsym(handle, "openblas_get_config"))) {
    library.kind = MatrixLibrary::Kind::kOptimized;
    library.name = config();
  } else if (auto version = reinterpret_cast<NameText>(::dlsym(handle, "bli_info_get_version_str"))) {
    library.kind = MatrixLibrary::Kind::kOptimized;
    library.name = std::string("BLIS ") + version();
  } else if (::dlsym(handle, "mkl_get_version_string") || ::dlsym(handle, "MKL_Get_Version_String")) {
    library.kind = MatrixLibrary::Kind::kOptimized;
    library.name = "Intel MKL";
  } else if (::dlsym(handle, "ATL_buildinfo")) {
    library.kind = MatrixLibrary::Kind::kOptimized;
    library.name = "ATLAS";
  } else if (library.path.find("/blas/libblas.so") != std::string::npos) {
    // Where Debian's libblas3 (netlib's reference implementation) installs itself.
    library.kind = MatrixLibrary::Kind::kReference;
    library.name = "reference BLAS";
  }
  ::dlclose(handle);
  return library;
}

void log_matrix_library() {
  const MatrixLibrary library = loaded_matrix_library();
  switch (library.kind) {
    case MatrixLibrary::Kind::kOptimized:
    case MatrixLibrary::Kind::kUnknown: spdlog::info("matrix multiplies: {} ({})", library.name, library.path); break;
    case MatrixLibrary::Kind::kReference:
      spdlog::warn(
          "matrix multiplies go to the reference BLAS ({}): linear layers run unblocked and batching saves "
          "nothing on them; install an optimized BLAS (apt-get install libopenblas0-openmp)",
          library.path);
      break;
    case MatrixLibrary::Kind::kNone: spdlog::info("matrix multiplies: no BLAS loaded"); break;
  }
}

}  // namespace sidecar
