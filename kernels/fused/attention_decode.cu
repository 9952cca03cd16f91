// Kernel 4a: split-KV decode attention and its combine kernel (see attention_decode.h).
#include "kernels/fused/attention_decode.h"

#include <cmath>
#include <stdexcept>

#include "kernels/common/cuda_check.h"
#include "kernels/fused/fused_common.cuh"

namespace fusecheck::fused {
namespace {

constexpr int kThreads = 256;
constexpr int L = kDecodeChunk;

// Shared memory: q [G x D] f32 | scores [G x L] f32 | K [L x (D+2)] bf16 | V [L x D] bf16.
// K rows are padded by one 4-byte word so that threads reading consecutive positions hit
// different banks.
std::size_t split_smem_bytes(int G, int D) {
  return (static_cast<std::size_t>(G) * D + static_cast<std::size_t>(G) * L) * sizeof(float) +
         static_cast<std::size_t>(L) * (D + 2) * sizeof(bf16) +
         static_cast<std::size_t>(L) * D * sizeof(bf16);
}

__global__ void __launch_bounds__(kThreads) split_kernel(DecodeAttentionArgs a, float scale) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const int split = blockIdx.x, kvh = blockIdx.y, b = blockIdx.z;
  const int D = a.head_dim, G = a.n_heads / a.n_kv_heads, splits = gridDim.x;
  const int p0 = split * L, len = min(L, a.kv_len - p0);
  float* q_sm = reinterpret_cast<float*>(smem_raw);
  float* s_sm = q_sm + G * D;
  bf16* k_sm = reinterpret_cast<bf16*>(s_sm + G * L);
  bf16* v_sm = k_sm + L * (D + 2);
  const int ks = D + 2;  // K row stride in elements

  for (int i = threadIdx.x; i < G * D; i += kThreads)
    q_sm[i] = __bfloat162float(a.q[static_cast<long>(b) * a.n_heads * D + kvh * G * D + i]);
  const long cache0 = (static_cast<long>(b) * a.n_kv_heads + kvh) * a.capacity * D + static_cast<long>(p0) * D;
  // K and V chunks: 16-byte global loads, kLoads of each in flight per thread before the
  // first shared-memory store; K stored as 4-byte words into its padded rows.
  const int chunk8 = D / 8;
  constexpr int kLoads = 4;
  for (int i0 = threadIdx.x; i0 < len * chunk8; i0 += kLoads * kThreads) {
    uint4 kv[kLoads], vv[kLoads];
#pragma unroll
    for (int j = 0; j < kLoads; ++j) {
      const int i = i0 + j * kThreads;
      if (i < len * chunk8) {
        const long at = cache0 + static_cast<long>(i / chunk8) * D + (i % chunk8) * 8;
        kv[j] = *reinterpret_cast<const uint4*>(a.k_cache + at);
        vv[j] = *reinterpret_cast<const uint4*>(a.v_cache + at);
      }
    }
#pragma unroll
    for (int j = 0; j < kLoads; ++j) {
      const int i = i0 + j * kThreads;
      if (i < len * chunk8) {
        const int p = i / chunk8, c = i % chunk8;
        unsigned* kd = reinterpret_cast<unsigned*>(k_sm + p * ks + c * 8);
        kd[0] = kv[j].x; kd[1] = kv[j].y; kd[2] = kv[j].z; kd[3] = kv[j].w;
        *reinterpret_cast<uint4*>(v_sm + p * D + c * 8) = vv[j];
      }
    }
  }
  __syncthreads();

  // Scores s[g][p] = (q_g . k_p) * scale, FP32.
  for (int i = threadIdx.x; i < G * L; i += kThreads) {
    const int g = i / L, p = i % L;
    float s = -INFINITY;
    if (p < len) {
      const __nv_bfloat162* kr = reinterpret_cast<const __nv_bfloat162*>(k_sm + p * ks);
      const float* qg = q_sm + g * D;
      s = 0.f;
      for (int d = 0; d < D / 2; ++d) {
        const float2 kf = __bfloat1622float2(kr[d]);
        s = fmaf(qg[2 * d], kf.x, s);
        s = fmaf(qg[2 * d + 1], kf.y, s);
      }
      s *= scale;
    }
    s_sm[i] = s;
  }
  __syncthreads();

  // Per head of the group: chunk max and e^(s - m) (one warp per head, FP32).
  __shared__ float m_sm[32], l_sm[32];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  for (int g = warp; g < G; g += kThreads / 32) {
    float m = -INFINITY;
    for (int p = lane; p < len; p += 32) m = fmaxf(m, s_sm[g * L + p]);
    m = warp_max(m);
    float l = 0.f;
    for (int p = lane; p < L; p += 32) {
      const float e = p < len ? expf(s_sm[g * L + p] - m) : 0.f;
      s_sm[g * L + p] = e;
      l += e;
    }
    l = warp_sum(l);
    if (lane == 0) { m_sm[g] = m; l_sm[g] = l; }
  }
  __syncthreads();

