// The FP8 KV cache kernels (see kv_fp8.h): calibration, quantize-on-append, and decode
// attention with the dequantization in its K/V loads.
#include "kernels/fused/kv_fp8.h"

#include <algorithm>
#include <cstdlib>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/common/cuda_check.h"
#include "kernels/common/device_buffer.h"
#include "kernels/fused/fused_common.cuh"

namespace fusecheck::fused {

namespace {

constexpr int kThreads = 128;
// Attention: 16 warps per (query row, head) block, so that decode at batch 1 (32 blocks on
// the 8B models) still walks its positions with 512 threads (was 4 warps: 164.7 us at
// llama-3-8b b1 over KV 1024 on an H200; the 16-warp figure is not measured yet).
constexpr int kAttnThreads = 256;
constexpr int kWarps = kAttnThreads / 32;
constexpr int kMaxHeadDim = 256;

// |x| as ordered bits: non-negative floats order as unsigned integers, NaN above Inf.
// Blocks (x) over the values of group blockIdx.y: value j of the group is token j / gw
// (b * n + t) at column g * gw + j % gw. One atomic per warp: a dynamic scale is found at
// every decode step, and same-address atomics per value would serialize.
__global__ void amax_kernel(KvRows rows, int n, long per_group, int head_dim, int group_width,
                            unsigned int* amax_bits) {
  const int g = blockIdx.y;
  unsigned int best = 0;
  for (long j = blockIdx.x * static_cast<long>(blockDim.x) + threadIdx.x; j < per_group;
       j += static_cast<long>(gridDim.x) * blockDim.x) {
    const long token = j / group_width;
    const int c = g * group_width + static_cast<int>(j % group_width);
    const long at = token / n * rows.batch_stride + token % n * rows.token_stride +
                    static_cast<long>(c / head_dim) * rows.head_stride + c % head_dim;
    best = max(best, __float_as_uint(fabsf(__bfloat162float(rows.ptr[at]))));
  }
  for (int o = 16; o > 0; o >>= 1) best = max(best, __shfl_xor_sync(0xffffffffu, best, o));
  if ((threadIdx.x & 31) == 0) atomicMax(&amax_bits[g], best);
}

__global__ void scales_kernel(const unsigned int* amax_bits, int groups, float multiplier,
                              float* scales) {
  const int g = threadIdx.x;
  if (g < groups) scales[g] = __uint_as_float(amax_bits[g]) / 448.0f * multiplier;
}

// Adds one thread's counts to `c`: a warp sum first, one atomic per warp and counter.
__device__ void add_counts(KvFp8Counters* c, unsigned int values, unsigned int clipped, unsigned int flushed,
                           unsigned int nonfinite, float max_abs) {
  for (int o = 16; o > 0; o >>= 1) {
    values += __shfl_xor_sync(0xffffffffu, values, o);
    clipped += __shfl_xor_sync(0xffffffffu, clipped, o);
    flushed += __shfl_xor_sync(0xffffffffu, flushed, o);
    nonfinite += __shfl_xor_sync(0xffffffffu, nonfinite, o);
    max_abs = fmaxf(max_abs, __shfl_xor_sync(0xffffffffu, max_abs, o));
  }
  if ((threadIdx.x & 31) == 0) {
    if (values) atomicAdd(&c->n_values, values);
    if (clipped) atomicAdd(&c->n_clipped, clipped);
    if (flushed) atomicAdd(&c->n_flushed, flushed);
    if (nonfinite) atomicAdd(&c->n_nonfinite, nonfinite);
    atomicMax(&c->max_abs_scaled_bits, __float_as_uint(max_abs));
  }
}

// One block per appended token; blockDim a multiple of 32 (the counters' warp sums).
__global__ void append_kernel(KvRows rows, int n, int past, KvFp8Layout l, const float* scales,
                              __nv_fp8_e4m3* cache, KvFp8Counters* counters) {
  const int token = blockIdx.x;  // b * n + t
  const int b = token / n, t = token % n;
  const int width = l.n_kv_heads * l.head_dim;
  const bf16* src = rows.ptr + b * rows.batch_stride + t * rows.token_stride;
  unsigned int values = 0, clipped = 0, flushed = 0, nonfinite = 0;
  float max_abs = 0;
  for (int c0 = 0; c0 < width; c0 += blockDim.x) {
    const int c = c0 + threadIdx.x;
    if (c >= width) break;
    const int h = c / l.head_dim, d = c % l.head_dim;
    const float s = scales[l.per_head ? h : 0];
    const float x = __bfloat162float(src[h * rows.head_stride + d]);
    const float scaled = x / s;  // IEEE division
    const __nv_fp8_e4m3 code(scaled);  // RNE, saturating (__NV_SATFINITE)
    const long at = ((static_cast<long>(b) * l.n_kv_heads + h) * l.capacity + past + t) * l.head_dim + d;
    cache[at] = code;
    // reference/kv_fp8.h's KvFp8Quantizer::store, count for count.
    ++values;
    if (!isfinite(x)) ++nonfinite;
    if (isfinite(scaled)) {
      const float a = fabsf(scaled);
      max_abs = fmaxf(max_abs, a);
      if (a > 464.0f) ++clipped;  // ref::kE4m3ClipAbove
      if (x != 0.0f && (code.__x & 0x7f) == 0) ++flushed;
    }
  }
  if (counters) add_counts(counters, values, clipped, flushed, nonfinite, max_abs);
}

// Four E4M3 codes (one 32-bit load) dequantized with scale s, in FP32.
__device__ __forceinline__ void dequant4(unsigned int bits, float s, float (&out)[4]) {
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    __nv_fp8_e4m3 c;
    c.__x = static_cast<__nv_fp8_storage_t>((bits >> (8 * i)) & 0xffu);
    out[i] = static_cast<float>(c) * s;
  }
}

// Positions a warp loads at once (K and V rows, and their scales when dynamic).
constexpr int kAttnUnroll = 4;

// The rows of kAttnUnroll positions of one warp: 4 codes per lane and 128 dims.
template <int kPer>
struct KvGroup {
  unsigned int kb[kAttnUnroll][kPer], vb[kAttnUnroll][kPer];
  float ks[kAttnUnroll], vs[kAttnUnroll];
};

// One block per (query token, query head, chunk); warp w takes positions lo + w,
// lo + w + 8, ... of the block's chunk (all positions when a.chunk is 0), kAttnUnroll at a
// time, with the next kAttnUnroll positions' K and V rows loading while it computes these
// (the rows' DRAM latencies overlap the softmax); lane holds output dims 4 lane .. 4 lane +
// 3, + 128 (kPer = 2, head_dim above 128) below head_dim (one 32-bit load of 4 codes per 128
// dims) and adds its products in dim order before the warp sum. Warps merge in index order
// (deterministic); a split decode writes the chunk's FP32 partial for merge_kernel.
template <int kPer>
__global__ void __launch_bounds__(kAttnThreads) decode_kernel(KvFp8DecodeArgs a) {
  const int h = blockIdx.y, row = blockIdx.x;  // row = b * n + t (x: a prefill's rows exceed 65535)
  const int b = row / a.n, kv_len = a.kv_len - a.n + row % a.n + 1;
  const int lo = a.chunk > 0 ? static_cast<int>(blockIdx.z) * a.chunk : 0;
  const int hi = a.chunk > 0 ? min(lo + a.chunk, kv_len) : kv_len;
  const int D = a.layout.head_dim;
  const int kv = h / (a.n_heads / a.layout.n_kv_heads);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const float ks_all = a.k_scales[a.layout.per_head ? kv : 0];
  const float vs_all = a.v_scales[a.layout.per_head ? kv : 0];
  const float attn_scale = 1.0f / sqrtf(static_cast<float>(D));
  const bf16* q = a.q + (static_cast<long>(row) * a.n_heads + h) * D;
  const long head_base = (static_cast<long>(b) * a.layout.n_kv_heads + kv) * a.layout.capacity * D;

  float qv[kPer][4], acc[kPer][4];
  bool has[kPer];
#pragma unroll
  for (int i = 0; i < kPer; ++i) {
    const int d0 = 4 * (lane + 32 * i);
    has[i] = d0 < D;
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      qv[i][e] = has[i] ? __bfloat162float(q[d0 + e]) : 0.0f;
      acc[i][e] = 0;
    }
  }
  float m = -INFINITY, l = 0;
  const int groups = a.layout.per_head ? a.layout.n_kv_heads : 1, group = a.layout.per_head ? kv : 0;
  auto load = [&](int p0, KvGroup<kPer>& gr) {
#pragma unroll
    for (int u = 0; u < kAttnUnroll; ++u) {
      const int p = p0 + u * kWarps;
      const bool live = p < hi;
      gr.ks[u] = a.k_pos_scales && live ? a.k_pos_scales[static_cast<long>(p) * groups + group] : ks_all;
      gr.vs[u] = a.v_pos_scales && live ? a.v_pos_scales[static_cast<long>(p) * groups + group] : vs_all;
      const unsigned int* krow = reinterpret_cast<const unsigned int*>(a.k_cache + head_base + static_cast<long>(p) * D);
      const unsigned int* vrow = reinterpret_cast<const unsigned int*>(a.v_cache + head_base + static_cast<long>(p) * D);
#pragma unroll
      for (int i = 0; i < kPer; ++i) {
        gr.kb[u][i] = live && has[i] ? krow[lane + 32 * i] : 0u;
        gr.vb[u][i] = live && has[i] ? vrow[lane + 32 * i] : 0u;
      }
    }
  };
  constexpr int kStride = kWarps * kAttnUnroll;
  KvGroup<kPer> cur, nxt;
  load(lo + warp, cur);
  for (int p0 = lo + warp; p0 < hi; p0 += kStride) {
    load(p0 + kStride, nxt);
#pragma unroll
    for (int u = 0; u < kAttnUnroll; ++u) {
      if (p0 + u * kWarps >= hi) break;
      float dot = 0;
#pragma unroll
      for (int i = 0; i < kPer; ++i) {
        if (!has[i]) continue;
        float kf[4];
        dequant4(cur.kb[u][i], cur.ks[u], kf);
#pragma unroll
        for (int e = 0; e < 4; ++e) dot += qv[i][e] * kf[e];
      }
      const float s = warp_sum(dot) * attn_scale;
      const float m_new = fmaxf(m, s);
      const float correction = expf(m - m_new), w = expf(s - m_new);
      l = l * correction + w;
#pragma unroll
      for (int i = 0; i < kPer; ++i) {
        if (!has[i]) continue;
        float vf[4];
        dequant4(cur.vb[u][i], cur.vs[u], vf);
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[i][e] = acc[i][e] * correction + w * vf[e];
      }
      m = m_new;
    }
    cur = nxt;
  }

