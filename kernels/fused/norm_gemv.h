// Decode-shape projections (at most kMaxGemvTokens token rows): one memory-bound GEMV
// kernel, weights streamed once with 16-byte loads, FP32 accumulation, one warp per output
// row group, fixed reduction order (bitwise reproducible). Its fused forms, with the
// fused-v1 rounding points (docs/recipes.md):
//
//  K1 attn_norm + QKV:   h = bf16(x * inv_rms(x) * w_norm)        prologue, shared memory
//                        q|k|v = bf16(h . W_row + bias_row)       bias added in FP32
//  K4 o_proj (+residual): o = bf16(attn . Wo_row)
//                        resid_mid = bf16(x + o)                  residual add in the epilogue
//  K5+K6 add + mlp_norm + gate/up + SwiGLU:
//                        s = x + o (FP32), h = bf16(s * inv_rms(s) * w_norm)   prologue
//                        act = bf16(silu(h . Wg_row) * (h . Wu_row))  gate, up stay FP32
//  K7 down + residual:   resid_out = bf16(resid_mid + act . Wd_row)
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

namespace fusecheck::fused {

inline constexpr int kMaxGemvTokens = 8;

// True when the GEMV kernels take this shape: rows <= kMaxGemvTokens, K a multiple of 8,
// and (for the forms with a norm prologue) the normalized rows fit in shared memory.
bool gemv_supports(int rows, int K, bool normalizes);

// x: [rows x K]; norm_w: [K]; W: [N x K]; bias: [N] or null; out: [rows x N].
void launch_norm_qkv_gemv(const __nv_bfloat16* x, const __nv_bfloat16* norm_w, float eps,
                          const __nv_bfloat16* W, const __nv_bfloat16* bias, int rows, int K,
                          int N, __nv_bfloat16* out, cudaStream_t stream);

// o = bf16(x . W^T) [rows x N]; resid_out = bf16(resid_in + o) [rows x N].
void launch_gemv_round_residual(const __nv_bfloat16* x, const __nv_bfloat16* W,
                                const __nv_bfloat16* resid_in, int rows, int K, int N,
                                __nv_bfloat16* o, __nv_bfloat16* resid_out, cudaStream_t stream);

// x, delta: [rows x K] (delta may be null: norm of x alone); W_gate_up: [2I x K] (gate
// rows, then up rows); act: [rows x I].
void launch_add_norm_gate_up_gemv(const __nv_bfloat16* x, const __nv_bfloat16* delta,
                                  const __nv_bfloat16* norm_w, float eps,
                                  const __nv_bfloat16* W_gate_up, int rows, int K, int I,
                                  __nv_bfloat16* act, cudaStream_t stream);

// out = bf16(resid + x . W^T): W [N x K]; resid, out: [rows x N] (out may not alias resid).
void launch_gemv_residual(const __nv_bfloat16* x, const __nv_bfloat16* W,
                          const __nv_bfloat16* resid, int rows, int K, int N,
                          __nv_bfloat16* out, cudaStream_t stream);

}  // namespace fusecheck::fused
