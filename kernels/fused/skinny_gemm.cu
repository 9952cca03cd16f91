// The batch-invariant decode GEMM (see skinny_gemm.h for what it computes and why its
// order does not depend on the row count).
#include "kernels/fused/skinny_gemm.h"

#include <algorithm>
#include <cstdlib>
#include <stdexcept>
#include <string>

#include "kernels/common/cuda_check.h"
#include "kernels/fused/fused_common.cuh"

namespace fusecheck::fused {
namespace {

constexpr int kWarps = 4;               // per block; each warp owns one 16-row weight tile
constexpr int kThreads = kWarps * 32;
constexpr int kStep = 64;               // k-elements per step: two 16-byte loads per row and thread
constexpr int kMinStepsPerSplit = 4;    // a split reads at least 256 k-elements of each row
// The split count aims at this many blocks per SM (FUSECHECK_SKINNY_BLOCKS_PER_SM, 1..32:
// an A/B switch for the benchmarks, read once per process; the order then stays fixed).
int blocks_per_sm() {
  static const int v = [] {
    const char* env = std::getenv("FUSECHECK_SKINNY_BLOCKS_PER_SM");
    const int n = env ? std::atoi(env) : 0;
    return n >= 1 && n <= 32 ? n : 4;
  }();
  return v;
}

int device_sm_count() {
  int dev = 0, n = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev));
  return n;
}

// Output columns one block covers: 4 warps x 16 weight rows, or 4 x 8 gate/up pairs.
int cols_per_block(SkinnyEpilogue e) { return e == SkinnyEpilogue::SwiGlu ? kWarps * 8 : kWarps * 16; }

struct Args {
  const bf16* X;
  const bf16* W;
  const bf16* bias;
  const bf16* resid;
  bf16* Y;
  float* ws;                 // [splits][M_pad][N_acc] partials (N_acc: 2N for SwiGlu)
  unsigned int* counters;    // one per column block
  int M, N, K;
  int splits, steps_per_split;
};

__device__ __forceinline__ void mma_bf16(float (&c)[4], unsigned a0, unsigned a1, unsigned a2,
                                         unsigned a3, unsigned b0, unsigned b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint4 load_w(const bf16* p, bool ok) {
  if (!ok) return make_uint4(0, 0, 0, 0);
  uint4 r;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
               : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
               : "l"(p));
  return r;
}
__device__ __forceinline__ uint4 load_x(const bf16* p, bool ok) {
  return ok ? *reinterpret_cast<const uint4*>(p) : make_uint4(0, 0, 0, 0);
}

// One step's four MMAs for one token tile. Thread (g = lane / 4, t = lane % 4) holds 8
// consecutive k-elements of weight rows g and g + 8 and of token row g at k = 8t (half 0)
// and 32 + 8t (half 1). MMA q of half h takes words 2q and 2q + 1 of each as its logical
// k-columns (2t, 2t+1) and (2t+8, 2t+9): a fixed permutation of the 64 k-elements, the same
// for W and X, so each MMA is a plain dot product over 16 of them.
__device__ __forceinline__ void step_mma(float (&c)[4], const uint4& wa0, const uint4& wa1,
                                         const uint4& wb0, const uint4& wb1, const uint4& x0,
                                         const uint4& x1) {
  mma_bf16(c, wa0.x, wb0.x, wa0.y, wb0.y, x0.x, x0.y);
  mma_bf16(c, wa0.z, wb0.z, wa0.w, wb0.w, x0.z, x0.w);
  mma_bf16(c, wa1.x, wb1.x, wa1.y, wb1.y, x1.x, x1.y);
  mma_bf16(c, wa1.z, wb1.z, wa1.w, wb1.w, x1.z, x1.w);
}

template <SkinnyEpilogue E>
__device__ __forceinline__ void store_out(const Args& a, int m, int n, float v, float up) {
  bf16* y = a.Y + static_cast<long>(m) * a.N + n;
  if constexpr (E == SkinnyEpilogue::Store) {
    *y = round_bf16(v);
  } else if constexpr (E == SkinnyEpilogue::Bias) {
    *y = round_bf16(v + __bfloat162float(a.bias[n]));
  } else if constexpr (E == SkinnyEpilogue::Residual) {
    *y = round_bf16(v + __bfloat162float(a.resid[static_cast<long>(m) * a.N + n]));
  } else {
    *y = round_bf16(silu(v) * up);
  }
}

