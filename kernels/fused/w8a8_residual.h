// The down projection's epilogue of the fused-cuda:fp8-w8a8 layer (fused_w8a8.h): fp8-w8a8
// keeps `down` in FP32 (not a rounding point of fused-v1) and rounds only the residual sum,
//   resid_out[m, n] = bf16(resid[m, n] + a_s[m] * (w_s[n] * acc[m, n]))
// each operation one FP32 rounding (no contraction), as the twin's
// `resid_mid + fp8_scaled_gemm(act)` (reference/decoder_path.cpp, reference/w8a8.h).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

namespace fusecheck::fused {

// acc: [M x N] FP32 (A8 . W8^T with unit scales); resid, out: [M x N] bf16 (may not alias).
void launch_w8a8_epilogue_residual(const float* acc, const float* a_scales, const float* w_scales,
                                   const __nv_bfloat16* resid, int M, int N, __nv_bfloat16* out,
                                   cudaStream_t stream);

}  // namespace fusecheck::fused
