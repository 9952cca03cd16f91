// Kernels of the one-kernel-per-op decoder (see ops.h); attention is cuBLAS batched GEMMs
// around one softmax kernel, as HF eager runs it. Elementwise kernels and the norms
// move 16 bytes per access when sizes and alignment allow, with a scalar path otherwise.
#include "kernels/standard/ops.h"

#include <algorithm>
#include <string>
#include <type_traits>
#include <vector>

#include "kernels/common/bf16.cuh"
#include "kernels/common/cuda_check.h"

namespace fusecheck::cuda::ops {
namespace {

constexpr int kWarp = 32;

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = kWarp / 2; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = kWarp / 2; o > 0; o /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

unsigned grid_for(std::size_t work, int per_block) {
  return static_cast<unsigned>(std::min<std::size_t>((work + per_block - 1) / per_block, 1u << 20));
}

// ---------------------------------------------------------------- RMSNorm.
// kRowThreads threads per row: a warp for short rows (per-head q/k norms, small models),
// a 256-thread block for long rows so that a single decode row still has many loads in
// flight. The sum of squares is reduced across the row's warps in shared memory.
constexpr int kNormBlock = 256;

template <class T, bool kVector, int kRowThreads>
__global__ void __launch_bounds__(kNormBlock)
rms_norm_kernel(const T* __restrict__ x, const T* __restrict__ w, T* __restrict__ y, int rows,
                int cols, float eps) {
  constexpr int kRowsPerBlock = kNormBlock / kRowThreads;
  constexpr int kWarpsPerRow = kRowThreads / kWarp;
  __shared__ float partial[kNormBlock / kWarp];
  const int row = blockIdx.x * kRowsPerBlock + threadIdx.x / kRowThreads;
  const int tid = threadIdx.x % kRowThreads;
  const bool active = row < rows;
  const T* xr = x + static_cast<std::size_t>(active ? row : 0) * cols;
  T* yr = y + static_cast<std::size_t>(active ? row : 0) * cols;
  constexpr int V = kVector ? kVec16<T> : 1;
  float sumsq = 0.0f;
  if (active) {
    for (int i = tid * V; i < cols; i += kRowThreads * V) {
      if constexpr (kVector) {
        const Vec16<T> v = load16(xr + i);
#pragma unroll
        for (int e = 0; e < V; ++e) sumsq = fmaf(to_f32(v.v[e]), to_f32(v.v[e]), sumsq);
      } else {
        const float f = to_f32(xr[i]);
        sumsq = fmaf(f, f, sumsq);
      }
    }
  }
  sumsq = warp_sum(sumsq);
  if constexpr (kWarpsPerRow > 1) {
    if (threadIdx.x % kWarp == 0) partial[threadIdx.x / kWarp] = sumsq;
    __syncthreads();
    const int first = (threadIdx.x / kRowThreads) * kWarpsPerRow;
    sumsq = 0.0f;
#pragma unroll
    for (int i = 0; i < kWarpsPerRow; ++i) sumsq += partial[first + i];
  }
  if (!active) return;
  // eps inside the square root; a true division and sqrt (no rsqrt approximation).
  const float inv = 1.0f / sqrtf(sumsq / static_cast<float>(cols) + eps);
  for (int i = tid * V; i < cols; i += kRowThreads * V) {
    if constexpr (kVector) {
      const Vec16<T> v = load16(xr + i);
      const Vec16<T> wv = load16(w + i);
      Vec16<T> o;
#pragma unroll
      for (int e = 0; e < V; ++e) {
        const float normalized = round_to<T>(__fmul_rn(to_f32(v.v[e]), inv));
        o.v[e] = from_f32<T>(__fmul_rn(to_f32(wv.v[e]), normalized));
      }
      store16(yr + i, o);
    } else {
      const float normalized = round_to<T>(__fmul_rn(to_f32(xr[i]), inv));
      yr[i] = from_f32<T>(__fmul_rn(to_f32(w[i]), normalized));
    }
  }
}

// ---------------------------------------------------------------- RoPE: a thread per pair.
template <class T>
__global__ void rope_kernel(const T* __restrict__ x, T* __restrict__ y, int rows, int n_per_seq,
                            int heads, int head_dim, bool interleaved, const T* __restrict__ cos,
                            const T* __restrict__ sin, int start) {
  const int half = head_dim / 2;
  const std::size_t total = static_cast<std::size_t>(rows) * heads * half;
  for (std::size_t idx = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; idx < total;
       idx += std::size_t(gridDim.x) * blockDim.x) {
    const int i = static_cast<int>(idx % half);
    const std::size_t rh = idx / half;  // row * heads + head
    const int row = static_cast<int>(rh / heads);
    const int pos = start + row % n_per_seq;
    const std::size_t base = rh * head_dim;
    const int ia = interleaved ? 2 * i : i;
    const int ib = interleaved ? 2 * i + 1 : i + half;
    const float c = to_f32(cos[static_cast<std::size_t>(pos) * half + i]);
    const float s = to_f32(sin[static_cast<std::size_t>(pos) * half + i]);
    const float a = to_f32(x[base + ia]), b = to_f32(x[base + ib]);
    // _rn intrinsics keep each product rounded on its own (no FMA contraction), as HF's
    // separate tensor ops do.
    const float a_c = round_to<T>(__fmul_rn(a, c));
    const float nb_s = round_to<T>(__fmul_rn(-b, s));
    const float b_c = round_to<T>(__fmul_rn(b, c));
    const float a_s = round_to<T>(__fmul_rn(a, s));
    y[base + ia] = from_f32<T>(__fadd_rn(a_c, nb_s));
    y[base + ib] = from_f32<T>(__fadd_rn(b_c, a_s));
  }
}

// ---------------------------------------------------------------- attention softmax.
// The elementwise middle of eager attention: a block per score row ([b][h][t], ld padded
// to 8). Scores arrive rounded to T from the cuBLAS GEMM; each is scaled in FP32 and
// rounded (HF: `matmul(q, k^T) * scaling` in bf16), keys past the causal bound are masked
// (HF adds finfo.min, whose exp is exactly 0), the row max is subtracted, exp and the sum
// are FP32, and p = e / sum is rounded to T and written in place. Three passes over the
// row (max, sum, write) recompute the same values instead of staging the row, so there is
// no shared-memory limit on the KV length; the re-reads hit L1/L2. Reductions go through
// shared memory in a fixed order (deterministic). Only keys below the causal bound are
// read; masked keys and the padding are written as 0 so that P @ V sees exact zeros.
constexpr int kSoftmaxThreads = 128;
constexpr int kSoftmaxWarps = kSoftmaxThreads / kWarp;

// The scaled, rounded scores of elements [i, i + V) of a row; those at or past `visible`
// are not read (left at -inf).
template <class T, bool kVector>
__device__ __forceinline__ void load_scaled(const T* r, int i, int visible, float scale,
                                            float (&x)[kVector ? kVec16<T> : 1]) {
  constexpr int V = kVector ? kVec16<T> : 1;
  if (kVector && i + V <= visible) {
    const Vec16<T> v = load16(r + i);
#pragma unroll
    for (int e = 0; e < V; ++e) x[e] = round_to<T>(__fmul_rn(to_f32(v.v[e]), scale));
  } else {
#pragma unroll
    for (int e = 0; e < V; ++e) {
      x[e] = i + e < visible ? round_to<T>(__fmul_rn(to_f32(r[i + e]), scale)) : -INFINITY;
    }
  }
}

template <bool kMax>
__device__ __forceinline__ float block_reduce(float v, float* red) {
  v = kMax ? warp_max(v) : warp_sum(v);
  if (threadIdx.x % kWarp == 0) red[threadIdx.x / kWarp] = v;
  __syncthreads();
  float r = red[0];
#pragma unroll
  for (int w = 1; w < kSoftmaxWarps; ++w) r = kMax ? fmaxf(r, red[w]) : r + red[w];
  return r;
}

template <class T, bool kVector>
__global__ void __launch_bounds__(kSoftmaxThreads)
scaled_causal_softmax_kernel(T* __restrict__ s, int ld, int n_new, int start, float scale) {
  constexpr int V = kVector ? kVec16<T> : 1;
  __shared__ float red_max[kSoftmaxWarps], red_sum[kSoftmaxWarps];
  const std::size_t row = blockIdx.x;
  const int visible = start + static_cast<int>(row % n_new) + 1;
  T* r = s + row * ld;
  float x[V];

  float m = -INFINITY;
  for (int i = threadIdx.x * V; i < visible; i += kSoftmaxThreads * V) {
    load_scaled<T, kVector>(r, i, visible, scale, x);
#pragma unroll
    for (int e = 0; e < V; ++e) m = fmaxf(m, x[e]);
  }
  m = block_reduce<true>(m, red_max);

  float sum = 0.0f;
  for (int i = threadIdx.x * V; i < visible; i += kSoftmaxThreads * V) {
    load_scaled<T, kVector>(r, i, visible, scale, x);
#pragma unroll
    for (int e = 0; e < V; ++e) sum += i + e < visible ? expf(x[e] - m) : 0.0f;
  }
  sum = block_reduce<false>(sum, red_sum);

  // In place is safe: every pass maps chunk i to the same thread, so no thread writes an
  // element another thread still reads.
  for (int i = threadIdx.x * V; i < ld; i += kSoftmaxThreads * V) {
    if (i < visible) {
      load_scaled<T, kVector>(r, i, visible, scale, x);
    }
    float p[V];
#pragma unroll
    for (int e = 0; e < V; ++e) p[e] = i + e < visible ? expf(x[e] - m) / sum : 0.0f;
    if constexpr (kVector) {
      Vec16<T> o;
#pragma unroll
      for (int e = 0; e < V; ++e) o.v[e] = from_f32<T>(p[e]);
      store16(r + i, o);
    } else {
      r[i] = from_f32<T>(p[0]);
    }
  }
}

// ---------------------------------------------------------------- elementwise.
template <class T>
__device__ __forceinline__ float silu_mul_one(float g, float u) {
  const float silu = round_to<T>(g / (1.0f + expf(-g)));
  return __fmul_rn(silu, u);
}

template <class T, bool kVector>
__global__ void silu_mul_kernel(const T* __restrict__ gate, const T* __restrict__ up,
                                T* __restrict__ out, std::size_t n) {
  constexpr int V = kVector ? kVec16<T> : 1;
  const std::size_t stride = std::size_t(gridDim.x) * blockDim.x * V;
  for (std::size_t i = (blockIdx.x * std::size_t(blockDim.x) + threadIdx.x) * V; i < n; i += stride) {
    if constexpr (kVector) {
      const Vec16<T> g = load16(gate + i), u = load16(up + i);
      Vec16<T> o;
#pragma unroll
      for (int e = 0; e < V; ++e) o.v[e] = from_f32<T>(silu_mul_one<T>(to_f32(g.v[e]), to_f32(u.v[e])));
      store16(out + i, o);
    } else {
      out[i] = from_f32<T>(silu_mul_one<T>(to_f32(gate[i]), to_f32(up[i])));
    }
  }
}

template <class T, bool kVector>
__global__ void add_kernel(const T* __restrict__ a, const T* __restrict__ b, T* __restrict__ out,
                           std::size_t n) {
  constexpr int V = kVector ? kVec16<T> : 1;
  const std::size_t stride = std::size_t(gridDim.x) * blockDim.x * V;
  for (std::size_t i = (blockIdx.x * std::size_t(blockDim.x) + threadIdx.x) * V; i < n; i += stride) {
    if constexpr (kVector) {
      const Vec16<T> x = load16(a + i), y = load16(b + i);
      Vec16<T> o;
#pragma unroll
      for (int e = 0; e < V; ++e) o.v[e] = from_f32<T>(__fadd_rn(to_f32(x.v[e]), to_f32(y.v[e])));
      store16(out + i, o);
    } else {
      out[i] = from_f32<T>(__fadd_rn(to_f32(a[i]), to_f32(b[i])));
    }
  }
}

template <class T>
__global__ void broadcast_rows_kernel(const T* __restrict__ bias, T* __restrict__ y, int rows, int cols) {
  const std::size_t total = static_cast<std::size_t>(rows) * cols;
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < total;
       i += std::size_t(gridDim.x) * blockDim.x) {
    y[i] = bias[i % cols];
  }
}

constexpr int kElemThreads = 256;

// One cuBLAS strided-batched call per outer index: the batch covers GEMMs whose operands
// sit at uniform strides. q_off doubles as the offset into out (same layout), k_off into V.
struct AttnCall {
  std::size_t q_off, k_off, s_off;
};
struct AttnPlan {
  int rows = 0;      // rows of one GEMM: the G heads of a kv head (decode) or n tokens (prefill)
  int ldq = 0;       // row stride of those rows in q and out
  int count = 0;     // GEMMs per call
  long long sq = 0, sk = 0, ss = 0;  // batch strides in q/out, k/v, scores
  std::vector<AttnCall> calls;
};

// Without repeat_kv the (batch, head) -> kv head map is not one stride, so the GEMMs are
// grouped into the fewest strided-batched calls whose strides are uniform.
AttnPlan plan_attention(const AttentionShape& a, int ld) {
  const int B = a.batch, n = a.n_new, H = a.n_heads, KVH = a.n_kv_heads, D = a.head_dim;
  const int G = H / KVH;
  const std::size_t kvw = static_cast<std::size_t>(KVH) * D, seq_kv = static_cast<std::size_t>(a.capacity) * kvw;
  const std::size_t qw = static_cast<std::size_t>(H) * D, uld = static_cast<std::size_t>(ld);
  AttnPlan p;
  if (n == 1) {
    // Decode: the G query heads of kv head kvh are G consecutive rows of q (stride D), and
    // their score rows are consecutive too; one GEMM per (b, kvh) reads its K rows once.
    p.rows = G;
    p.ldq = D;
    if (B <= KVH) {
      p.count = KVH;
      p.sq = static_cast<long long>(G) * D;
      p.sk = D;
      p.ss = static_cast<long long>(G) * ld;
      for (int b = 0; b < B; ++b) p.calls.push_back({b * qw, b * seq_kv, b * H * uld});
    } else {
      p.count = B;
      p.sq = static_cast<long long>(qw);
      p.sk = static_cast<long long>(seq_kv);
      p.ss = static_cast<long long>(H) * ld;
      for (int k = 0; k < KVH; ++k) {
        p.calls.push_back({static_cast<std::size_t>(k) * G * D, static_cast<std::size_t>(k) * D,
                           static_cast<std::size_t>(k) * G * uld});
      }
    }
  } else {
    // Prefill: one GEMM per (b, h) over its n query rows (stride H * D), as HF's bmm after
    // repeat_kv, but reading the shared K/V in place.
    p.rows = n;
    p.ldq = static_cast<int>(qw);
    const std::size_t head_scores = static_cast<std::size_t>(n) * uld;
    if (static_cast<long long>(B) * G <= H) {
      p.count = KVH;  // h = kvh * G + g for fixed (b, g)
      p.sq = static_cast<long long>(G) * D;
      p.sk = D;
      p.ss = static_cast<long long>(G) * static_cast<long long>(head_scores);
      for (int b = 0; b < B; ++b) {
        for (int g = 0; g < G; ++g) {
          p.calls.push_back({b * n * qw + static_cast<std::size_t>(g) * D, b * seq_kv,
                             (static_cast<std::size_t>(b) * H + g) * head_scores});
        }
      }
    } else {
      p.count = B;  // fixed h, batch over sequences
      p.sq = static_cast<long long>(n) * static_cast<long long>(qw);
      p.sk = static_cast<long long>(seq_kv);
      p.ss = static_cast<long long>(H) * static_cast<long long>(head_scores);
      for (int h = 0; h < H; ++h) {
        p.calls.push_back({static_cast<std::size_t>(h) * D, static_cast<std::size_t>(h / G) * D,
                           static_cast<std::size_t>(h) * head_scores});
      }
    }
  }
  return p;
}

template <class T>
constexpr cudaDataType_t kCudaType = std::is_same_v<T, float> ? CUDA_R_32F : CUDA_R_16BF;

}  // namespace