// Grid: (column blocks, splits). Block: 4 warps; warp w owns WT column tiles, tile
// (blockIdx.x * 4 + w) * WT + i: weight rows 16 tile .. 16 tile + 15 (SwiGlu: gate rows
// 8 tile + g and up rows N + 8 tile + g, so a thread holds the gate and the up sum of the
// same column). WT > 1 (used from 5 token tiles on) reuses each token fragment for WT
// weight tiles: which warp computes an element changes, its sums do not (the same k-steps
// of the same split, the same MMAs).
template <int TILES, int WT, SkinnyEpilogue E>
__global__ void __launch_bounds__(kThreads) skinny_kernel(Args a) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  constexpr bool kSwi = E == SkinnyEpilogue::SwiGlu;
  // Weight steps in flight beyond the current one: 2 at WT = 1 (4 KB per warp), 1 above.
  constexpr int PF = WT == 1 ? 2 : 1;
  const int n_rows = kSwi ? 2 * a.N : a.N;  // weight rows
  const int K = a.K;
  const int k_begin = blockIdx.y * a.steps_per_split * kStep;
  const int k_end = min(K, k_begin + a.steps_per_split * kStep);
  int r0[WT], r1[WT];
  bool live0[WT], live1[WT];
  const bf16* w0[WT];
  const bf16* w1[WT];
#pragma unroll
  for (int i = 0; i < WT; ++i) {
    const int tile = (blockIdx.x * kWarps + warp) * WT + i;
    r0[i] = kSwi ? tile * 8 + g : tile * 16 + g;
    r1[i] = kSwi ? a.N + tile * 8 + g : r0[i] + 8;
    live0[i] = kSwi ? tile * 8 + g < a.N : r0[i] < n_rows;
    live1[i] = kSwi ? live0[i] : r1[i] < n_rows;
    w0[i] = a.W + static_cast<long>(live0[i] ? r0[i] : 0) * K + 8 * t;
    w1[i] = a.W + static_cast<long>(live1[i] ? r1[i] : 0) * K + 8 * t;
  }

  float acc[WT][TILES][4];
#pragma unroll
  for (int i = 0; i < WT; ++i)
#pragma unroll
    for (int j = 0; j < TILES; ++j) acc[i][j][0] = acc[i][j][1] = acc[i][j][2] = acc[i][j][3] = 0.f;

  // Weights of the first PF + 1 steps before the PDL wait (weights only), then PF steps
  // ahead.
  auto in_k = [&](int k) { return k + 8 * t < k_end; };
  auto load_step = [&](int k, uint4 (&w)[WT][4]) {
    const bool ok = k < k_end;
#pragma unroll
    for (int i = 0; i < WT; ++i) {
      w[i][0] = load_w(w0[i] + k, ok && live0[i] && in_k(k));
      w[i][1] = load_w(w0[i] + k + 32, ok && live0[i] && in_k(k + 32));
      w[i][2] = load_w(w1[i] + k, ok && live1[i] && in_k(k));
      w[i][3] = load_w(w1[i] + k + 32, ok && live1[i] && in_k(k + 32));
    }
  };
  uint4 buf[PF + 1][WT][4];
