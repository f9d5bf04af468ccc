#include "matrix_library.hpp"

#include <dlfcn.h>

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
  Dl_info info{};
  if (::dladdr(sgemm, &info) == 0 || info.dli_fname == nullptr) {
    library.name = "unknown BLAS";
    return library;
  }
  char resolved[PATH_MAX];
  library.path = ::realpath(info.dli_fname, resolved) ? resolved : info.dli_fname;
  // Ask the library that defines sgemm_ (and what it links), not the whole process: Debian's
  // OpenBLAS LAPACK may be loaded beside a reference BLAS and would answer for it.
  void* handle = ::dlopen(info.dli_fname, RTLD_LAZY | RTLD_NOLOAD);
  if (handle == nullptr) {
    library.name = "unknown BLAS";
    return library;
  }
  // Each optimized BLAS exports an identifying function; the reference BLAS exports none.
  using ConfigText = const char* (*)();
  if (auto config = reinterpret_cast<ConfigText>(::dlsym(handle, "openblas_get_config"))) {
    library.name = config();
    library.optimized = true;
  } else if (auto version = reinterpret_cast<ConfigText>(::dlsym(handle, "bli_info_get_version_str"))) {
    library.name = std::string("BLIS ") + version();
    library.optimized = true;
  } else if (::dlsym(handle, "mkl_get_version_string") || ::dlsym(handle, "MKL_Get_Version_String")) {
    library.name = "Intel MKL";
    library.optimized = true;
  } else {
    library.name = "reference BLAS";
  }
  ::dlclose(handle);
  return library;
}

}  // namespace sidecar
