// The FP64 kernels of ref64-cuda, one per op of ref64-cpu (reference/ops.h) with the same
// formula and the same order of roundings inside each element: eps inside the square
// root, the weight multiplied after normalization, RoPE terms rounded before their sum
// (no fused multiply-add where the CPU rounds twice), scores scaled after the product,
// probabilities divided by their sum before P V. Sums (dot products, sums of squares,
// softmax denominators) run in a different order than Eigen's, so results agree with
// ref64-cpu to FP64 rounding (about 1e-16 relative per op), not bit for bit. Launchers
// check the launch and throw CudaError; shapes are validated by the caller.
#pragma once

#include <cstddef>

#include <cublas_v2.h>
#include <cuda_runtime.h>

namespace fusecheck::cuda::ref64 {

// y = w * (x / sqrt(mean(x^2) + eps)) per group of `cols` values (a row, or one head for
// Qwen3's q/k norms); rows groups in all.
void rms_norm(const double* x, const double* w, double* y, int rows, int cols, double eps, cudaStream_t s);

// RoPE of every head of x ([batch * n x heads * head_dim]) into y; row b*n + t sits at
// position start + t. cos/sin: [positions x head_dim / 2]. interleaved: pairs (2i, 2i+1);
// otherwise (i, i + head_dim / 2). out_a = a*cos + (-b*sin), out_b = b*cos + a*sin.
void rope(const double* x, double* y, int rows, int n_per_seq, int heads, int head_dim, bool interleaved,
          const double* cos, const double* sin, int start, cudaStream_t s);

struct AttentionShape {
  int batch = 1;
  int n_new = 1;  // new tokens per sequence (their rows in q and out)
  int start = 0;  // tokens already cached; query t sits at position start + t
  int n_heads = 1, n_kv_heads = 1, head_dim = 1;
  int capacity = 1;  // rows per sequence in the caches
  double scale = 1.0;
};

// Most keys one query can attend to: one block holds a query's scores in shared memory.
int attention_max_keys(int head_dim, int device);

// Causal grouped-query attention over KV caches [batch][capacity][n_kv_heads * head_dim]
// holding start + n_new valid rows; q, out: [batch * n_new x n_heads * head_dim]. Query
// head h reads kv head h / (n_heads / n_kv_heads). One block per (head, query, sequence):
// scores over the visible keys, max, exp, sum, divide, then P V. Throws CudaError when
// start + n_new exceeds attention_max_keys.
void attention(const double* q, const double* k_cache, const double* v_cache, double* out,
               const AttentionShape& a, int device, cudaStream_t s);

// out = silu(gate) * up, silu(g) = g / (1 + exp(-g)).
void silu_mul(const double* gate, const double* up, double* out, std::size_t n, cudaStream_t s);

// out[i] = in[i], exactly (every float is a double).
void widen(const float* in, double* out, std::size_t n, cudaStream_t s);

// out = a + b.
void add(const double* a, const double* b, double* out, std::size_t n, cudaStream_t s);

// y[r][c] = bias[c] for every row (the GEMM then adds its product with beta = 1).
void broadcast_rows(const double* bias, double* y, int rows, int cols, cudaStream_t s);

// Row-major Y = X W^T (X [rows x in], W [out x in], HF order) in FP64 with cuBLAS DGEMM;
// beta = 1 adds the values already in y (a broadcast bias). ldy: Y's row stride (0: out),
// so that a slice of W's rows fills a slice of Y's columns.
void gemm_xwt(cublasHandle_t h, int rows, int out, int in, const double* x, const double* w, double* y,
              double beta = 0.0, int ldy = 0);

}  // namespace fusecheck::cuda::ref64
