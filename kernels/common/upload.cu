// upload.h: stored 16-bit floats widened on the device.
#include "kernels/common/upload.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cstring>
#include <span>

#include "harness/checkpoint/float_chunks.h"
#include "kernels/common/cuda_check.h"

namespace fusecheck::cuda {

namespace {
// BF16 -> FP32: the stored bits become the upper half (NaN payloads included).
__global__ void widen_bf16_kernel(const std::uint16_t* src, float* dst, std::int64_t n) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    dst[i] = __uint_as_float(static_cast<unsigned>(src[i]) << 16);
  }
}
__global__ void widen_f16_kernel(const std::uint16_t* src, float* dst, std::int64_t n) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    dst[i] = __half2float(__ushort_as_half(src[i]));
  }
}
constexpr std::int64_t kChunk = std::int64_t(1) << 26;  // 64M values: 128 MB of stored bits
}  // namespace

void upload_as_float(const TensorView& t, float* dst, cudaStream_t s, FloatUploadScratch& scratch) {
  const std::int64_t n = t.numel();
  if (n == 0) return;
  const bool bits16 = !t.codec && (t.dtype == DType::BF16 || t.dtype == DType::F16);
  if (!t.codec && t.dtype == DType::F32 && t.bytes.size() == static_cast<std::size_t>(n) * sizeof(float)) {
    upload_bytes(dst, t.bytes.data(), t.bytes.size(), s);
    return;
  }
  if (bits16 && t.bytes.size() == static_cast<std::size_t>(n) * 2) {
    const std::int64_t chunk = std::min(n, kChunk);
    if (scratch.bits.size() < static_cast<std::size_t>(chunk)) scratch.bits.resize(static_cast<std::size_t>(chunk));
    for (std::int64_t first = 0; first < n; first += chunk) {
      const std::int64_t m = std::min(chunk, n - first);
      // upload_bytes synchronizes `s`: the last chunk's widening has read the scratch.
      upload_bytes(scratch.bits.data(), t.bytes.data() + first * 2, static_cast<std::size_t>(m) * 2, s);
      const int blocks = static_cast<int>(std::min<std::int64_t>((m + 255) / 256, 8192));
      if (t.dtype == DType::BF16) {
        widen_bf16_kernel<<<blocks, 256, 0, s>>>(scratch.bits.data(), dst + first, m);
      } else {
        widen_f16_kernel<<<blocks, 256, 0, s>>>(scratch.bits.data(), dst + first, m);
      }
      CUDA_CHECK_LAUNCH();
    }
    CUDA_CHECK(cudaStreamSynchronize(s));
    return;
  }
  for_each_float_chunk(t, scratch.host, [&](std::int64_t first, std::span<const float> values) {
    CUDA_CHECK(cudaMemcpyAsync(dst + first, values.data(), values.size_bytes(), cudaMemcpyHostToDevice, s));
    CUDA_CHECK(cudaStreamSynchronize(s));  // the chunk's buffer is reused next
  });
}

}  // namespace fusecheck::cuda