template <class T, bool kVector>
void launch_rms_norm(const T* x, const T* w, T* y, int rows, int cols, float eps, cudaStream_t s) {
  if (cols >= 2048) {
    rms_norm_kernel<T, kVector, kNormBlock><<<rows, kNormBlock, 0, s>>>(x, w, y, rows, cols, eps);
  } else {
    const unsigned blocks = static_cast<unsigned>((rows + kNormBlock / kWarp - 1) / (kNormBlock / kWarp));
    rms_norm_kernel<T, kVector, kWarp><<<blocks, kNormBlock, 0, s>>>(x, w, y, rows, cols, eps);
  }
}

template <class T>
void rms_norm(const T* x, const T* w, T* y, int rows, int cols, float eps, cudaStream_t s) {
  if (rows <= 0) return;
  const bool vec = cols % kVec16<T> == 0 && aligned16(x) && aligned16(w) && aligned16(y);
  if (vec) {
    launch_rms_norm<T, true>(x, w, y, rows, cols, eps, s);
  } else {
    launch_rms_norm<T, false>(x, w, y, rows, cols, eps, s);
  }
  CUDA_CHECK_LAUNCH();
}

template <class T>
void rope(const T* x, T* y, int rows, int n_per_seq, int heads, int head_dim, bool interleaved,
          const T* cos, const T* sin, int start, cudaStream_t s) {
  const std::size_t total = static_cast<std::size_t>(rows) * heads * (head_dim / 2);
  if (total == 0) return;
  rope_kernel<T><<<grid_for(total, kElemThreads), kElemThreads, 0, s>>>(
      x, y, rows, n_per_seq, heads, head_dim, interleaved, cos, sin, start);
  CUDA_CHECK_LAUNCH();
}