#pragma unroll
  for (int p = 0; p < PF; ++p) load_step(k_begin + p * kStep, buf[p]);
  pdl_wait();
  pdl_trigger();
  for (int k = k_begin; k < k_end; k += kStep) {
    load_step(k + PF * kStep, buf[PF]);
#pragma unroll
    for (int j = 0; j < TILES; ++j) {
      const int m = j * 8 + g;
      const bf16* xr = a.X + static_cast<long>(m < a.M ? m : 0) * K + k + 8 * t;
      const uint4 x0 = load_x(xr, m < a.M && in_k(k)), x1 = load_x(xr + 32, m < a.M && in_k(k + 32));
#pragma unroll
      for (int i = 0; i < WT; ++i) step_mma(acc[i][j], buf[0][i][0], buf[0][i][1], buf[0][i][2], buf[0][i][3], x0, x1);
    }
#pragma unroll
    for (int p = 0; p < PF; ++p)
#pragma unroll
      for (int i = 0; i < WT; ++i)
#pragma unroll
        for (int q = 0; q < 4; ++q) buf[p][i][q] = buf[p + 1][i][q];
  }

  // acc[i][j]: c0, c1 = weight row r0[i], tokens 8j + 2t and 8j + 2t + 1; c2, c3 = row r1[i].
  if (a.splits > 1) {
    const int m_pad = TILES * 8;
    float* ws = a.ws + static_cast<long>(blockIdx.y) * m_pad * n_rows;
#pragma unroll
    for (int i = 0; i < WT; ++i)
#pragma unroll
      for (int j = 0; j < TILES; ++j) {
        const int m = j * 8 + 2 * t;
        if (live0[i]) __stcg(reinterpret_cast<float2*>(ws + static_cast<long>(r0[i]) * m_pad + m),
                             make_float2(acc[i][j][0], acc[i][j][1]));
        if (live1[i]) __stcg(reinterpret_cast<float2*>(ws + static_cast<long>(r1[i]) * m_pad + m),
                             make_float2(acc[i][j][2], acc[i][j][3]));
      }
    __threadfence();
    __syncthreads();
    __shared__ bool last;
    if (threadIdx.x == 0) last = atomicAdd(&a.counters[blockIdx.x], 1u) == unsigned(a.splits - 1);
    __syncthreads();
    if (!last) return;
    __threadfence();
    // The last block of this column block adds the splits in order 0, 1, ..., splits - 1.
#pragma unroll
    for (int i = 0; i < WT; ++i)
#pragma unroll
      for (int j = 0; j < TILES; ++j) {
        const int m = j * 8 + 2 * t;
        float2 s0 = make_float2(0.f, 0.f), s1 = make_float2(0.f, 0.f);
        for (int s = 0; s < a.splits; ++s) {
          const float* p = a.ws + static_cast<long>(s) * m_pad * n_rows;
          if (live0[i]) {
            const float2 v = __ldcg(reinterpret_cast<const float2*>(p + static_cast<long>(r0[i]) * m_pad + m));
            s0 = s == 0 ? v : make_float2(s0.x + v.x, s0.y + v.y);
          }
          if (live1[i]) {
            const float2 v = __ldcg(reinterpret_cast<const float2*>(p + static_cast<long>(r1[i]) * m_pad + m));
            s1 = s == 0 ? v : make_float2(s1.x + v.x, s1.y + v.y);
          }
        }
        acc[i][j][0] = s0.x;
        acc[i][j][1] = s0.y;
        acc[i][j][2] = s1.x;
        acc[i][j][3] = s1.y;
      }
    if (threadIdx.x == 0) a.counters[blockIdx.x] = 0;  // ready for the next launch
  }

#pragma unroll
  for (int i = 0; i < WT; ++i)
#pragma unroll
    for (int j = 0; j < TILES; ++j) {
      const int m = j * 8 + 2 * t;
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        if (m + e >= a.M) continue;
        if constexpr (kSwi) {
          if (live0[i]) store_out<E>(a, m + e, r0[i], acc[i][j][e], acc[i][j][2 + e]);
        } else {
          if (live0[i]) store_out<E>(a, m + e, r0[i], acc[i][j][e], 0.f);
          if (live1[i]) store_out<E>(a, m + e, r1[i], acc[i][j][2 + e], 0.f);
        }
      }
    }
}

// Weight tiles per warp for a launch of `tiles` token tiles (see skinny_kernel). One: two
// per warp from 5 token tiles on (each token fragment used twice) measured no better at 64
// rows on an H200 (2026-12-03, bench_fused invariant/ decode b64 with the skinny plan:
// llama-3-8b layer 613 us against 581 with one, qwen3-8b 528 against 560, qwen3-0.6b 258
// against 194); kept as a template parameter for the next attempt.
int weight_tiles(int /*tiles*/) { return 1; }