  __shared__ float s_m[kWarps], s_l[kWarps], s_acc[kWarps][kMaxHeadDim];
  if (lane == 0) {
    s_m[warp] = m;
    s_l[warp] = l;
  }
#pragma unroll
  for (int i = 0; i < kPer; ++i)
    if (has[i])
#pragma unroll
      for (int e = 0; e < 4; ++e) s_acc[warp][4 * (lane + 32 * i) + e] = acc[i][e];
  __syncthreads();
  float M = -INFINITY;
  for (int w = 0; w < kWarps; ++w) M = fmaxf(M, s_m[w]);
  float L = 0;
  for (int w = 0; w < kWarps; ++w) L += s_m[w] == -INFINITY ? 0.0f : expf(s_m[w] - M) * s_l[w];
  bf16* out = a.out + (static_cast<long>(row) * a.n_heads + h) * D;
  float* part = a.chunk > 0
                    ? a.partial + ((static_cast<long>(row) * a.n_heads + h) * gridDim.z + blockIdx.z) * (D + 2)
                    : nullptr;
  if (part && threadIdx.x == 0) {
    part[0] = M;
    part[1] = L;
  }
  for (int d = threadIdx.x; d < D; d += kAttnThreads) {
    float sum = 0;
    for (int w = 0; w < kWarps; ++w) sum += s_m[w] == -INFINITY ? 0.0f : expf(s_m[w] - M) * s_acc[w][d];
    if (part) {
      part[2 + d] = sum;
    } else {
      out[d] = __float2bfloat16_rn(sum / L);
    }
  }
}

