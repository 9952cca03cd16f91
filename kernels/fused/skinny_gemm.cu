// The batch-invariant decode GEMM (see skinny_gemm.h for what it computes and why its
// order does not depend on the row count).
#include "kernels/fused/skinny_gemm.h"

#include <algorithm>
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
constexpr int kBlocksPerSm = 4;         // the split count aims at this many blocks per SM

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

// Grid: (column blocks, splits). Block: 4 warps, warp w owns column tile blockIdx.x * 4 + w:
// weight rows 16 tile .. 16 tile + 15 (SwiGlu: gate rows 8 tile + g and up rows N + 8 tile + g,
// so a thread holds the gate and the up sum of the same column).
template <int TILES, SkinnyEpilogue E>
__global__ void __launch_bounds__(kThreads) skinny_kernel(Args a) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int tile = blockIdx.x * kWarps + warp;
  constexpr bool kSwi = E == SkinnyEpilogue::SwiGlu;
  const int n_rows = kSwi ? 2 * a.N : a.N;  // weight rows
  const int r0 = kSwi ? tile * 8 + g : tile * 16 + g;
  const int r1 = kSwi ? a.N + tile * 8 + g : r0 + 8;
  const bool live0 = kSwi ? tile * 8 + g < a.N : r0 < n_rows;
  const bool live1 = kSwi ? live0 : r1 < n_rows;
  const int K = a.K;
  const int k_begin = blockIdx.y * a.steps_per_split * kStep;
  const int k_end = min(K, k_begin + a.steps_per_split * kStep);
  const bf16* w0 = a.W + static_cast<long>(live0 ? r0 : 0) * K + 8 * t;
  const bf16* w1 = a.W + static_cast<long>(live1 ? r1 : 0) * K + 8 * t;

  float acc[TILES][4];
#pragma unroll
  for (int j = 0; j < TILES; ++j) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.f;

  // Weights of the first two steps before the PDL wait (weights only), then two steps
  // ahead: 4 KB in flight per warp, enough for DRAM at a few blocks per SM.
  auto in_k = [&](int k) { return k + 8 * t < k_end; };
  auto load_step = [&](int k, uint4 (&w)[4]) {
    const bool ok = k < k_end;
    w[0] = load_w(w0 + k, ok && live0 && in_k(k));
    w[1] = load_w(w0 + k + 32, ok && live0 && in_k(k + 32));
    w[2] = load_w(w1 + k, ok && live1 && in_k(k));
    w[3] = load_w(w1 + k + 32, ok && live1 && in_k(k + 32));
  };
  uint4 cur[4], nxt[4];
  load_step(k_begin, cur);
  load_step(k_begin + kStep, nxt);
  pdl_wait();
  pdl_trigger();
  for (int k = k_begin; k < k_end; k += kStep) {
    uint4 far[4];
    load_step(k + 2 * kStep, far);
    uint4 x0[TILES], x1[TILES];
#pragma unroll
    for (int j = 0; j < TILES; ++j) {
      const int m = j * 8 + g;
      const bf16* xr = a.X + static_cast<long>(m < a.M ? m : 0) * K + k + 8 * t;
      x0[j] = load_x(xr, m < a.M && in_k(k));
      x1[j] = load_x(xr + 32, m < a.M && in_k(k + 32));
    }
#pragma unroll
    for (int j = 0; j < TILES; ++j) step_mma(acc[j], cur[0], cur[1], cur[2], cur[3], x0[j], x1[j]);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      cur[i] = nxt[i];
      nxt[i] = far[i];
    }
  }

  // acc[j]: c0, c1 = weight row r0, tokens 8j + 2t and 8j + 2t + 1; c2, c3 = row r1, same tokens.
  if (a.splits > 1) {
    const int m_pad = TILES * 8;
    float* ws = a.ws + static_cast<long>(blockIdx.y) * m_pad * n_rows;
#pragma unroll
    for (int j = 0; j < TILES; ++j) {
      const int m = j * 8 + 2 * t;
      if (live0) __stcg(reinterpret_cast<float2*>(ws + static_cast<long>(r0) * m_pad + m),
                        make_float2(acc[j][0], acc[j][1]));
      if (live1) __stcg(reinterpret_cast<float2*>(ws + static_cast<long>(r1) * m_pad + m),
                        make_float2(acc[j][2], acc[j][3]));
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
    for (int j = 0; j < TILES; ++j) {
      const int m = j * 8 + 2 * t;
      float2 s0 = make_float2(0.f, 0.f), s1 = make_float2(0.f, 0.f);
      for (int s = 0; s < a.splits; ++s) {
        const float* p = a.ws + static_cast<long>(s) * m_pad * n_rows;
        if (live0) {
          const float2 v = __ldcg(reinterpret_cast<const float2*>(p + static_cast<long>(r0) * m_pad + m));
          s0 = s == 0 ? v : make_float2(s0.x + v.x, s0.y + v.y);
        }
        if (live1) {
          const float2 v = __ldcg(reinterpret_cast<const float2*>(p + static_cast<long>(r1) * m_pad + m));
          s1 = s == 0 ? v : make_float2(s1.x + v.x, s1.y + v.y);
        }
      }
      acc[j][0] = s0.x;
      acc[j][1] = s0.y;
      acc[j][2] = s1.x;
      acc[j][3] = s1.y;
    }
    if (threadIdx.x == 0) a.counters[blockIdx.x] = 0;  // ready for the next launch
  }

#pragma unroll
  for (int j = 0; j < TILES; ++j) {
    const int m = j * 8 + 2 * t;
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      if (m + e >= a.M) continue;
      if constexpr (kSwi) {
        if (live0) store_out<E>(a, m + e, tile * 8 + g, acc[j][e], acc[j][2 + e]);
      } else {
        if (live0) store_out<E>(a, m + e, r0, acc[j][e], 0.f);
        if (live1) store_out<E>(a, m + e, r1, acc[j][2 + e], 0.f);
      }
    }
  }
}

