// upload.h's upload_bytes: large host-to-device copies through pinned double buffers.
#include <cstddef>
#include <cstring>
#include <memory>

#include "kernels/common/cuda_check.h"
#include "kernels/common/upload.h"

namespace fusecheck::cuda {

namespace {

constexpr std::size_t kChunk = std::size_t(32) << 20;  // 32 MB per pinned buffer
constexpr std::size_t kPinnedAbove = std::size_t(8) << 20;

struct PinnedPair {
  void* buf[2] = {nullptr, nullptr};
  cudaEvent_t done[2] = {nullptr, nullptr};
  bool ok = false;
  PinnedPair() {
    for (int i = 0; i < 2; ++i) {
      if (cudaHostAlloc(&buf[i], kChunk, cudaHostAllocPortable) != cudaSuccess) {
        cudaGetLastError();
        buf[i] = nullptr;
        return;
      }
      if (cudaEventCreateWithFlags(&done[i], cudaEventDisableTiming) != cudaSuccess) {
        cudaGetLastError();
        done[i] = nullptr;
        return;
      }
    }
    ok = true;
  }
  ~PinnedPair() {
    for (int i = 0; i < 2; ++i) {
      if (done[i]) CUDA_CHECK_NOTHROW(cudaEventDestroy(done[i]));
      if (buf[i]) CUDA_CHECK_NOTHROW(cudaFreeHost(buf[i]));
    }
  }
  PinnedPair(const PinnedPair&) = delete;
  PinnedPair& operator=(const PinnedPair&) = delete;
};

// The chunk's host copy on every OpenMP thread (one core copies at a fraction of what
// the DMA takes).
void parallel_copy(void* dst, const void* src, std::size_t n) {
  constexpr std::size_t kSlice = std::size_t(1) << 20;
  const auto slices = static_cast<std::ptrdiff_t>((n + kSlice - 1) / kSlice);
#pragma omp parallel for schedule(static)
  for (std::ptrdiff_t i = 0; i < slices; ++i) {
    const std::size_t off = static_cast<std::size_t>(i) * kSlice;
    std::memcpy(static_cast<char*>(dst) + off, static_cast<const char*>(src) + off, std::min(kSlice, n - off));
  }
}

}  // namespace

void upload_bytes(void* dst, const void* src, std::size_t n, cudaStream_t s) {
  if (n == 0) return;
  thread_local std::unique_ptr<PinnedPair> pinned;
  if (n > kPinnedAbove && !pinned) pinned = std::make_unique<PinnedPair>();
  if (n <= kPinnedAbove || !pinned->ok) {
    CUDA_CHECK(cudaMemcpyAsync(dst, src, n, cudaMemcpyHostToDevice, s));
    CUDA_CHECK(cudaStreamSynchronize(s));
    return;
  }
  bool pending[2] = {false, false};
  int k = 0;
  for (std::size_t off = 0; off < n; off += kChunk, k ^= 1) {
    const std::size_t m = std::min(kChunk, n - off);
    if (pending[k]) CUDA_CHECK(cudaEventSynchronize(pinned->done[k]));  // the DMA has read it
    parallel_copy(pinned->buf[k], static_cast<const char*>(src) + off, m);
    CUDA_CHECK(cudaMemcpyAsync(static_cast<char*>(dst) + off, pinned->buf[k], m, cudaMemcpyHostToDevice, s));
    CUDA_CHECK(cudaEventRecord(pinned->done[k], s));
    pending[k] = true;
  }
  CUDA_CHECK(cudaStreamSynchronize(s));
}

}  // namespace fusecheck::cuda
