// Decode-shape FP8 projections of the fp8-w8a8 recipe (docs/recipes.md, "fp8-w8a8 on the
// GPU"; docs/fused-kernels.md, "FP8 GEMV"): norm_gemv.h's four fused forms with E4M3 weights
// (one FP32 scale per output row, w8a8.h's quantize_weight_e4m3) and the GEMM input row
// quantized per token inside the kernel, bit for bit as the emulated twin (reference/w8a8.h)
// quantizes it:
//   s_a  = max(amax / 448, 1 / (448 * 512))         FP32, IEEE division
//   a8_i = e4m3(x_i / s_a)                          IEEE division, RNE, saturating
//   acc  = sum_i a8_i * w8[o, i]                    FP32; each product of two E4M3 values
//                                                   is exact in FP32, so acc differs from
//                                                   the twin's only by summation order
//   y    = s_a * (s_w[o] * acc)                     __fmul_rn twice (no contraction)
// then fused-v1's rounding points:
//  attn_norm + QKV:   h = bf16(x * inv_rms(x) * w_norm) (prologue), q|k|v = bf16(y [+ bias])
//  o_proj (+resid):   o = bf16(y), resid_mid = bf16(x + o)
//  add + mlp_norm + gate/up + SwiGLU:
//                     s = x + o (FP32), h = bf16(s * inv_rms(s) * w_norm) (prologue),
//                     gate, up = y (FP32), act = bf16(silu(gate) * up)
//  down + residual:   resid_out = bf16(resid_mid + y)
// The x row quantized is the bf16 row the twin quantizes: the prologue's h (its
// attn_norm / mlp_norm tap) or the stored attn / act.
// Layout: one warp per R output rows (gate row j and up row j for the SwiGLU form), 8 warps
// per block; weights streamed once with 16-byte loads (16 codes), converted in hardware
// (cvt.rn.f16x2.e4m3x2) to half2 and then to FP32, FMA in FP32. Every block recomputes the
// row's amax and its codes from the bf16 row (rows are 4K-14K values: a few microseconds
// of shared-memory work spread over every block, against a grid-wide reduction, a second
// kernel or a flag spin to share one scale); since all blocks run the same arithmetic on
// the same row, every block gets the same scale and codes.
// A row holding NaN or Inf gets a NaN scale (its outputs NaN) and is recorded in *bad_row
// (atomicMin of the token row; Fp8RowCheck, w8a8.h), as launch_quantize_rows_e4m3 does.
// More than kMaxGemvTokens rows are run as groups of kMaxGemvTokens (one launch each): the
// prefill of a model whose shapes cuBLASLt's FP8 GEMM refuses (K or N not a multiple of 16).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "kernels/fused/norm_gemv.h"
#include "kernels/fused/w8a8.h"

namespace fusecheck::fused {

// Re-lays `w` out with rows of round_up(k, 16) codes, the tail zero (zero codes add exact
// zeros to acc), and sets w.ld; a no-op when k is already a multiple of 16.
void pad_fp8_weight_rows(Fp8Weight& w, cudaStream_t stream);

// True when these kernels take K (a multiple of 8) for kMaxGemvTokens rows: with a norm
// prologue the rows, their bf16 h and their codes must fit in shared memory.
bool fp8_gemv_supports(int K, bool normalizes);

// x: [rows x K] bf16; W: [N x K] E4M3 (K = W.k, N = W.n; W.ld a multiple of 16); out [rows x N].
void launch_fp8_norm_qkv_gemv(const __nv_bfloat16* x, const __nv_bfloat16* norm_w, float eps, const Fp8Weight& W,
                              const __nv_bfloat16* bias, int rows, __nv_bfloat16* out, int* bad_row,
                              cudaStream_t stream);
// o = bf16(y), resid_out = bf16(resid_in + o), both [rows x N].
void launch_fp8_gemv_round_residual(const __nv_bfloat16* x, const Fp8Weight& W, const __nv_bfloat16* resid_in,
                                    int rows, __nv_bfloat16* o, __nv_bfloat16* resid_out, int* bad_row,
                                    cudaStream_t stream);
// W_gate_up: [2I x K] (gate rows, then up rows); delta may be null; act: [rows x I].
void launch_fp8_add_norm_gate_up_gemv(const __nv_bfloat16* x, const __nv_bfloat16* delta,
                                      const __nv_bfloat16* norm_w, float eps, const Fp8Weight& W_gate_up, int rows,
                                      __nv_bfloat16* act, int* bad_row, cudaStream_t stream);
// out = bf16(resid + y) [rows x N] (out may not alias resid).
void launch_fp8_gemv_residual(const __nv_bfloat16* x, const Fp8Weight& W, const __nv_bfloat16* resid, int rows,
                              __nv_bfloat16* out, int* bad_row, cudaStream_t stream);

// The GEMM route's down + residual after Fp8Gemm's FP32 output: out = bf16(resid + y),
// one __fadd_rn and one rounding, `count` values.
void launch_add_residual_fp32(const float* y, const __nv_bfloat16* resid, long count, __nv_bfloat16* out,
                              cudaStream_t stream);

}  // namespace fusecheck::fused
