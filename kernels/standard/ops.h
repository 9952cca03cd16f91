// One kernel per decoder op (attention: cuBLAS batched GEMMs around one kernel), templated
// on the storage type T (float for ref32-cuda, __nv_bfloat16 for standard-cuda). Every
// kernel reads T, computes in FP32 and rounds each value the hf-bf16 recipe rounds
// (docs/recipes.md) to T once; with T = float those roundings are exact no-ops, so the same
// code is the FP32 reference. Launchers check the launch and throw CudaError; shapes are
// validated by the caller (the engine).
#pragma once

#include <cstddef>

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

namespace fusecheck::cuda::ops {

// y = w * bf16(x / sqrt(mean(x^2) + eps)) per group of `cols` (a row, or one head for the
// Qwen3 q/k norms), the product rounded to T.
template <class T>
void rms_norm(const T* x, const T* w, T* y, int rows, int cols, float eps, cudaStream_t s);

// RoPE of every head of x ([batch * n x heads * head_dim]) into y; row b*n + t sits at
// position start + t. cos/sin: [positions x head_dim / 2] in T. Terms x*cos and
// rotate(x)*sin are rounded, then their sum. interleaved: pairs (2i, 2i+1); else (i, i+d/2).
template <class T>
void rope(const T* x, T* y, int rows, int n_per_seq, int heads, int head_dim, bool interleaved,
          const T* cos, const T* sin, int start, cudaStream_t s);

struct AttentionShape {
  int batch = 1;
  int n_new = 1;       // new tokens per sequence (their rows in q and out)
  int start = 0;       // tokens already cached; query t sits at position start + t
  int n_heads = 1, n_kv_heads = 1, head_dim = 1;
  int capacity = 1;    // rows per sequence in the caches
  float scale = 1.0f;
};

// Row stride (elements) of the scores workspace: start + n_new keys padded to 8 so that
// every row is 16-byte aligned for cuBLAS and the softmax's vector loads.
int attention_scores_ld(int kv_total);
// Elements of T the scores workspace must hold: [batch][n_heads][n_new][ld].
std::size_t attention_workspace_elems(const AttentionShape& a);

// Causal grouped-query attention over KV caches [batch][capacity][n_kv_heads * head_dim]
// holding start + n_new valid rows. q, out: [batch * n_new x n_heads * head_dim]. Run the
// way HF eager runs it: scores = Q K^T as cuBLAS strided-batched GEMMs (T operands, FP32
// accumulation, T output: the rounded scores) into `scores`; one kernel scales each row
// (rounded), applies the causal mask, softmaxes in FP32 and writes the probabilities
// rounded to T in place; out = P V as batched GEMMs (FP32 accumulation, rounded). The K/V
// caches are read in place (no repeat_kv copy): at decode the query heads of one kv head
// are the rows of one GEMM. FP32 (T = float) uses CUBLAS_COMPUTE_32F, never TF32.
// `cublas` must be bound to stream s (checked); scores must hold
// attention_workspace_elems(a) elements. Throws CudaError otherwise.
template <class T>
void attention(cublasHandle_t cublas, const T* q, const T* k_cache, const T* v_cache, T* out,
               T* scores, std::size_t scores_elems, const AttentionShape& a, cudaStream_t s);

// out = bf16(bf16(silu(gate)) * up), silu(g) = g / (1 + exp(-g)) in FP32.
template <class T>
void silu_mul(const T* gate, const T* up, T* out, std::size_t n, cudaStream_t s);

// out = a + b, rounded once.
template <class T>
void add(const T* a, const T* b, T* out, std::size_t n, cudaStream_t s);

// y[r][c] = bias[c] for every row (a GEMM with beta = 1 then adds in FP32).
template <class T>
void broadcast_rows(const T* bias, T* y, int rows, int cols, cudaStream_t s);

}  // namespace fusecheck::cuda::ops
