// keep_freed_memory_for_reuse: after it, a large block (a tap) comes from the heap, where
// freeing it keeps it for the next one, not from a mapping the kernel takes back.
#include <cstdlib>
#include <cstring>

#include <gtest/gtest.h>

#include "harness/run/host_memory.h"

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace fusecheck::run {
namespace {

// AddressSanitizer replaces malloc: glibc's settings and mallinfo2 say nothing about it.
#if defined(__SANITIZE_ADDRESS__)
#define FUSECHECK_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FUSECHECK_ASAN 1
#endif
#endif

#if defined(__GLIBC__)
TEST(HostMemory, LargeBlocksComeFromTheHeapAndStayAfterFree) {
#ifdef FUSECHECK_ASAN
  GTEST_SKIP() << "built with AddressSanitizer, whose allocator replaces glibc's malloc";
#endif
  keep_freed_memory_for_reuse();
  constexpr std::size_t kTap = std::size_t(64) << 20;  // above glibc's largest mmap threshold (32 MB)
  const auto mapped_before = mallinfo2().hblkhd;
  void* tap = std::malloc(kTap);
  ASSERT_NE(tap, nullptr);
  std::memset(tap, 0x5a, kTap);
  EXPECT_EQ(mallinfo2().hblkhd, mapped_before);  // not one more byte mapped for it
  std::free(tap);
  EXPECT_GE(mallinfo2().arena, kTap);  // the heap keeps it (no trimming)
}
#endif

TEST(HostMemory, CallingItTwiceIsHarmless) {
  keep_freed_memory_for_reuse();
  keep_freed_memory_for_reuse();
  void* p = std::malloc(1 << 20);
  EXPECT_NE(p, nullptr);
  std::free(p);
}

}  // namespace
}  // namespace fusecheck::run