template <SkinnyEpilogue E>
void launch_tiles(int tiles, dim3 grid, cudaStream_t s, const Args& a) {
  switch (tiles) {
    case 1: launch_pdl(skinny_kernel<1, 1, E>, grid, kThreads, 0, s, a); break;
    case 2: launch_pdl(skinny_kernel<2, 1, E>, grid, kThreads, 0, s, a); break;
    case 3: launch_pdl(skinny_kernel<3, 1, E>, grid, kThreads, 0, s, a); break;
    case 4: launch_pdl(skinny_kernel<4, 1, E>, grid, kThreads, 0, s, a); break;
    case 5: launch_pdl(skinny_kernel<5, 2, E>, grid, kThreads, 0, s, a); break;
    case 6: launch_pdl(skinny_kernel<6, 2, E>, grid, kThreads, 0, s, a); break;
    case 7: launch_pdl(skinny_kernel<7, 2, E>, grid, kThreads, 0, s, a); break;
    default: launch_pdl(skinny_kernel<8, 2, E>, grid, kThreads, 0, s, a); break;
  }
}

}  // namespace

bool skinny_supports(int N, int K) { return N >= 1 && K >= 8 && K % 8 == 0; }

// From the nominal tiling (one weight tile per warp), whatever tiling a launch uses: the
// split count, and so every element's sums, never depend on the row count.
int SkinnyGemm::splits(int N, int K, SkinnyEpilogue e) {
  static const int sms = device_sm_count();
  const int blocks = (N + cols_per_block(e) - 1) / cols_per_block(e);
  const int steps = (K + kStep - 1) / kStep;
  const int max_splits = std::max(1, steps / kMinStepsPerSplit);
  const int want = std::clamp((blocks_per_sm() * sms + blocks - 1) / blocks, 1, max_splits);
  const int per_split = (steps + want - 1) / want;
  return (steps + per_split - 1) / per_split;  // no empty split
}

void SkinnyGemm::prepare(int N, int K, SkinnyEpilogue e) {
  if (!skinny_supports(N, K)) return;
  const int S = splits(N, K, e);
  if (S == 1) return;
  const int blocks = (N + cols_per_block(e) - 1) / cols_per_block(e);
  const std::size_t n_rows = e == SkinnyEpilogue::SwiGlu ? 2 * std::size_t(N) : std::size_t(N);
  const std::size_t need = std::size_t(S) * kSkinnyMaxRows * n_rows;
  if (workspace_.size() < need) workspace_.resize(need);
  if (counters_.size() < std::size_t(blocks)) {
    counters_.resize(blocks);
    CUDA_CHECK(cudaMemset(counters_.data(), 0, std::size_t(blocks) * sizeof(unsigned int)));
  }
}

void SkinnyGemm::run(const bf16* X, const bf16* W, int M, int N, int K, SkinnyEpilogue e,
                     const bf16* bias, const bf16* resid, bf16* Y, cudaStream_t stream) {
  if (M <= 0) return;
  if (!skinny_supports(N, K))
    throw std::invalid_argument("skinny GEMM: K " + std::to_string(K) + " is not a positive multiple of 8 (N " +
                                std::to_string(N) + ")");
  if (!X || !W || !Y || (e == SkinnyEpilogue::Bias && !bias) || (e == SkinnyEpilogue::Residual && !resid))
    throw std::invalid_argument("skinny GEMM: a required operand is null");
  const int S = splits(N, K, e);
  const int steps = (K + kStep - 1) / kStep;
  const int per_split = (steps + S - 1) / S;
  prepare(N, K, e);
  for (int m0 = 0; m0 < M; m0 += kSkinnyMaxRows) {
    const int rows = std::min(kSkinnyMaxRows, M - m0);
    Args a{X + static_cast<long>(m0) * K, W, bias,
           resid ? resid + static_cast<long>(m0) * N : nullptr, Y + static_cast<long>(m0) * N,
           workspace_.data(), counters_.data(), rows, N, K, S, per_split};
    const int tiles = (rows + 7) / 8;
    const int wt = weight_tiles(tiles);
    const int cols = cols_per_block(e) * wt;
    const dim3 grid((N + cols - 1) / cols, S);
    switch (e) {
      case SkinnyEpilogue::Store: launch_tiles<SkinnyEpilogue::Store>(tiles, grid, stream, a); break;
      case SkinnyEpilogue::Bias: launch_tiles<SkinnyEpilogue::Bias>(tiles, grid, stream, a); break;
      case SkinnyEpilogue::Residual: launch_tiles<SkinnyEpilogue::Residual>(tiles, grid, stream, a); break;
      case SkinnyEpilogue::SwiGlu: launch_tiles<SkinnyEpilogue::SwiGlu>(tiles, grid, stream, a); break;
    }
  }
}

}  // namespace fusecheck::fused
