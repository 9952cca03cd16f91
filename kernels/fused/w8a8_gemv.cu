// launch_w8a8_gemv (w8a8_gemv.h): FP8 x FP8 dot products per output channel, twin-order epilogue.
#include "kernels/fused/w8a8_gemv.h"

#include <cuda_fp16.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "kernels/common/cuda_check.h"
#include "kernels/fused/fused_common.cuh"

namespace fusecheck::fused {

namespace {

constexpr int kWarps = 8;  // output channels per block

// 16 E4M3 codes to FP32 (E4M3 -> half is exact, half -> float too).
__device__ __forceinline__ void e4m3x16_to_float(const uint4& v, float out[16]) {
  const unsigned int words[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const auto pair = static_cast<__nv_fp8x2_storage_t>((words[i] >> (16 * h)) & 0xffffu);
      const float2 f = __half22float2(__half2(__nv_cvt_fp8x2_to_halfraw2(pair, __NV_E4M3)));
      out[4 * i + 2 * h] = f.x;
      out[4 * i + 2 * h + 1] = f.y;
    }
  }
}

template <int kRows>
__global__ void __launch_bounds__(kWarps * 32)
    w8a8_gemv_kernel(const __nv_fp8_e4m3* a, const float* a_scales, const __nv_fp8_e4m3* w, const float* w_scales,
                     const bf16* bias, const bf16* resid, int M, int N, int K, void* y, bool y_fp32) {
  const int n = blockIdx.x * kWarps + static_cast<int>(threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (n >= N) return;
  const uint4* w_row = reinterpret_cast<const uint4*>(w + static_cast<long>(n) * K);
  const int chunks = K / 16;
  float acc[kRows];
#pragma unroll
  for (int m = 0; m < kRows; ++m) acc[m] = 0.f;
#pragma unroll 2
  for (int c = lane; c < chunks; c += 32) {
    float wf[16];
    e4m3x16_to_float(__ldcs(w_row + c), wf);  // weights are read once: stream them past L1
#pragma unroll
    for (int m = 0; m < kRows; ++m) {
      if (m >= M) break;
      float af[16];
      e4m3x16_to_float(reinterpret_cast<const uint4*>(a + static_cast<long>(m) * K)[c], af);
#pragma unroll
      for (int i = 0; i < 16; ++i) acc[m] = fmaf(wf[i], af[i], acc[m]);  // exact products
    }
  }
#pragma unroll
  for (int m = 0; m < kRows; ++m) {
    if (m >= M) break;
    const float sum = warp_sum(acc[m]);
    if (lane != 0) continue;
    float v = __fmul_rn(a_scales[m], __fmul_rn(w_scales[n], sum));
    if (bias) v = __fadd_rn(v, __bfloat162float(bias[n]));
    const long at = static_cast<long>(m) * N + n;
    if (resid) v = __fadd_rn(__bfloat162float(resid[at]), v);
    if (y_fp32) {
      static_cast<float*>(y)[at] = v;
    } else {
      static_cast<bf16*>(y)[at] = round_bf16(v);
    }
  }
}

}  // namespace

void launch_w8a8_gemv(const __nv_fp8_e4m3* a, const float* a_scales, const __nv_fp8_e4m3* w, const float* w_scales,
                      const bf16* bias, const bf16* resid, int M, int N, int K, void* y, bool y_fp32,
                      cudaStream_t stream) {
  if (M < 1 || M > kW8a8GemvMaxRows || N < 1 || K < 16 || K % 16 != 0) {
    throw std::invalid_argument("w8a8 GEMV: needs 1 <= M <= " + std::to_string(kW8a8GemvMaxRows) +
                                ", N >= 1, K a multiple of 16 (got M=" + std::to_string(M) + " N=" + std::to_string(N) +
                                " K=" + std::to_string(K) + ")");
  }
  if (reinterpret_cast<std::uintptr_t>(a) % 16 != 0 || reinterpret_cast<std::uintptr_t>(w) % 16 != 0) {
    throw std::invalid_argument("w8a8 GEMV: activation and weight codes must be 16-byte aligned");
  }
  if (resid && y_fp32) throw std::invalid_argument("w8a8 GEMV: a residual add writes bf16");
  const dim3 grid((N + kWarps - 1) / kWarps), block(kWarps * 32);
  if (M <= 1) {
    w8a8_gemv_kernel<1><<<grid, block, 0, stream>>>(a, a_scales, w, w_scales, bias, resid, M, N, K, y, y_fp32);
  } else if (M <= 4) {
    w8a8_gemv_kernel<4><<<grid, block, 0, stream>>>(a, a_scales, w, w_scales, bias, resid, M, N, K, y, y_fp32);
  } else {
    w8a8_gemv_kernel<8><<<grid, block, 0, stream>>>(a, a_scales, w, w_scales, bias, resid, M, N, K, y, y_fp32);
  }
  CUDA_CHECK_LAUNCH();
}

}  // namespace fusecheck::fused
