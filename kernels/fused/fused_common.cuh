// Device helpers shared by the fused kernels: 16-byte bf16 vectors, FP32 warp and block
// reductions, the one bf16 rounding every kernel output goes through, and programmatic
// dependent launch (PDL). Included by .cu files only.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "kernels/common/cuda_check.h"

namespace fusecheck::fused {

using bf16 = __nv_bfloat16;

// Eight bf16 values moved as one 16-byte access (ld.global.v4 / st.global.v4).
struct alignas(16) Bf16x8 {
  __nv_bfloat162 h[4];
};

__device__ __forceinline__ Bf16x8 load8(const bf16* p) {
  Bf16x8 v;
  *reinterpret_cast<uint4*>(&v) = *reinterpret_cast<const uint4*>(p);
  return v;
}

// Weights are read exactly once per launch: stream them past L1 (ld.global.nc.L1::no_allocate)
// so that the L1 keeps the activations every warp re-reads.
__device__ __forceinline__ Bf16x8 load8_stream(const bf16* p) {
  uint4 r;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
               : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
               : "l"(p));
  Bf16x8 v;
  *reinterpret_cast<uint4*>(&v) = r;
  return v;
}

__device__ __forceinline__ void to_float8(const Bf16x8& v, float out[8]) {
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    float2 f = __bfloat1622float2(v.h[i]);
    out[2 * i] = f.x;
    out[2 * i + 1] = f.y;
  }
}

// The single rounding point of a kernel: FP32 -> bf16, round to nearest even.
__device__ __forceinline__ bf16 round_bf16(float x) { return __float2bfloat16_rn(x); }

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum over the whole block (blockDim.x a multiple of 32, at most 1024). `scratch` holds
// 32 floats; every thread gets the total. Fixed reduction order: deterministic.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = warp_sum(v);
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  const int n_warps = blockDim.x >> 5;
  float t = lane < n_warps ? scratch[lane] : 0.f;
  return warp_sum(t);
}

// Reciprocal RMS as every norm of the recipe computes it: 1 / sqrt(mean(x^2) + eps), FP32,
// with the correctly rounded sqrt and division (not rsqrtf's approximation).
__device__ __forceinline__ float inv_rms(float sum_squares, int n, float eps) {
  return 1.0f / sqrtf(sum_squares / static_cast<float>(n) + eps);
}

// Kernel 1's RMSNorm order (add_rmsnorm.cu), shared with the skinny GEMM's folded norm
// (skinny_gemm.cu) so that both give the same bits: 256 (virtual) threads, thread j sums
// r_i^2 over i = j, j + 256, ... in that order with FMAs; a warp_sum per 32 threads; a
// warp_sum of the 8 warp sums (block_sum's tree); normed_i = bf16(r_i * scale * w_i).
inline constexpr int kRmsThreads = 256;
__device__ __forceinline__ float rms_resid(const bf16* x, const bf16* d, long i) {
  const float r = __bfloat162float(x[i]);
  return d ? r + __bfloat162float(d[i]) : r;
}
__device__ __forceinline__ float rms_partial(const bf16* x, const bf16* d, int n, int j) {
  float s = 0.f;
  for (int i = j; i < n; i += kRmsThreads) {
    const float r = rms_resid(x, d, i);
    s = fmaf(r, r, s);
  }
  return s;
}
__device__ __forceinline__ bf16 rms_apply(float r, float scale, float w) { return round_bf16(r * scale * w); }

// SiLU in FP32 with the accurate expf (not __expf): x / (1 + e^-x).
__device__ __forceinline__ float silu(float x) { return x / (1.0f + expf(-x)); }

// Programmatic dependent launch (sm_90). A kernel launched by launch_pdl() may start while
// the kernel before it in the stream is still running, once every block of that one has
// called pdl_trigger(). Contract of every kernel launched this way:
//  - before pdl_wait() it reads only data no earlier kernel of the layer writes (weights,
//    KV-cache positions of earlier steps) and writes nothing;
//  - every block calls pdl_wait() (which returns when the previous kernel has completed
//    and its writes are visible) before any other read, any write and any early return,
//    so that completion of a kernel implies completion of everything before it;
//  - it calls pdl_trigger() right after pdl_wait(): the next kernel then only overlaps
//    this one, never an earlier one, and may only prefetch its weights meanwhile.
// Without PDL (older GPUs, FUSECHECK_FUSED_PDL=0, plain launches) both are no-ops.
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// PDL on when the current device is sm_90+ and FUSECHECK_FUSED_PDL is not "0" (an A/B
// switch for the benchmarks; decided once per process).
inline bool pdl_enabled() {
  static const bool on = [] {
    const char* env = std::getenv("FUSECHECK_FUSED_PDL");
    if (env && std::strcmp(env, "0") == 0) return false;
    int dev = 0, major = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess)
      return false;
    return major >= 9;
  }();
  return on;
}

// Launches `kernel` with the programmatic-stream-serialization attribute when PDL is on
// (a plain stream-ordered launch otherwise); checks the launch.
template <typename... KArgs, typename... Args>
void launch_pdl(void (*kernel)(KArgs...), dim3 grid, dim3 block, std::size_t smem,
                cudaStream_t stream, Args&&... args) {
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = pdl_enabled() ? 1 : 0;
  CUDA_CHECK(cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...));
}

}  // namespace fusecheck::fused