int attention_scores_ld(int kv_total) { return (kv_total + 7) / 8 * 8; }

std::size_t attention_workspace_elems(const AttentionShape& a) {
  return static_cast<std::size_t>(a.batch) * a.n_heads * a.n_new *
         static_cast<std::size_t>(attention_scores_ld(a.start + a.n_new));
}

template <class T>
void attention(cublasHandle_t cublas, const T* q, const T* k_cache, const T* v_cache, T* out,
               T* scores, std::size_t scores_elems, const AttentionShape& a, cudaStream_t s) {
  if (a.batch <= 0 || a.n_new <= 0) return;
  if (a.n_kv_heads <= 0 || a.n_heads % a.n_kv_heads != 0 || a.start < 0 ||
      a.start + a.n_new > a.capacity || a.head_dim <= 0) {
    throw CudaError("attention: invalid shape (heads " + std::to_string(a.n_heads) + ", kv heads " +
                    std::to_string(a.n_kv_heads) + ", " + std::to_string(a.start) + " + " +
                    std::to_string(a.n_new) + " keys in capacity " + std::to_string(a.capacity) + ")");
  }
  const std::size_t need = attention_workspace_elems(a);
  if (scores == nullptr || scores_elems < need) {
    throw CudaError("attention: the scores workspace holds " + std::to_string(scores_elems) +
                    " elements, this shape needs " + std::to_string(need));
  }
  cudaStream_t bound = nullptr;
  CUBLAS_CHECK(cublasGetStream(cublas, &bound));
  if (bound != s) throw CudaError("attention: the cuBLAS handle is bound to another stream");

  const int kv_total = a.start + a.n_new;
  const int ld = attention_scores_ld(kv_total);
  const int kvw = a.n_kv_heads * a.head_dim;
  const AttnPlan p = plan_attention(a, ld);
  const float one = 1.0f, zero = 0.0f;
  constexpr cudaDataType_t type = kCudaType<T>;
  // FP32 accumulation for both storage types; for float this is true FP32 (no TF32).
  constexpr cublasComputeType_t compute = CUBLAS_COMPUTE_32F;

  // scores^T (kv x rows, column-major) = K (kv x D) . Q^T: row-major S = Q K^T.
  for (const AttnCall& c : p.calls) {
    CUBLAS_CHECK(cublasGemmStridedBatchedEx(
        cublas, CUBLAS_OP_T, CUBLAS_OP_N, kv_total, p.rows, a.head_dim, &one, k_cache + c.k_off, type, kvw, p.sk,
        q + c.q_off, type, p.ldq, p.sq, &zero, scores + c.s_off, type, ld, p.ss, p.count, compute,
        CUBLAS_GEMM_DEFAULT));
  }

  const std::size_t rows = static_cast<std::size_t>(a.batch) * a.n_heads * a.n_new;
  if (aligned16(scores)) {
    scaled_causal_softmax_kernel<T, true><<<static_cast<unsigned>(rows), kSoftmaxThreads, 0, s>>>(
        scores, ld, a.n_new, a.start, a.scale);
  } else {
    scaled_causal_softmax_kernel<T, false><<<static_cast<unsigned>(rows), kSoftmaxThreads, 0, s>>>(
        scores, ld, a.n_new, a.start, a.scale);
  }
  CUDA_CHECK_LAUNCH();

  // out^T (D x rows, column-major) = V^T (D x kv) . P^T: row-major out = P V.
  for (const AttnCall& c : p.calls) {
    CUBLAS_CHECK(cublasGemmStridedBatchedEx(
        cublas, CUBLAS_OP_N, CUBLAS_OP_N, a.head_dim, p.rows, kv_total, &one, v_cache + c.k_off, type, kvw, p.sk,
        scores + c.s_off, type, ld, p.ss, &zero, out + c.q_off, type, p.ldq, p.sq, p.count, compute,
        CUBLAS_GEMM_DEFAULT));
  }
}

