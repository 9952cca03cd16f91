// keep_freed_memory_for_reuse (see host_memory.h).
#include "harness/run/host_memory.h"

#include <cstdlib>  // defines __GLIBC__ on glibc, which the test below needs

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace fusecheck::run {

void keep_freed_memory_for_reuse() {
#if defined(__GLIBC__)
  // Large blocks from the heap (whose freed chunks are reused) rather than from mmap
  // (whose freed chunks are unmapped); and a heap top that is never trimmed.
  mallopt(M_MMAP_MAX, 0);
  mallopt(M_TRIM_THRESHOLD, -1);
#endif
}

}  // namespace fusecheck::run
