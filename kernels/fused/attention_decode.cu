// Kernel 4a: split-KV decode attention, its in-kernel merge and its combine kernel (see attention_decode.h).
#include "kernels/fused/attention_decode.h"

#include <cmath>
#include <stdexcept>

#include "kernels/common/cuda_check.h"
#include "kernels/fused/fused_common.cuh"
#include "kernels/fused/qk_norm_rope.cuh"

namespace fusecheck::fused {
namespace {

constexpr int kWarps = 4;
constexpr int kThreads = 32 * kWarps;
constexpr int kMaxHeadDim = 256;
static_assert(kMaxHeadDim <= kRopeMaxHeadDim, "the folded RoPE covers every head_dim");
// Chunk choice: at most this many blocks (see header). H100, bench_fused decode b64
// KV 1024: 1024 blocks (llama-3-8b: 512-position chunks) 131 us; 2048 blocks 136 us;
// 128 blocks 147 us.
constexpr int kMaxBlocks = 1024;
// The merging block keeps one weight per (head, chunk) in sm_acc's space.
static_assert(kMaxBlocks <= kWarps * kMaxHeadDim, "chunk weights must fit in sm_acc");
// The chunks merge inside the split kernel (last block to arrive) when the grid has at most
// this many blocks per SM (about one wave: batch 1), else in a separate combine kernel.
// H100, bench_fused, same call: merging inside took qwen3-8b decode b1 from 150-151 to
// 148 us, but decode b64 (1024 blocks, 2.6 waves) from 309 to 318-321 us: there the
// merging blocks' extra tail (two dependent L2 round trips) lands on every wave.
constexpr int kFoldMaxBlocksPerSm = 2;

// Eight bf16 from shared memory as one 16-byte access.
__device__ __forceinline__ Bf16x8 load8_shared(const bf16* p) {
  Bf16x8 v;
  *reinterpret_cast<uint4*>(&v) = *reinterpret_cast<const uint4*>(p);
  return v;
}

int sm_count() {
  static const int n = [] {
    int dev = 0, count = 0;
    CUDA_CHECK(cudaGetDevice(&dev));
    CUDA_CHECK(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, dev));
    return count;
  }();
  return n;
}

// How a launch cuts the work: GP query heads per block (a power of two, at most 8; a group
// of G > 8 heads takes ceil(G/8) blocks per chunk), chunk positions per block.
struct Plan {
  int gp, head_chunks, chunk, splits;
};

Plan make_plan(const DecodeAttentionArgs& a) {
  const int G = a.n_heads / a.n_kv_heads;
  Plan p;
  p.gp = G <= 1 ? 1 : G <= 2 ? 2 : G <= 4 ? 4 : 8;
  p.head_chunks = (G + p.gp - 1) / p.gp;
  p.chunk = a.fixed_chunk > 0 ? a.fixed_chunk : kDecodeMinChunk;
  const long pairs = static_cast<long>(a.batch) * a.n_kv_heads * p.head_chunks;
  while (a.fixed_chunk == 0 && p.chunk < a.kv_len &&
         pairs * ((a.kv_len + p.chunk - 1) / p.chunk) > kMaxBlocks)
    p.chunk *= 2;
  p.splits = (a.kv_len + p.chunk - 1) / p.chunk;
  return p;
}

// One block per (chunk, kv head x head chunk, sequence). Lane layout: a K or V row of D
// bf16 is covered by LP = 2^lp_log2 >= D/8 lanes of 16 bytes (sub = lane % LP); the warp's
// 32/LP lane groups (grp) take 32/LP consecutive positions per load, so one warp load
// reads 512 contiguous bytes when D = 8*LP. Each warp iteration covers kSteps such loads;
// warps interleave iterations over the chunk. Every lane keeps, per head, the FP32 running
// max m (warp-uniform), its group's sum of exponentials l and the unnormalized output of
// its 8 columns acc; scores are reduced over the LP lanes by a fixed xor tree.
// kSteps: 16-byte K and V loads per lane per warp iteration (fewer for 8 heads, whose
// registers would otherwise spill).
// kFold: q/k norm + RoPE + KV append folded in (attention_decode.h): a prologue computes
// the block's q_rope heads (and, in the last chunk, k_rope and v of position kv_len-1) into
// shared memory; position kv_len-1 is never read from the cache.
template <int GP, bool kFold, int kSteps = GP >= 8 ? 2 : 4>
__global__ void __launch_bounds__(kThreads)
split_kernel(DecodeAttentionArgs a, float scale, int chunk, int stride, int lp_log2, bool merge) {
  __shared__ __align__(16) float sm_acc[kWarps][GP][kMaxHeadDim];
  __shared__ float sm_m[kWarps][GP], sm_l[kWarps][GP], sm_w[kWarps][GP], sm_L[GP];
  // kFold: this step's q_rope of the block's heads, k_rope and v of the new position (bf16,
  // the values the separate kernel would store).
  __shared__ __align__(16) bf16 sm_q[kFold ? GP : 1][kFold ? kMaxHeadDim : 8];
  __shared__ __align__(16) bf16 sm_kv[2][kFold ? kMaxHeadDim : 8];

  const int split = blockIdx.x, b = blockIdx.z, splits = gridDim.x;
  const int G = a.n_heads / a.n_kv_heads, head_chunks = (G + GP - 1) / GP;
  const int kvh = blockIdx.y / head_chunks, h0 = (blockIdx.y % head_chunks) * GP;
  const int D = a.head_dim, lp = 1 << lp_log2, pw = 32 >> lp_log2;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int sub = lane & (lp - 1), grp = lane >> lp_log2, d0 = sub * 8;
  const bool dval = d0 < D;
  const int p_begin = split * chunk, p_end = min(p_begin + chunk, a.kv_len);
  const int span = pw * kSteps;  // positions per warp iteration
  const int n_it = (p_end - p_begin + kWarps * span - 1) / (kWarps * span);
  const long cache0 = (static_cast<long>(b) * a.n_kv_heads + kvh) * a.capacity * D + d0;
  const bf16* kc = a.k_cache + cache0;
  const bf16* vc = a.v_cache + cache0;
  auto pos = [&](int it, int u) { return p_begin + (it * kWarps + warp) * span + u * pw + grp; };
  // This step's position kv_len-1 is written by the rope kernel just before us (or, kFold,
  // by this kernel's last-chunk block of head chunk 0). Without kFold, positions sharing
  // its 32-byte sector are read only after pdl_wait() and with coherent loads (the
  // read-only .nc path is for data no kernel in flight writes). With kFold, position
  // kv_len-1 itself is never read from the cache (it loads zeros, replaced in the loop by
  // the values the prologue computed), and the other positions of its sector (earlier
  // steps' data, which nothing rewrites) take coherent loads, before the wait like every
  // earlier position.
  const int last = a.kv_len - 1;
  const long last_sector = (static_cast<long>(last) * D) / 16;
  auto fresh = [&](int p) { return (static_cast<long>(p) * D) / 16 == last_sector; };

  // Positions outside the chunk load zeros (their probability is 0, and 0 * garbage could
  // be NaN).
  Bf16x8 kb[kSteps], vb[kSteps];
  auto load = [&](int it, bool before_wait) {
#pragma unroll
    for (int u = 0; u < kSteps; ++u) {
      const int p = pos(it, u);
      const long at = static_cast<long>(p) * D;
      const bool in = dval && p < p_end;
      if (in && !fresh(p)) {
        kb[u] = load8_stream(kc + at);
        vb[u] = load8_stream(vc + at);
      } else if (in && (kFold ? p != last : !before_wait)) {
        kb[u] = load8(kc + at);
        vb[u] = load8(vc + at);
      } else {
        *reinterpret_cast<uint4*>(&kb[u]) = make_uint4(0, 0, 0, 0);
        *reinterpret_cast<uint4*>(&vb[u]) = make_uint4(0, 0, 0, 0);
      }
    }
  };

  // kFold, before the wait: the per-lane cos/sin of position kv_len-1 and norm weights
  // (no kernel of the layer writes them). Tasks: the block's GP query heads, then (last
  // chunk only) the kv head's k; warp w takes tasks w, w + kWarps, ...
  constexpr int kTasks = kFold ? (GP + 1 + kWarps - 1) / kWarps : 0;
  const bool owns_last = p_end == a.kv_len;                      // block-uniform
  const bool writes_cache = owns_last && blockIdx.y % head_chunks == 0;
  [[maybe_unused]] RopeLaneTrig tr;
  [[maybe_unused]] RopeLaneNorm qn, kn;
  // kFold: the one (iteration, step, lane group) of one warp of the last chunk whose
  // position is kv_len-1 takes k_rope and v from shared memory (it_last = -1 elsewhere).
  int it_last = -1, u_last = 0, grp_last = 0;
  if constexpr (kFold) {
    if (owns_last) {
      const int r = last - p_begin, per_it = kWarps * span, rem = r % per_it;
      if (rem / span == warp) {
        it_last = r / per_it;
        u_last = (rem % span) / pw;
        grp_last = (rem % span) % pw;
      }
    }
    const int half = D / 2;
    tr = load_rope_trig(a.cos_table + static_cast<long>(last) * half,
                        a.sin_table + static_cast<long>(last) * half, half, lane);
    qn = load_rope_norm(a.q_norm_w, half, a.interleaved, lane);
    if (owns_last && warp == GP % kWarps) kn = load_rope_norm(a.k_norm_w, half, a.interleaved, lane);
  }

  if (n_it > 0) load(0, true);
  pdl_wait();
  pdl_trigger();

  if constexpr (kFold) {
    // After the wait: this sequence's q|k|v row (written by the QKV kernel). All loads of
    // the warp's tasks first, then the arithmetic.
    const int half = D / 2, q_width = a.n_heads * D, kv_width = a.n_kv_heads * D;
    const bf16* row = a.qkv + static_cast<long>(b) * (q_width + 2 * kv_width);
    const long cache_last = cache0 - d0 + static_cast<long>(last) * D;
    RopeLaneX xv[kTasks];
#pragma unroll
    for (int j = 0; j < kTasks; ++j) {
      const int t = warp + j * kWarps;
      const bool is_k = t == GP && owns_last, is_q = t < GP && h0 + t < G;
      if (is_q || is_k)
        xv[j] = load_rope_x(row + (is_q ? (kvh * G + h0 + t) * D : q_width + kvh * D), half,
                            a.interleaved, lane);
    }
    if (owns_last)  // v of the new position: 16 bytes per thread
      for (int i = threadIdx.x; i < D / 8; i += kThreads) {
        const uint4 v = *reinterpret_cast<const uint4*>(row + q_width + kv_width + kvh * D + i * 8);
        *reinterpret_cast<uint4*>(&sm_kv[1][i * 8]) = v;
        if (writes_cache) *reinterpret_cast<uint4*>(a.v_cache + cache_last + i * 8) = v;
      }
#pragma unroll
    for (int j = 0; j < kTasks; ++j) {
      const int t = warp + j * kWarps;
      if (t < GP && h0 + t < G) {
        bf16* tap = split == 0
                        ? a.q_rope + (static_cast<long>(b) * a.n_heads + kvh * G + h0 + t) * D
                        : nullptr;
        norm_rope_head(xv[j], a.q_norm_w != nullptr, qn, tr, a.eps, D, a.interleaved, lane,
                       [&](int i, bf16 y) {
                         sm_q[t][i] = y;
                         if (tap) tap[i] = y;
                       });
      } else if (t == GP && owns_last) {
        norm_rope_head(xv[j], a.k_norm_w != nullptr, kn, tr, a.eps, D, a.interleaved, lane,
                       [&](int i, bf16 y) {
                         sm_kv[0][i] = y;
                         if (writes_cache) a.k_cache[cache_last + i] = y;
                       });
      }
    }
    __syncthreads();
  }

  if (!kFold && n_it > 0) {
#pragma unroll
    for (int u = 0; u < kSteps; ++u) {
      const int p = pos(0, u);
      if (dval && p < p_end && fresh(p)) {
        kb[u] = load8(kc + static_cast<long>(p) * D);
        vb[u] = load8(vc + static_cast<long>(p) * D);
      }
    }
  }

  float q[GP][8], m[GP], l[GP], acc[GP][8];
#pragma unroll
  for (int g = 0; g < GP; ++g) {
    m[g] = -INFINITY;
    l[g] = 0.f;
#pragma unroll
    for (int i = 0; i < 8; ++i) q[g][i] = acc[g][i] = 0.f;
    if (dval && h0 + g < G) {
      if constexpr (kFold)
        to_float8(load8_shared(&sm_q[g][d0]), q[g]);
      else
        to_float8(load8(a.q + (static_cast<long>(b) * a.n_heads + kvh * G + h0 + g) * D + d0), q[g]);
    }
  }

  for (int it = 0; it < n_it; ++it) {
    Bf16x8 kcur[kSteps], vcur[kSteps];
#pragma unroll
    for (int u = 0; u < kSteps; ++u) {
      kcur[u] = kb[u];
      vcur[u] = vb[u];
    }
    if constexpr (kFold) {
      if (it == it_last) {
#pragma unroll
        for (int u = 0; u < kSteps; ++u)
          if (u == u_last && grp == grp_last && dval) {
            kcur[u] = load8_shared(&sm_kv[0][d0]);
            vcur[u] = load8_shared(&sm_kv[1][d0]);
          }
      }
    }
    if (it + 1 < n_it) load(it + 1, false);
    if (pos(it, 0) - grp >= p_end) continue;  // no position of this warp (warp-uniform)

    // Scores s[g][u] = (q_g . k) * scale for this lane group's position of step u.
    float s[GP][kSteps];
#pragma unroll
    for (int u = 0; u < kSteps; ++u) {
      float kf[8];
      to_float8(kcur[u], kf);
#pragma unroll
      for (int g = 0; g < GP; ++g) {
        float t = 0.f;
#pragma unroll
        for (int i = 0; i < 8; ++i) t = fmaf(q[g][i], kf[i], t);
        s[g][u] = t;
      }
    }
    for (int o = lp >> 1; o > 0; o >>= 1)
#pragma unroll
      for (int g = 0; g < GP; ++g)
#pragma unroll
        for (int u = 0; u < kSteps; ++u) s[g][u] += __shfl_xor_sync(0xffffffffu, s[g][u], o);

    // Online softmax: new max over the warp's positions, rescale, exponentials.
#pragma unroll
    for (int g = 0; g < GP; ++g) {
      float mx = -INFINITY;
#pragma unroll
      for (int u = 0; u < kSteps; ++u) {
        s[g][u] = pos(it, u) < p_end ? s[g][u] * scale : -INFINITY;
        mx = fmaxf(mx, s[g][u]);
      }
      for (int o = lp; o < 32; o <<= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
      const float m_new = fmaxf(m[g], mx);  // finite: pos(it, 0) of group 0 is in the chunk
      const float alpha = expf(m[g] - m_new);  // 0 on the first step (m = -inf)
      float sum = 0.f;
#pragma unroll
      for (int u = 0; u < kSteps; ++u) {
        s[g][u] = s[g][u] == -INFINITY ? 0.f : expf(s[g][u] - m_new);
        sum += s[g][u];
      }
      l[g] = l[g] * alpha + sum;
#pragma unroll
      for (int i = 0; i < 8; ++i) acc[g][i] *= alpha;
      m[g] = m_new;
    }
#pragma unroll
    for (int u = 0; u < kSteps; ++u) {
      float vf[8];
      to_float8(vcur[u], vf);
#pragma unroll
      for (int g = 0; g < GP; ++g)
#pragma unroll
        for (int i = 0; i < 8; ++i) acc[g][i] = fmaf(s[g][u], vf[i], acc[g][i]);
    }
  }

  // Merge the lane groups (same m), then the warps in index order.
  for (int o = lp; o < 32; o <<= 1)
#pragma unroll
    for (int g = 0; g < GP; ++g) {
      l[g] += __shfl_xor_sync(0xffffffffu, l[g], o);
#pragma unroll
      for (int i = 0; i < 8; ++i) acc[g][i] += __shfl_xor_sync(0xffffffffu, acc[g][i], o);
    }
  if (grp == 0 && dval) {
#pragma unroll
    for (int g = 0; g < GP; ++g) {
      float4* dst = reinterpret_cast<float4*>(&sm_acc[warp][g][d0]);
      dst[0] = make_float4(acc[g][0], acc[g][1], acc[g][2], acc[g][3]);
      dst[1] = make_float4(acc[g][4], acc[g][5], acc[g][6], acc[g][7]);
    }
  }
  if (lane == 0) {
#pragma unroll
    for (int g = 0; g < GP; ++g) {
      sm_m[warp][g] = m[g];
      sm_l[warp][g] = l[g];
    }
  }
  __syncthreads();
  if (threadIdx.x < GP) {
    const int g = threadIdx.x;
    float M = -INFINITY;
    for (int w = 0; w < kWarps; ++w) M = fmaxf(M, sm_m[w][g]);  // finite: warp 0 has a position
    float L = 0.f;
    for (int w = 0; w < kWarps; ++w) {
      const float e = sm_m[w][g] == -INFINITY ? 0.f : expf(sm_m[w][g] - M);
      sm_w[w][g] = e;
      L += e * sm_l[w][g];
    }
    sm_L[g] = L;
    if (splits > 1 && h0 + g < G) {
      const long part = (static_cast<long>(b) * a.n_heads + kvh * G + h0 + g) * stride + split;
      a.partial_ml[part * 2] = M;
      a.partial_ml[part * 2 + 1] = L;
    }
  }
  __syncthreads();
  for (int i = threadIdx.x; i < GP * D; i += kThreads) {
    const int g = i / D, d = i % D;
    if (h0 + g >= G) continue;
    float o = 0.f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) o = fmaf(sm_w[w][g], sm_acc[w][g][d], o);
    const long head = static_cast<long>(b) * a.n_heads + kvh * G + h0 + g;
    if (splits == 1) {
      a.out[head * D + d] = round_bf16(o / sm_L[g]);
    } else {
      a.partial_acc[(head * stride + split) * D + d] = o;
    }
  }
  if (splits == 1 || !merge) return;

  // merge (grids of at most ~one wave, see kFoldMaxBlocksPerSm): the last block of this
  // (kv head, head chunk, sequence) to finish merges every chunk's partials in chunk order
  // and rounds once (no combine kernel: one kernel boundary less per decode step). Arrival order decides only WHICH block merges, never
  // the order of the sums. Each thread fences its partial writes before the count; the
  // merging block fences again before reading them (through L2: __ldcg).
  __shared__ bool sm_last;
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) {
    unsigned* counter = a.counters + static_cast<long>(b) * gridDim.y + blockIdx.y;
    sm_last = atomicAdd(counter, 1u) == static_cast<unsigned>(splits - 1);
    if (sm_last) *counter = 0;  // all chunks are in: leave it zero for the next launch
  }
  __syncthreads();
  if (!sm_last) return;
  __threadfence();

