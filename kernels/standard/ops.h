// One kernel per decoder op, templated on the storage type T (float for ref32-cuda,
// __nv_bfloat16 for standard-cuda). Every kernel reads T, computes in FP32 and rounds each
// value the hf-bf16 recipe rounds (docs/recipes.md) to T once; with T = float those
// roundings are exact no-ops, so the same code is the FP32 reference. Launchers check the
// launch and throw CudaError; shapes are validated by the caller (the engine).
#pragma once

#include <cstddef>

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

// Causal grouped-query attention over KV caches [batch][capacity][n_kv_heads * head_dim]
// holding start + n_new valid rows. q, out: [batch * n_new x n_heads * head_dim]. Scores
// q.k in FP32, rounded, scaled, rounded; softmax in FP32; probs rounded; P @ V in FP32,
// rounded (HF eager order). Throws CudaError when the scores do not fit shared memory.
template <class T>
void attention(const T* q, const T* k_cache, const T* v_cache, T* out, const AttentionShape& a,
               cudaStream_t s);

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
