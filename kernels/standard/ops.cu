// Kernels of the one-kernel-per-op decoder (see ops.h). Elementwise kernels and the norms
// move 16 bytes per access when sizes and alignment allow, with a scalar path otherwise.
#include "kernels/standard/ops.h"

#include <algorithm>
#include <string>

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

// ---------------------------------------------------------------- attention.
// A block per (query token, kv head, head chunk, sequence) handles up to kMaxGroup query
// heads that share the kv head, so K and V are read once per group. Scores for all
// visible keys live in shared memory ([group][kv]) next to the queries ([group][head_dim]).
// Scores: a thread per key, reading its K row in 16-byte vectors (many independent loads
// in flight). P @ V: a warp per key subset, lanes across head_dim (coalesced V rows), then
// a fixed-order sum of the warps' partials in shared memory (deterministic).
constexpr int kMaxGroup = 8;
constexpr int kMaxDimSlots = 8;  // head_dim <= 32 * 8; kSlots = head_dim / 32 rounded up to 1, 2, 4, 8
                                 // (a compile-time bound keeps the accumulators in registers)
constexpr int kAttnThreads = 256;
constexpr int kAttnWarps = kAttnThreads / kWarp;

template <class T, bool kVector, int kSlots>
__global__ void __launch_bounds__(kAttnThreads)
attention_kernel(const T* __restrict__ q, const T* __restrict__ k_cache,
                 const T* __restrict__ v_cache, T* __restrict__ out, AttentionShape a,
                 int group_chunk, int chunks_per_kv) {
  extern __shared__ float smem[];
  const int t = blockIdx.x;
  const int kvh = blockIdx.y / chunks_per_kv;
  const int chunk = blockIdx.y % chunks_per_kv;
  const int b = blockIdx.z;
  const int group = a.n_heads / a.n_kv_heads;
  const int h0 = kvh * group + chunk * group_chunk;
  const int gc = min(group_chunk, group - chunk * group_chunk);
  const int D = a.head_dim;
  const int visible = a.start + t + 1;
  const int kv_total = a.start + a.n_new;
  float* q_s = smem;                                // [group_chunk][D]
  float* p_s = q_s + group_chunk * D;               // [group_chunk][kv_total]
  float* red_s = p_s + group_chunk * kv_total;      // [kAttnWarps][group_chunk][D]
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;

  const std::size_t q_row = static_cast<std::size_t>(b) * a.n_new + t;
  const std::size_t q_width = static_cast<std::size_t>(a.n_heads) * D;
  for (int i = threadIdx.x; i < gc * D; i += blockDim.x) {
    q_s[i] = to_f32(q[q_row * q_width + static_cast<std::size_t>(h0) * D + i]);
  }
  __syncthreads();

  const std::size_t kv_width = static_cast<std::size_t>(a.n_kv_heads) * D;
  const T* k_base = k_cache + static_cast<std::size_t>(b) * a.capacity * kv_width + kvh * D;
  const T* v_base = v_cache + static_cast<std::size_t>(b) * a.capacity * kv_width + kvh * D;

  for (int j = threadIdx.x; j < visible; j += kAttnThreads) {
    const T* kr = k_base + static_cast<std::size_t>(j) * kv_width;
    float acc[kMaxGroup];
#pragma unroll
    for (int g = 0; g < kMaxGroup; ++g) acc[g] = 0.0f;
    if constexpr (kVector) {
      constexpr int V = kVec16<T>;
      for (int d0 = 0; d0 < D; d0 += V) {
        const Vec16<T> kv = load16(kr + d0);
#pragma unroll
        for (int e = 0; e < V; ++e) {
          const float kf = to_f32(kv.v[e]);
#pragma unroll
          for (int g = 0; g < kMaxGroup; ++g) {
            if (g < gc) acc[g] = fmaf(q_s[g * D + d0 + e], kf, acc[g]);
          }
        }
      }
    } else {
      for (int d = 0; d < D; ++d) {
        const float kf = to_f32(kr[d]);
#pragma unroll
        for (int g = 0; g < kMaxGroup; ++g) {
          if (g < gc) acc[g] = fmaf(q_s[g * D + d], kf, acc[g]);
        }
      }
    }
#pragma unroll
    for (int g = 0; g < kMaxGroup; ++g) {
      if (g < gc) p_s[g * kv_total + j] = round_to<T>(__fmul_rn(round_to<T>(acc[g]), a.scale));
    }
  }
  __syncthreads();

  for (int g = warp; g < gc; g += kAttnWarps) {
    float* p = p_s + g * kv_total;
    float m = -INFINITY;
    for (int j = lane; j < visible; j += kWarp) m = fmaxf(m, p[j]);
    m = warp_max(m);
    float sum = 0.0f;
    for (int j = lane; j < visible; j += kWarp) {
      const float e = expf(p[j] - m);
      p[j] = e;
      sum += e;
    }
    sum = warp_sum(sum);
    for (int j = lane; j < visible; j += kWarp) p[j] = round_to<T>(p[j] / sum);
  }
  __syncthreads();

  float acc[kMaxGroup][kSlots];
#pragma unroll
  for (int g = 0; g < kMaxGroup; ++g) {
#pragma unroll
    for (int s = 0; s < kSlots; ++s) acc[g][s] = 0.0f;
  }
#pragma unroll 2
  for (int j = warp; j < visible; j += kAttnWarps) {
    const T* vr = v_base + static_cast<std::size_t>(j) * kv_width;
    float v[kSlots];
#pragma unroll
    for (int s = 0; s < kSlots; ++s) {
      const int d = lane + s * kWarp;
      v[s] = d < D ? to_f32(vr[d]) : 0.0f;
    }
#pragma unroll
    for (int g = 0; g < kMaxGroup; ++g) {
      if (g < gc) {
        const float p = p_s[g * kv_total + j];
#pragma unroll
        for (int s = 0; s < kSlots; ++s) acc[g][s] = fmaf(p, v[s], acc[g][s]);
      }
    }
  }
#pragma unroll
  for (int g = 0; g < kMaxGroup; ++g) {
#pragma unroll
    for (int s = 0; s < kSlots; ++s) {
      const int d = lane + s * kWarp;
      if (g < gc && d < D) red_s[(warp * group_chunk + g) * D + d] = acc[g][s];
    }
  }
  __syncthreads();
  for (int i = threadIdx.x; i < gc * D; i += blockDim.x) {
    float sum = 0.0f;
    for (int w = 0; w < kAttnWarps; ++w) sum += red_s[w * group_chunk * D + i];
    out[q_row * q_width + static_cast<std::size_t>(h0) * D + i] = from_f32<T>(sum);
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

// Picks the kernel instance; raises its shared-memory limit once per device (not per
// launch, so a graph capture sees no call).
template <class T, bool kVector, int kSlots>
void launch_attention_instance(std::size_t smem, int optin, int dev, const T* q, const T* k,
                               const T* v, T* out, const AttentionShape& a, int group_chunk,
                               int chunks, cudaStream_t s) {
  static int raised_for_device = -1;
  if (smem > 48 * 1024 && raised_for_device != dev) {
    CUDA_CHECK(cudaFuncSetAttribute(attention_kernel<T, kVector, kSlots>,
                                    cudaFuncAttributeMaxDynamicSharedMemorySize, optin));
    raised_for_device = dev;
  }
  const dim3 grid(static_cast<unsigned>(a.n_new), static_cast<unsigned>(a.n_kv_heads * chunks),
                  static_cast<unsigned>(a.batch));
  attention_kernel<T, kVector, kSlots><<<grid, kAttnThreads, smem, s>>>(q, k, v, out, a, group_chunk, chunks);
}

template <class T, bool kVector>
void launch_attention_slots(int slots, std::size_t smem, int optin, int dev, const T* q, const T* k,
                            const T* v, T* out, const AttentionShape& a, int gcn, int chunks, cudaStream_t s) {
  switch (slots) {
    case 1: launch_attention_instance<T, kVector, 1>(smem, optin, dev, q, k, v, out, a, gcn, chunks, s); break;
    case 2: launch_attention_instance<T, kVector, 2>(smem, optin, dev, q, k, v, out, a, gcn, chunks, s); break;
    case 4: launch_attention_instance<T, kVector, 4>(smem, optin, dev, q, k, v, out, a, gcn, chunks, s); break;
    default: launch_attention_instance<T, kVector, 8>(smem, optin, dev, q, k, v, out, a, gcn, chunks, s); break;
  }
}

// 16-byte K loads need head_dim a multiple of the vector (rows then stay aligned).
template <class T>
void launch_attention(bool vec, int slots, std::size_t smem, int optin, int dev, const T* q, const T* k,
                      const T* v, T* out, const AttentionShape& a, int gcn, int chunks, cudaStream_t s) {
  if (vec) {
    launch_attention_slots<T, true>(slots, smem, optin, dev, q, k, v, out, a, gcn, chunks, s);
  } else {
    launch_attention_slots<T, false>(slots, smem, optin, dev, q, k, v, out, a, gcn, chunks, s);
  }
}

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

template <class T>
void attention(const T* q, const T* k_cache, const T* v_cache, T* out, const AttentionShape& a,
               cudaStream_t s) {
  if (a.head_dim > kWarp * kMaxDimSlots) {
    throw CudaError("attention: head_dim " + std::to_string(a.head_dim) + " exceeds " +
                    std::to_string(kWarp * kMaxDimSlots));
  }
  const int group = a.n_heads / a.n_kv_heads;
  const int group_chunk = std::min(group, kMaxGroup);
  const int chunks = (group + group_chunk - 1) / group_chunk;
  const int kv_total = a.start + a.n_new;
  const std::size_t smem =
      sizeof(float) * static_cast<std::size_t>(group_chunk) * (a.head_dim * (1 + kAttnWarps) + kv_total);
  int dev = 0, optin = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  if (smem > static_cast<std::size_t>(optin)) {
    throw CudaError("attention: " + std::to_string(kv_total) + " keys x " +
                    std::to_string(group_chunk) + " heads need " + std::to_string(smem) +
                    " bytes of shared memory, the device allows " + std::to_string(optin));
  }
  const int slots = a.head_dim <= 32 ? 1 : a.head_dim <= 64 ? 2 : a.head_dim <= 128 ? 4 : 8;
  const bool vec = a.head_dim % kVec16<T> == 0 && aligned16(k_cache);
  launch_attention<T>(vec, slots, smem, optin, dev, q, k_cache, v_cache, out, a, group_chunk, chunks, s);
  CUDA_CHECK_LAUNCH();
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
  template void attention<T>(const T*, const T*, const T*, T*, const AttentionShape&,          \
                             cudaStream_t);                                                    \
  template void silu_mul<T>(const T*, const T*, T*, std::size_t, cudaStream_t);                \
  template void add<T>(const T*, const T*, T*, std::size_t, cudaStream_t);                     \
  template void broadcast_rows<T>(const T*, T*, int, int, cudaStream_t);

FUSECHECK_INSTANTIATE_OPS(float)
FUSECHECK_INSTANTIATE_OPS(__nv_bfloat16)

}  // namespace fusecheck::cuda::ops
