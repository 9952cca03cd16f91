// An FP8 GEMV for the fp8-w8a8 projections at decode (a few token rows), in place of
// cuBLASLt FP8 + the epilogue kernel (fused_w8a8.h; off unless FusedW8a8::set_gemv_max_rows
// turns it on: not yet measured against cuBLASLt). One kernel per projection:
//   acc[m, n] = sum_k e4m3(a[m, k]) * e4m3(w[n, k])   FP32 (each product of two E4M3 values is
//                                                       exact in FP32, so only the order of the
//                                                       sum differs from the twin's)
//   y[m, n]   = a_s[m] * (w_s[n] * acc) [+ bias[n]] [then resid[m, n] + that], each FP32
//               operation rounded once, then bf16 RNE (or FP32 out), as w8a8.h's epilogue
//               and w8a8_residual.h.
// One warp per output channel; each lane reads 16 weight bytes at a time.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

namespace fusecheck::fused {

inline constexpr int kW8a8GemvMaxRows = 8;

// M in 1..kW8a8GemvMaxRows; K a multiple of 16 and every row 16-byte aligned (a, w: K-major);
// y [M x N]: bf16 unless y_fp32. bias [N] or null; resid [M x N] bf16 or null (bf16 out).
void launch_w8a8_gemv(const __nv_fp8_e4m3* a, const float* a_scales, const __nv_fp8_e4m3* w,
                      const float* w_scales, const __nv_bfloat16* bias, const __nv_bfloat16* resid,
                      int M, int N, int K, void* y, bool y_fp32, cudaStream_t stream);

}  // namespace fusecheck::fused