template <class T>
void silu_mul(const T* gate, const T* up, T* out, std::size_t n, cudaStream_t s) {
  if (n == 0) return;
  constexpr int V = kVec16<T>;
  if (n % V == 0 && aligned16(gate) && aligned16(up) && aligned16(out)) {
    silu_mul_kernel<T, true><<<grid_for(n / V, kElemThreads), kElemThreads, 0, s>>>(gate, up, out, n);
  } else {
    silu_mul_kernel<T, false><<<grid_for(n, kElemThreads), kElemThreads, 0, s>>>(gate, up, out, n);
  }
  CUDA_CHECK_LAUNCH();
}

template <class T>
void add(const T* a, const T* b, T* out, std::size_t n, cudaStream_t s) {
  if (n == 0) return;
  constexpr int V = kVec16<T>;
  if (n % V == 0 && aligned16(a) && aligned16(b) && aligned16(out)) {
    add_kernel<T, true><<<grid_for(n / V, kElemThreads), kElemThreads, 0, s>>>(a, b, out, n);
  } else {
    add_kernel<T, false><<<grid_for(n, kElemThreads), kElemThreads, 0, s>>>(a, b, out, n);
  }
  CUDA_CHECK_LAUNCH();
}

template <class T>
void broadcast_rows(const T* bias, T* y, int rows, int cols, cudaStream_t s) {
  const std::size_t total = static_cast<std::size_t>(rows) * cols;
  if (total == 0) return;
  broadcast_rows_kernel<T><<<grid_for(total, kElemThreads), kElemThreads, 0, s>>>(bias, y, rows, cols);
  CUDA_CHECK_LAUNCH();
}

#define FUSECHECK_INSTANTIATE_OPS(T)                                                          \
  template void rms_norm<T>(const T*, const T*, T*, int, int, float, cudaStream_t);            \
  template void rope<T>(const T*, T*, int, int, int, int, bool, const T*, const T*, int,       \
                        cudaStream_t);                                                         \
  template void attention<T>(cublasHandle_t, const T*, const T*, const T*, T*, T*, std::size_t, \
                             const AttentionShape&, cudaStream_t);                             \
  template void silu_mul<T>(const T*, const T*, T*, std::size_t, cudaStream_t);                \
  template void add<T>(const T*, const T*, T*, std::size_t, cudaStream_t);                     \
  template void broadcast_rows<T>(const T*, T*, int, int, cudaStream_t);

FUSECHECK_INSTANTIATE_OPS(float)
FUSECHECK_INSTANTIATE_OPS(__nv_bfloat16)

}  // namespace fusecheck::cuda::ops