  // Weights e^(m_s - M) per head, in sm_acc's space (GP x splits floats; splits <= 1024 =
  // kMaxHeadDim * kWarps, see make_plan): one warp per head, lanes strided over the
  // chunks, fixed xor trees for the max and the sum.
  float* weight = &sm_acc[0][0][0];
  for (int g = warp; g < GP; g += kWarps) {
    if (h0 + g >= G) continue;
    const long head = static_cast<long>(b) * a.n_heads + kvh * G + h0 + g;
    const float2* ml = reinterpret_cast<const float2*>(a.partial_ml) + head * stride;
    float M = -INFINITY;
    for (int s = lane; s < splits; s += 32) M = fmaxf(M, __ldcg(ml + s).x);
    M = warp_max(M);
    float total = 0.f;
    for (int s = lane; s < splits; s += 32) {
      const float2 v = __ldcg(ml + s);
      const float e = expf(v.x - M);
      weight[g * splits + s] = e;
      total += e * v.y;
    }
    total = warp_sum(total);
    if (lane == 0) sm_L[g] = total;
  }
  __syncthreads();
  // One thread per 4 consecutive columns of a head: a float4 per chunk, 16 chunks' loads
  // in flight, summed in chunk order.
  const int quads = D / 4;
  for (int c = threadIdx.x; c < GP * quads; c += kThreads) {
    const int g = c / quads, d = (c % quads) * 4;
    if (h0 + g >= G) continue;
    const long head = static_cast<long>(b) * a.n_heads + kvh * G + h0 + g;
    const float4* src = reinterpret_cast<const float4*>(a.partial_acc + head * stride * D + d);
    const float* wg = weight + g * splits;
    float4 o = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll 16
    for (int s = 0; s < splits; ++s) {
      const float4 v = __ldcg(src + static_cast<long>(s) * quads);
      const float w = wg[s];
      o.x = fmaf(w, v.x, o.x);
      o.y = fmaf(w, v.y, o.y);
      o.z = fmaf(w, v.z, o.z);
      o.w = fmaf(w, v.w, o.w);
    }
    const float L = sm_L[g];
    __nv_bfloat162* dst = reinterpret_cast<__nv_bfloat162*>(a.out + head * D + d);
    dst[0] = __floats2bfloat162_rn(o.x / L, o.y / L);
    dst[1] = __floats2bfloat162_rn(o.z / L, o.w / L);
  }
}

