// The FlashInfer kernels the flashinfer-cuda path runs, behind plain launchers: this header
// names no FlashInfer type, so that only flashinfer_ops.cu is compiled against FlashInfer's
// templates (and only for the instances listed there). Every launcher checks its shape,
// returns after queueing on `s`, and throws std::runtime_error naming the FlashInfer call
// and its cudaError on failure. Rounding points: docs/recipes.md, recipe `flashinfer`.
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_runtime.h>

namespace fusecheck::flashinfer_ops {

using bf16 = __nv_bfloat16;

// Head dims this build instantiated (flashinfer_attention.cu) and the GQA group sizes
// FlashInfer's decode dispatches; the path checks a model against them at creation.
bool head_dim_supported(int head_dim);
bool group_size_supported(int group_size);

// norm.cuh RMSNorm: y = bf16(x * rsqrt(mean(x^2) + eps) * w), rows of `cols`.
void rms_norm(const bf16* x, const bf16* w, bf16* y, int rows, int cols, float eps, cudaStream_t s);
// norm.cuh FusedAddRMSNorm, in place: residual = bf16(x + residual); x = bf16(norm(sum) * w)
// with the sum kept in FP32 (not re-read from the rounded residual).
void fused_add_rms_norm(bf16* x, bf16* residual, const bf16* w, int rows, int cols, float eps,
                        cudaStream_t s);
// norm.cuh QKRMSNorm: each of `heads` heads of `head_dim` of each row normalized with w;
// input rows `in_stride` elements apart (a slice of the fused qkv), output dense.
void qk_rms_norm(const bf16* x, std::size_t in_stride, const bf16* w, bf16* y, int rows, int heads,
                 int head_dim, float eps, cudaStream_t s);
// pos_enc.cuh BatchQKApplyRotaryPosIdsCosSinCache: q/k rows (strides in elements) rotated
// at positions pos[row] with the FP32 cos|sin cache [positions x head_dim] into dense
// q_rope / k_rope. interleaved: pairs (2i, 2i+1), else (i, i + d/2).
void rope_cos_sin_cache(const bf16* q, std::size_t q_stride, const bf16* k, std::size_t k_stride,
                        bf16* q_rope, bf16* k_rope, const float* cos_sin_cache, const std::int32_t* pos,
                        int rows, int n_heads, int n_kv_heads, int head_dim, bool interleaved, cudaStream_t s);
// activation.cuh act_and_mul_kernel with FlashInfer's silu (x / (1 + __expf(-x))):
// out[r] = bf16(silu(gate) * up) from gate_up [rows x 2 * inter] (gate first).
void silu_and_mul(const bf16* gate_up, bf16* out, int rows, int inter, cudaStream_t s);

struct AttentionArgs {
  const bf16* q = nullptr;      // [qo_len x n_heads * head_dim], dense
  const bf16* k = nullptr;      // [kv_len x n_kv_heads * head_dim], NHD, dense rows
  const bf16* v = nullptr;
  bf16* out = nullptr;          // like q
  int qo_len = 1, kv_len = 1, n_heads = 1, n_kv_heads = 1, head_dim = 64;
  float sm_scale = 1.0f;
};
// Elements of bf16 the split-KV workspace must hold for these lengths (chunks of >= 256
// keys: FlashInfer's own lower bound on the chunk size), partial outputs and their LSEs.
std::size_t attention_workspace_elems(int qo_len, int kv_len, int n_heads, int head_dim);
// decode.cuh SingleDecodeWithKVCacheDispatched (qo_len 1) or prefill.cuh
// SinglePrefillWithKVCacheDispatched with the causal mask aligned bottom-right (query t
// sees keys < kv_len - qo_len + t + 1): FlashInfer's DefaultAttention, no RoPE inside.
// `workspace` (attention_workspace_elems) lets FlashInfer split long KV as it chooses.
void attention(const AttentionArgs& a, bf16* workspace, cudaStream_t s);

}  // namespace fusecheck::flashinfer_ops

namespace fusecheck::flashinfer_ops {

// Glue of the engine, not FlashInfer code (an engine does these inside FlashInfer's
// FusedAddRMSNorm of the next layer, or in its GEMM epilogue):
// out = bf16(float(a) + float(b)), the rounding FusedAddRMSNorm gives its residual.
void residual_add(const bf16* a, const bf16* b, bf16* out, std::size_t n, cudaStream_t s);
// y[r][c] = bias[c], so that a GEMM with beta = 1 adds the bias in its FP32 accumulator.
void broadcast_rows(const bf16* bias, bf16* y, int rows, int cols, cudaStream_t s);
// y[r][c] = bf16(acc[r][c] + float(bias[c])): the bias joins the FP32 GEMM result before
// its one rounding (what a cuBLASLt bias epilogue does), acc dense [rows x cols].
void bias_add_round(const float* acc, const bf16* bias, bf16* y, int rows, int cols, cudaStream_t s);

}  // namespace fusecheck::flashinfer_ops