// decode_kernel for the G query heads of one kv head at once (KvFp8DecodeArgs::gqa_shared):
// one block per (query token, kv head, chunk); each warp takes the positions decode_kernel's
// warp of the same index takes, loads each K / V row and its scale once and dequantizes it
// once, and runs decode_kernel's per-head arithmetic for every head of the group in the same
// order (dim-order products, warp sum, online softmax, warps merged in index order), so each
// head's output and partials are decode_kernel's bit for bit; the cache is read once per kv
// head instead of once per query head.
template <int kPer, int G>
__global__ void __launch_bounds__(kAttnThreads) decode_gqa_kernel(KvFp8DecodeArgs a) {
  const int kv = blockIdx.y, row = blockIdx.x;
  const int b = row / a.n, kv_len = a.kv_len - a.n + row % a.n + 1;
  const int lo = a.chunk > 0 ? static_cast<int>(blockIdx.z) * a.chunk : 0;
  const int hi = a.chunk > 0 ? min(lo + a.chunk, kv_len) : kv_len;
  const int D = a.layout.head_dim;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const float ks_all = a.k_scales[a.layout.per_head ? kv : 0];
  const float vs_all = a.v_scales[a.layout.per_head ? kv : 0];
  const float attn_scale = 1.0f / sqrtf(static_cast<float>(D));
  const long head_base = (static_cast<long>(b) * a.layout.n_kv_heads + kv) * a.layout.capacity * D;

  float qv[G][kPer][4], acc[G][kPer][4];
  bool has[kPer];
#pragma unroll
  for (int i = 0; i < kPer; ++i) has[i] = 4 * (lane + 32 * i) < D;
#pragma unroll
  for (int g = 0; g < G; ++g) {
    const bf16* q = a.q + (static_cast<long>(row) * a.n_heads + kv * G + g) * D;
#pragma unroll
    for (int i = 0; i < kPer; ++i) {
      const int d0 = 4 * (lane + 32 * i);
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        qv[g][i][e] = has[i] ? __bfloat162float(q[d0 + e]) : 0.0f;
        acc[g][i][e] = 0;
      }
    }
  }
  float m[G], l[G];
