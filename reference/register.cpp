#include "reference/register.h"

#include "harness/core/path_registry.h"

namespace fusecheck {
void register_cpu_paths() {}
}  // namespace fusecheck
