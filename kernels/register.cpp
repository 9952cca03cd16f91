#include "kernels/register.h"

#include "harness/core/path_registry.h"

namespace fusecheck {
void register_cuda_paths() {}
}  // namespace fusecheck