#pragma unroll
  for (int g = 0; g < G; ++g) {
    m[g] = -INFINITY;
    l[g] = 0;
  }
  const int groups = a.layout.per_head ? a.layout.n_kv_heads : 1, group = a.layout.per_head ? kv : 0;
  auto load = [&](int p0, KvGroup<kPer>& gr) {
#pragma unroll
    for (int u = 0; u < kAttnUnroll; ++u) {
      const int p = p0 + u * kWarps;
      const bool live = p < hi;
      gr.ks[u] = a.k_pos_scales && live ? a.k_pos_scales[static_cast<long>(p) * groups + group] : ks_all;
      gr.vs[u] = a.v_pos_scales && live ? a.v_pos_scales[static_cast<long>(p) * groups + group] : vs_all;
      const unsigned int* krow = reinterpret_cast<const unsigned int*>(a.k_cache + head_base + static_cast<long>(p) * D);
      const unsigned int* vrow = reinterpret_cast<const unsigned int*>(a.v_cache + head_base + static_cast<long>(p) * D);
#pragma unroll
      for (int i = 0; i < kPer; ++i) {
        gr.kb[u][i] = live && has[i] ? krow[lane + 32 * i] : 0u;
        gr.vb[u][i] = live && has[i] ? vrow[lane + 32 * i] : 0u;
      }
    }
  };
  constexpr int kStride = kWarps * kAttnUnroll;
  KvGroup<kPer> cur, nxt;
  load(lo + warp, cur);
  for (int p0 = lo + warp; p0 < hi; p0 += kStride) {
    load(p0 + kStride, nxt);
#pragma unroll
    for (int u = 0; u < kAttnUnroll; ++u) {
      if (p0 + u * kWarps >= hi) break;
      float kf[kPer][4], vf[kPer][4];
#pragma unroll
      for (int i = 0; i < kPer; ++i) {
        if (!has[i]) continue;
        dequant4(cur.kb[u][i], cur.ks[u], kf[i]);
        dequant4(cur.vb[u][i], cur.vs[u], vf[i]);
      }
#pragma unroll
      for (int g = 0; g < G; ++g) {
        float dot = 0;
#pragma unroll
        for (int i = 0; i < kPer; ++i) {
          if (!has[i]) continue;
#pragma unroll
          for (int e = 0; e < 4; ++e) dot += qv[g][i][e] * kf[i][e];
        }
        const float s = warp_sum(dot) * attn_scale;
        const float m_new = fmaxf(m[g], s);
        const float correction = expf(m[g] - m_new), w = expf(s - m_new);
        l[g] = l[g] * correction + w;
#pragma unroll
        for (int i = 0; i < kPer; ++i) {
          if (!has[i]) continue;
#pragma unroll
          for (int e = 0; e < 4; ++e) acc[g][i][e] = acc[g][i][e] * correction + w * vf[i][e];
        }
        m[g] = m_new;
      }
    }
    cur = nxt;
  }

  __shared__ float s_m[G][kWarps], s_l[G][kWarps];
  __shared__ float s_acc[G][kWarps][kPer * 128];