  // Unnormalized output acc[g][d] = sum_p e_p v_p[d].
  const long part = ((static_cast<long>(b) * a.n_heads + kvh * G) * splits + split);
  for (int i = threadIdx.x; i < G * D; i += kThreads) {
    const int g = i / D, d = i % D;
    float acc = 0.f;
    for (int p = 0; p < len; ++p) acc = fmaf(s_sm[g * L + p], __bfloat162float(v_sm[p * D + d]), acc);
    a.partial_acc[(part + static_cast<long>(g) * splits) * D + d] = acc;
  }
  for (int g = threadIdx.x; g < G; g += kThreads) {
    a.partial_ml[(part + static_cast<long>(g) * splits) * 2] = m_sm[g];
    a.partial_ml[(part + static_cast<long>(g) * splits) * 2 + 1] = l_sm[g];
  }
}

__host__ __device__ constexpr int padded_splits(int splits) { return (splits + 7) / 8 * 8; }

// One block per (head, sequence): merge the splits, round once. The first warp turns the
// splits' (m, l) into weights e^(m_s - M) in shared memory (fixed-shape reductions), then
// every output element sums its splits with independent loads in flight.
__global__ void combine_kernel(DecodeAttentionArgs a, int splits) {
  // [splits rounded up to 8]: the unrolled loop below may read whole 16-byte vectors, so
  // the tail is allocated and zeroed (compute-sanitizer memcheck flagged the over-read).
  extern __shared__ float weight[];
  __shared__ float total_sm;
  const int h = blockIdx.x, b = blockIdx.y, D = a.head_dim, lane = threadIdx.x & 31;
  const long base = (static_cast<long>(b) * a.n_heads + h) * splits;
  const float* ml = a.partial_ml + base * 2;
  if (threadIdx.x < 32) {
    float M = -INFINITY;
    for (int s = lane; s < splits; s += 32) M = fmaxf(M, ml[2 * s]);
    M = warp_max(M);
    float total = 0.f;
    for (int s = lane; s < splits; s += 32) {
      const float e = expf(ml[2 * s] - M);
      weight[s] = e;
      total += e * ml[2 * s + 1];
    }
    for (int s = splits + lane; s < padded_splits(splits); s += 32) weight[s] = 0.f;
    total = warp_sum(total);
    if (lane == 0) total_sm = total;
  }
  __syncthreads();
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    float o = 0.f;
#pragma unroll 8
    for (int s = 0; s < splits; ++s) o = fmaf(weight[s], a.partial_acc[(base + s) * D + d], o);
    a.out[static_cast<long>(b) * a.n_heads * D + h * D + d] = round_bf16(o / total_sm);
  }
}

}  // namespace

std::size_t decode_attention_scratch_floats(int batch, int n_heads, int head_dim, int kv_len) {
  return static_cast<std::size_t>(batch) * n_heads * decode_attention_splits(kv_len) *
         (head_dim + 2);
}

void launch_decode_attention(const DecodeAttentionArgs& a, cudaStream_t stream) {
  if (a.n_kv_heads <= 0 || a.n_heads % a.n_kv_heads != 0)
    throw std::invalid_argument("fused decode attention: n_heads must be a multiple of n_kv_heads");
  if (a.head_dim % 8 != 0 || a.head_dim > 256)
    throw std::invalid_argument("fused decode attention: head_dim must be a multiple of 8, at most 256");
  if (a.kv_len <= 0 || a.kv_len > a.capacity)
    throw std::invalid_argument("fused decode attention: kv_len outside the cache");
  const int G = a.n_heads / a.n_kv_heads, splits = decode_attention_splits(a.kv_len);
  const std::size_t smem = split_smem_bytes(G, a.head_dim);
  if (G > 32 || smem > 200 * 1024)
    throw std::invalid_argument("fused decode attention: query group too large");
  static bool configured = false;
  if (!configured) {
    CUDA_CHECK(cudaFuncSetAttribute(split_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 200 * 1024));
    configured = true;
  }
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(a.head_dim)));
  split_kernel<<<dim3(splits, a.n_kv_heads, a.batch), kThreads, smem, stream>>>(a, scale);
  CUDA_CHECK_LAUNCH();
  combine_kernel<<<dim3(a.n_heads, a.batch), 128, padded_splits(splits) * sizeof(float), stream>>>(
      a, splits);
  CUDA_CHECK_LAUNCH();
}

}  // namespace fusecheck::fused
