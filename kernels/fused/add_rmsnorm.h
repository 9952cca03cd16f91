// Kernel 1 of the fused path (fused-v1 K5): residual add + RMSNorm in one pass per row.
//   s      = residual + delta                       (FP32 sum of two bf16 values; kept FP32)
//   resid  = bf16(s)                                (only when delta is given)
//   normed = bf16((s * inv_rms(s)) * weight)        (norm of the FP32 sum, one rounding)
// Without delta it is the plain RMSNorm prologue of the prefill GEMMs (K1's attn_norm) and
// the head's final_norm.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

namespace fusecheck::fused {

// delta: [rows x n] (o_proj) or null; residual: [rows x n]; weight: [n]; resid_out: [rows x n]
// (required when delta is given, ignored otherwise); normed: [rows x n].
void launch_add_rmsnorm(const __nv_bfloat16* delta, const __nv_bfloat16* residual,
                        const __nv_bfloat16* weight, float eps, int rows, int n,
                        __nv_bfloat16* resid_out, __nv_bfloat16* normed, cudaStream_t stream);

}  // namespace fusecheck::fused