#pragma unroll
  for (int g = 0; g < G; ++g) {
    if (lane == 0) {
      s_m[g][warp] = m[g];
      s_l[g][warp] = l[g];
    }
#pragma unroll
    for (int i = 0; i < kPer; ++i)
      if (has[i])
#pragma unroll
        for (int e = 0; e < 4; ++e) s_acc[g][warp][4 * (lane + 32 * i) + e] = acc[g][i][e];
  }
  __syncthreads();
  for (int g = 0; g < G; ++g) {
    const int h = kv * G + g;
    float M = -INFINITY;
    for (int w = 0; w < kWarps; ++w) M = fmaxf(M, s_m[g][w]);
    float L = 0;
    for (int w = 0; w < kWarps; ++w) L += s_m[g][w] == -INFINITY ? 0.0f : expf(s_m[g][w] - M) * s_l[g][w];
    bf16* out = a.out + (static_cast<long>(row) * a.n_heads + h) * D;
    float* part = a.chunk > 0
                      ? a.partial + ((static_cast<long>(row) * a.n_heads + h) * gridDim.z + blockIdx.z) * (D + 2)
                      : nullptr;
    if (part && threadIdx.x == 0) {
      part[0] = M;
      part[1] = L;
    }
    for (int d = threadIdx.x; d < D; d += kAttnThreads) {
      float sum = 0;
      for (int w = 0; w < kWarps; ++w) sum += s_m[g][w] == -INFINITY ? 0.0f : expf(s_m[g][w] - M) * s_acc[g][w][d];
      if (part) {
        part[2 + d] = sum;
      } else {
        out[d] = __float2bfloat16_rn(sum / L);
      }
    }
  }
}

template <int kPer>
void launch_gqa(const KvFp8DecodeArgs& a, dim3 grid, int G, cudaStream_t stream) {
  if (G == 2) decode_gqa_kernel<kPer, 2><<<grid, kAttnThreads, 0, stream>>>(a);
  else if (G == 3) decode_gqa_kernel<kPer, 3><<<grid, kAttnThreads, 0, stream>>>(a);
  else decode_gqa_kernel<kPer, 4><<<grid, kAttnThreads, 0, stream>>>(a);
}

// FUSECHECK_FP8_KV_GQA=1: every launch takes the GQA-shared kernel where the group size
// allows (an A/B switch for the benchmarks, read once; outputs are the same bits).
bool gqa_from_env() {
  static const bool on = [] {
    const char* env = std::getenv("FUSECHECK_FP8_KV_GQA");
    return env && std::string(env) == "1";
  }();
  return on;
}