template <SkinnyEpilogue E>
void launch_tiles(int tiles, dim3 grid, cudaStream_t s, const Args& a) {
  switch (tiles) {
    case 1: launch_pdl(skinny_kernel<1, E>, grid, kThreads, 0, s, a); break;
    case 2: launch_pdl(skinny_kernel<2, E>, grid, kThreads, 0, s, a); break;
    case 3: launch_pdl(skinny_kernel<3, E>, grid, kThreads, 0, s, a); break;
    case 4: launch_pdl(skinny_kernel<4, E>, grid, kThreads, 0, s, a); break;
    case 5: launch_pdl(skinny_kernel<5, E>, grid, kThreads, 0, s, a); break;
    case 6: launch_pdl(skinny_kernel<6, E>, grid, kThreads, 0, s, a); break;
    case 7: launch_pdl(skinny_kernel<7, E>, grid, kThreads, 0, s, a); break;
    default: launch_pdl(skinny_kernel<8, E>, grid, kThreads, 0, s, a); break;
  }
}

}  // namespace

bool skinny_supports(int N, int K) { return N >= 1 && K >= 8 && K % 8 == 0; }

int SkinnyGemm::splits(int N, int K, SkinnyEpilogue e) {
  static const int sms = device_sm_count();
  const int blocks = (N + cols_per_block(e) - 1) / cols_per_block(e);
  const int steps = (K + kStep - 1) / kStep;
  const int max_splits = std::max(1, steps / kMinStepsPerSplit);
  const int want = std::clamp((kBlocksPerSm * sms + blocks - 1) / blocks, 1, max_splits);
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
  const int blocks = (N + cols_per_block(e) - 1) / cols_per_block(e);
  prepare(N, K, e);
  for (int m0 = 0; m0 < M; m0 += kSkinnyMaxRows) {
    const int rows = std::min(kSkinnyMaxRows, M - m0);
    Args a{X + static_cast<long>(m0) * K, W, bias,
           resid ? resid + static_cast<long>(m0) * N : nullptr, Y + static_cast<long>(m0) * N,
           workspace_.data(), counters_.data(), rows, N, K, S, per_split};
    const dim3 grid(blocks, S);
    const int tiles = (rows + 7) / 8;
    switch (e) {
      case SkinnyEpilogue::Store: launch_tiles<SkinnyEpilogue::Store>(tiles, grid, stream, a); break;
      case SkinnyEpilogue::Bias: launch_tiles<SkinnyEpilogue::Bias>(tiles, grid, stream, a); break;
      case SkinnyEpilogue::Residual: launch_tiles<SkinnyEpilogue::Residual>(tiles, grid, stream, a); break;
      case SkinnyEpilogue::SwiGlu: launch_tiles<SkinnyEpilogue::SwiGlu>(tiles, grid, stream, a); break;
    }
  }
}

}  // namespace fusecheck::fused