__host__ __device__ constexpr int padded_splits(int splits) { return (splits + 7) / 8 * 8; }

// One block per (head, sequence): merge the splits, round once. The first warp turns the
// splits' (m, l) into weights e^(m_s - M) in shared memory (fixed-shape reductions), then
// every output element sums its splits with independent loads in flight.
__global__ void combine_kernel(DecodeAttentionArgs a, int splits, int stride) {
  // [splits rounded up to 8]: the unrolled loop below may read whole 16-byte vectors, so
  // the tail is allocated and zeroed (compute-sanitizer memcheck flagged the over-read).
  extern __shared__ float weight[];
  __shared__ float total_sm;
  pdl_wait();
  pdl_trigger();
  const int h = blockIdx.x, b = blockIdx.y, D = a.head_dim, lane = threadIdx.x & 31;
  const long base = (static_cast<long>(b) * a.n_heads + h) * stride;
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

std::size_t decode_attention_counters(int batch, int n_heads) {
  return static_cast<std::size_t>(batch) * n_heads;
}

int decode_attention_chunk(int batch, int n_heads, int n_kv_heads, int kv_len, int fixed_chunk) {
  if (n_kv_heads <= 0 || n_heads % n_kv_heads != 0 || kv_len <= 0 || fixed_chunk < 0)
    throw std::invalid_argument("decode_attention_chunk: heads, kv_len or chunk out of range");
  DecodeAttentionArgs a{};
  a.batch = batch;
  a.n_heads = n_heads;
  a.n_kv_heads = n_kv_heads;
  a.kv_len = kv_len;
  a.fixed_chunk = fixed_chunk;
  return make_plan(a).chunk;
}

bool decode_attention_one_wave(int batch, int n_heads, int n_kv_heads, int kv_len, int fixed_chunk) {
  if (n_kv_heads <= 0 || n_heads % n_kv_heads != 0 || kv_len <= 0 || fixed_chunk < 0) return false;
  DecodeAttentionArgs a{};
  a.batch = batch;
  a.n_heads = n_heads;
  a.n_kv_heads = n_kv_heads;
  a.kv_len = kv_len;
  a.fixed_chunk = fixed_chunk;
  const Plan p = make_plan(a);
  return static_cast<long>(p.splits) * n_kv_heads * p.head_chunks * batch <=
         long{kFoldMaxBlocksPerSm} * sm_count();
}

void launch_decode_attention(const DecodeAttentionArgs& a, cudaStream_t stream) {
  if (a.n_kv_heads <= 0 || a.n_heads % a.n_kv_heads != 0)
    throw std::invalid_argument("fused decode attention: n_heads must be a multiple of n_kv_heads");
  if (a.head_dim % 8 != 0 || a.head_dim > kMaxHeadDim)
    throw std::invalid_argument("fused decode attention: head_dim must be a multiple of 8, at most 256");
  if (a.kv_len <= 0 || a.kv_len > a.capacity)
    throw std::invalid_argument("fused decode attention: kv_len outside the cache");
  if (a.batch <= 0 || a.batch > 65535 || a.n_heads > 65535)
    throw std::invalid_argument("fused decode attention: batch or head count beyond the grid");
  if (a.qkv && (!a.cos_table || !a.sin_table || !a.q_rope))
    throw std::invalid_argument("fused decode attention: the folded RoPE needs cos/sin tables and q_rope");
  if (a.fixed_chunk != 0 && a.fixed_chunk < kDecodeMinChunk)
    throw std::invalid_argument("fused decode attention: a fixed chunk is at least kDecodeMinChunk positions");
  const Plan p = make_plan(a);
  // The combine kernel keeps one weight per chunk in shared memory (48 KiB).
  if (padded_splits(p.splits) * sizeof(float) > 48 * 1024)
    throw std::invalid_argument("fused decode attention: too many chunks for the combine kernel");
  if (p.splits > 1 && (!a.partial_acc || !a.partial_ml || !a.counters))
    throw std::invalid_argument("fused decode attention: split-KV needs the scratch and counters");
  const int stride = decode_attention_splits(a.kv_len);
  int lp_log2 = 0;
  while ((8 << lp_log2) < a.head_dim) ++lp_log2;
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(a.head_dim)));
  const dim3 grid(p.splits, a.n_kv_heads * p.head_chunks, a.batch);
  // Where the chunks merge changes no bits (see attention_decode.h), so the batch-invariant
  // plan follows the same rule: inside the split kernel at about one wave.
  const bool merge = p.splits > 1 && (a.merge == 1 || (a.merge < 0 && static_cast<long>(grid.x) * grid.y * grid.z <=
                                                                         long{kFoldMaxBlocksPerSm} * sm_count()));
  auto launch = [&](auto kernel) {
    launch_pdl(kernel, grid, kThreads, 0, stream, a, scale, p.chunk, stride, lp_log2, merge);
  };
  const bool fold = a.qkv != nullptr;
  switch (p.gp) {
    case 1: fold ? launch(split_kernel<1, true>) : launch(split_kernel<1, false>); break;
    case 2: fold ? launch(split_kernel<2, true>) : launch(split_kernel<2, false>); break;
    case 4: fold ? launch(split_kernel<4, true>) : launch(split_kernel<4, false>); break;
    default: fold ? launch(split_kernel<8, true>) : launch(split_kernel<8, false>); break;
  }
  if (p.splits > 1 && !merge)
    launch_pdl(combine_kernel, dim3(a.n_heads, a.batch), 128,
               padded_splits(p.splits) * sizeof(float), stream, a, p.splits, stride);
}

}  // namespace fusecheck::fused