// A split decode's chunks of one (query, head) merged in chunk order (every chunk holds
// at least one position, so each max is finite): out = bf16(sum_c e^(m_c - M) acc_c /
// sum_c e^(m_c - M) l_c).
__global__ void merge_kernel(KvFp8DecodeArgs a, int splits) {
  const int row = blockIdx.x, h = blockIdx.y, D = a.layout.head_dim, stride = D + 2;
  const float* part = a.partial + (static_cast<long>(row) * a.n_heads + h) * splits * stride;
  float M = -INFINITY;
  for (int c = 0; c < splits; ++c) M = fmaxf(M, part[c * stride]);
  float L = 0;
  for (int c = 0; c < splits; ++c) L += expf(part[c * stride] - M) * part[c * stride + 1];
  bf16* out = a.out + (static_cast<long>(row) * a.n_heads + h) * D;
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    float sum = 0;
    for (int c = 0; c < splits; ++c) sum += expf(part[c * stride] - M) * part[c * stride + 2 + d];
    out[d] = __float2bfloat16_rn(sum / L);
  }
}

__global__ void keep_scales_kernel(const float* scales, int groups, int past, int n, float* pos_scales) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n * groups) pos_scales[static_cast<long>(past) * groups + i] = scales[i % groups];
}

void check_layout(const KvFp8Layout& l) {
  if (l.batch <= 0 || l.n_kv_heads <= 0 || l.head_dim <= 0 || l.capacity <= 0) {
    throw std::invalid_argument("kv_fp8: layout needs batch, n_kv_heads, head_dim, capacity > 0");
  }
}

}  // namespace

void launch_kv_fp8_calibrate(const KvRows& rows, int n, const KvFp8Layout& layout, float multiplier,
                             float* scales, unsigned int* amax_scratch, cudaStream_t stream) {
  check_layout(layout);
  if (n <= 0) throw std::invalid_argument("kv_fp8_calibrate: no rows");
  const int groups = layout.scale_count();
  const int width = layout.n_kv_heads * layout.head_dim;
  CUDA_CHECK(cudaMemsetAsync(amax_scratch, 0, groups * sizeof(unsigned int), stream));
  const long per_group = static_cast<long>(layout.batch) * n * (width / groups);
  const int blocks = static_cast<int>(std::min<long>((per_group + 255) / 256, std::max(1, 1024 / groups)));
  amax_kernel<<<dim3(blocks, groups), 256, 0, stream>>>(rows, n, per_group, layout.head_dim, width / groups,
                                                         amax_scratch);
  CUDA_CHECK_LAUNCH();
  scales_kernel<<<1, 256, 0, stream>>>(amax_scratch, groups, multiplier, scales);
  CUDA_CHECK_LAUNCH();
}

void kv_fp8_calibrate(const bf16* rows, int n, const KvFp8Layout& layout, float multiplier, float* scales,
                      const std::string& what, cudaStream_t stream) {
  cuda::DeviceBuffer<unsigned int> amax(static_cast<std::size_t>(layout.scale_count()));
  launch_kv_fp8_calibrate(KvRows::sequence_major(rows, n, layout), n, layout, multiplier, scales, amax.data(),
                          stream);
  std::vector<float> host(static_cast<std::size_t>(layout.scale_count()));
  CUDA_CHECK(cudaMemcpyAsync(host.data(), scales, host.size() * sizeof(float), cudaMemcpyDeviceToHost, stream));
  CUDA_CHECK(cudaStreamSynchronize(stream));
  check_kv_fp8_scales(host, what);
}

void launch_kv_fp8_append(const KvRows& rows, int n, int past, const KvFp8Layout& layout, const float* scales,
                          __nv_fp8_e4m3* cache, KvFp8Counters* counters, cudaStream_t stream) {
  check_layout(layout);
  if (n <= 0 || past < 0 || past + n > layout.capacity) {
    throw std::invalid_argument("kv_fp8_append: positions " + std::to_string(past) + ".." +
                                std::to_string(past + n - 1) + " outside capacity " +
                                std::to_string(layout.capacity));
  }
  append_kernel<<<layout.batch * n, kThreads, 0, stream>>>(rows, n, past, layout, scales, cache, counters);
  CUDA_CHECK_LAUNCH();
}

