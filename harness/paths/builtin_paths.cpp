// register_builtin_paths: CPU paths always, CUDA paths when this build has them.
#include <mutex>

#include "harness/core/path_registry.h"
#include "reference/register.h"
#ifdef FUSECHECK_HAVE_CUDA
#include "kernels/register.h"
#endif

namespace fusecheck {

void register_builtin_paths() {
  static std::once_flag once;
  std::call_once(once, [] {
    register_cpu_paths();
#ifdef FUSECHECK_HAVE_CUDA
    register_cuda_paths();
#endif
  });
}

}  // namespace fusecheck
