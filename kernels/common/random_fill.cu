// Seeded uniform fills: splitmix64 of (seed, index) -> 24-bit mantissa -> [lo, hi).
#include "kernels/common/random_fill.h"

#include <algorithm>

#include "kernels/common/bf16.cuh"
#include "kernels/common/cuda_check.h"

namespace fusecheck::cuda {
namespace {

__device__ __forceinline__ std::uint64_t splitmix64(std::uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

template <typename T>
__global__ void fill_uniform_kernel(T* p, std::size_t n, std::uint64_t seed, float lo, float hi) {
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < n;
       i += std::size_t(gridDim.x) * blockDim.x) {
    const std::uint64_t h = splitmix64(seed * 0xD1B54A32D192ED03ull + i);
    const float u = static_cast<float>(h >> 40) * (1.0f / 16777216.0f);  // [0, 1)
    p[i] = from_f32<T>(lo + (hi - lo) * u);
  }
}

template <typename T>
void launch_fill(T* p, std::size_t n, std::uint64_t seed, float lo, float hi, cudaStream_t s) {
  if (n == 0) return;
  const int threads = 256;
  const auto blocks = static_cast<unsigned>(std::min<std::size_t>((n + threads - 1) / threads, 65535));
  fill_uniform_kernel<<<blocks, threads, 0, s>>>(p, n, seed, lo, hi);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void fill_uniform(float* p, std::size_t n, std::uint64_t seed, float lo, float hi, cudaStream_t s) {
  launch_fill(p, n, seed, lo, hi, s);
}
void fill_uniform(__nv_bfloat16* p, std::size_t n, std::uint64_t seed, float lo, float hi,
                  cudaStream_t s) {
  launch_fill(p, n, seed, lo, hi, s);
}

}  // namespace fusecheck::cuda