void launch_kv_fp8_append(const bf16* rows, int n, int past, const KvFp8Layout& layout, const float* scales,
                          __nv_fp8_e4m3* cache, cudaStream_t stream) {
  launch_kv_fp8_append(KvRows::sequence_major(rows, n, layout), n, past, layout, scales, cache, nullptr, stream);
}

void launch_kv_fp8_keep_scales(const float* scales, int groups, int past, int n, float* pos_scales,
                               cudaStream_t stream) {
  if (groups <= 0 || n <= 0 || past < 0) throw std::invalid_argument("kv_fp8: keep_scales needs groups, n > 0");
  const int total = n * groups, threads = 128;
  keep_scales_kernel<<<(total + threads - 1) / threads, threads, 0, stream>>>(scales, groups, past, n, pos_scales);
  CUDA_CHECK(cudaGetLastError());
}

void launch_kv_fp8_decode_attention(const KvFp8DecodeArgs& a, cudaStream_t stream) {
  check_layout(a.layout);
  if (a.layout.head_dim > kMaxHeadDim || a.layout.head_dim % 4 != 0 || a.n_heads <= 0 || a.n_heads % a.layout.n_kv_heads != 0 || a.n <= 0 ||
      a.kv_len < a.n || a.kv_len > a.layout.capacity) {
    throw std::invalid_argument("kv_fp8 decode attention: unsupported shape (head_dim, a multiple of 4 up to 256: " +
                                std::to_string(a.layout.head_dim) + ", " + std::to_string(a.n_heads) +
                                " heads over " + std::to_string(a.layout.n_kv_heads) + " kv heads, kv_len " +
                                std::to_string(a.kv_len) + " of " + std::to_string(a.layout.capacity) + ", " +
                                std::to_string(a.n) + " queries)");
  }
  const int G = a.n_heads / a.layout.n_kv_heads;
  const bool gqa = (a.gqa_shared || gqa_from_env()) && G >= 2 && G <= 4;
  if (a.chunk > 0) {
    if (a.n != 1 || !a.partial) {
      throw std::invalid_argument("kv_fp8 decode attention: a split (chunk > 0) needs n == 1 and a partial buffer");
    }
    const int splits = (a.kv_len + a.chunk - 1) / a.chunk;
    if (gqa) {
      const dim3 grid(a.layout.batch, a.layout.n_kv_heads, splits);
      if (a.layout.head_dim <= 128) launch_gqa<1>(a, grid, G, stream);
      else launch_gqa<2>(a, grid, G, stream);
    } else if (a.layout.head_dim <= 128) {
      decode_kernel<1><<<dim3(a.layout.batch, a.n_heads, splits), kAttnThreads, 0, stream>>>(a);
    } else {
      decode_kernel<2><<<dim3(a.layout.batch, a.n_heads, splits), kAttnThreads, 0, stream>>>(a);
    }
    CUDA_CHECK_LAUNCH();
    merge_kernel<<<dim3(a.layout.batch, a.n_heads), 128, 0, stream>>>(a, splits);
    CUDA_CHECK_LAUNCH();
    return;
  }
  if (gqa) {
    const dim3 grid(a.layout.batch * a.n, a.layout.n_kv_heads);
    if (a.layout.head_dim <= 128) launch_gqa<1>(a, grid, G, stream);
    else launch_gqa<2>(a, grid, G, stream);
  } else if (a.layout.head_dim <= 128) {
    decode_kernel<1><<<dim3(a.layout.batch * a.n, a.n_heads), kAttnThreads, 0, stream>>>(a);
  } else {
    decode_kernel<2><<<dim3(a.layout.batch * a.n, a.n_heads), kAttnThreads, 0, stream>>>(a);
  }
  CUDA_CHECK_LAUNCH();
}

}  // namespace fusecheck::fused
