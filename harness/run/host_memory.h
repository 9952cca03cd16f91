// How `fusecheck run` asks the C library to treat its host memory. A run allocates and
// frees the same large blocks layer after layer (every tap of every instance, ~100 MB a
// layer at 512 tokens; the logits, ~600 MB each), and glibc gives blocks over 32 MB (and
// the free top of the heap) back to the kernel, so that each layer's new taps fault in
// page by page and are zeroed again: on the 2-core box of 2026-12-03 a fresh 622 MB copy
// took ~5x a copy into memory the process had already touched (bench_run_host).
#pragma once

namespace fusecheck::run {

// Keeps freed memory in the process for reuse (glibc: no mmap for large blocks, no heap
// trimming). Idempotent; a no-op on other C libraries. Peak memory is unchanged, but the
// process does not shrink after its peak.
void keep_freed_memory_for_reuse();

}  // namespace fusecheck::run
