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

constexpr int kWarps = 4;               // per block; each warp owns WT 16-row weight tiles
constexpr int kThreads = kWarps * 32;
constexpr int kStep = 64;               // k-elements per step: two 16-byte loads per row and thread
constexpr int kMinStepsPerSplit = 4;    // a split reads at least 256 k-elements of each row
constexpr int kChunk = 256;             // k-elements of the token rows per staged chunk (chunked mode)
constexpr int kPad = 32;                // bf16 per staged row beyond its data: the row stride is
                                        // 64 bytes past a multiple of 128, so the 8 rows x 4 lanes of
                                        // a fragment load hit distinct banks in each quarter-warp
constexpr int kChunkLd = kChunk + kPad;
// Whole-range modes: the block's k-range of M rows (and, folding the norm, the M whole rows
// in FP32) in at most this much, so that 4 blocks still fit in an SM's 227 KB.
constexpr std::size_t kWholeMaxSmem = 54 * 1024;
// How the token rows reach shared memory (never the sums): the block's whole k-range once
// (one token tile), the same with the RMSNorm folded in, or k-chunks double-buffered by cp.async.
enum Mode { kChunked = 0, kWhole = 1, kWholeNorm = 2 };

// FUSECHECK_SKINNY_BLOCKS_PER_SM (1..32): an A/B switch for the benchmarks, read once per
// process, that replaces the resident-block count the split count aims at (below); 0 when unset.
int blocks_per_sm_override() {
  static const int v = [] {
    const char* env = std::getenv("FUSECHECK_SKINNY_BLOCKS_PER_SM");
    const int n = env ? std::atoi(env) : 0;
    return n >= 1 && n <= 32 ? n : 0;
  }();
  return v;
}

int device_sm_count() {
  int dev = 0, n = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev));
  return n;
}

// Output columns one block covers with one weight tile per warp: 4 warps x 16 weight rows,
// or 4 x 8 gate/up pairs (the nominal tiling the split count is derived from).
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
  int x_ld;                  // whole-range modes: staged row stride (elements)
  bool l2_prefetch;
  SkinnyNorm norm;           // kWholeNorm only
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
__device__ __forceinline__ uint4 lds16(const bf16* p, bool ok) {
  return ok ? *reinterpret_cast<const uint4*>(p) : make_uint4(0, 0, 0, 0);
}
__device__ __forceinline__ void cp_async16(void* dst, const void* src, bool valid) {
  // src-size 0 zero-fills: rows past M and k past the split's end hold 0.
  const unsigned d = static_cast<unsigned>(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(d), "l"(src), "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}
// One bulk prefetch of `bytes` (a multiple of 16, 16-byte aligned) into L2 (sm_90).
__device__ __forceinline__ void prefetch_l2(const void* p, unsigned bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(p), "r"(bytes) : "memory");
#endif
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

// Whole-range modes: the block's k-range [k0, k1) of the M (<= 8) token rows into xs (row
// stride a.x_ld), plainly (kWhole, cp.async) or as the RMSNorm of x (+ delta) (kWholeNorm:
// the whole rows' FP32 sums staged after xs, rms_partial's order over them with 256
// virtual threads on 128, then rms_apply; the blocks of column block 0 also write bf16(s)
// to resid_out for their k-range).
template <int MODE>
__device__ __forceinline__ void stage_whole(const Args& a, bf16* xs, int k0, int k1) {
  const int pieces = (k1 - k0) / 8;
  if constexpr (MODE == kWhole) {
    for (int i = threadIdx.x; i < a.M * pieces; i += kThreads) {
      const int r = i / pieces, c = i % pieces;
      cp_async16(xs + r * a.x_ld + c * 8, a.X + static_cast<long>(r) * a.K + k0 + c * 8, true);
    }
    cp_async_commit();
    cp_async_wait<0>();
  } else {
    static_assert(kThreads * 2 == kRmsThreads, "the folded norm runs two virtual threads per thread");
    __shared__ float scratch[kSkinnyNormMaxRows][kRmsThreads / 32];
    __shared__ float scale[kSkinnyNormMaxRows];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    // The FP32 sums s = x (+ delta) of the M whole rows, behind the staged k-range: loaded
    // with 16-byte accesses (all in flight at once), then read in rms_partial's order.
    float* rs = reinterpret_cast<float*>(xs + a.M * a.x_ld);
    const bf16* d_all = a.norm.delta;
    const int row_pieces = a.K / 8;
    for (int i = threadIdx.x; i < a.M * row_pieces; i += kThreads) {
      const long at = static_cast<long>(i) * 8;  // rows are contiguous: [M x K]
      float v[8];
      to_float8(load8(a.X + at), v);
      if (d_all) {
        float dv[8];
        to_float8(load8(d_all + at), dv);
#pragma unroll
        for (int q = 0; q < 8; ++q) v[q] += dv[q];
      }
      *reinterpret_cast<float4*>(rs + at) = make_float4(v[0], v[1], v[2], v[3]);
      *reinterpret_cast<float4*>(rs + at + 4) = make_float4(v[4], v[5], v[6], v[7]);
    }
    __syncthreads();
    for (int r = 0; r < a.M; ++r) {
      const float* row = rs + static_cast<long>(r) * a.K;
      // Virtual threads tid and tid + 128 (virtual warps `warp` and `warp + 4`), each summing
      // r_i^2 over i = j, j + 256, ... with FMAs, as rms_partial does.
      float p0 = 0.f, p1 = 0.f;
      for (int i = threadIdx.x; i < a.K; i += kRmsThreads) p0 = fmaf(row[i], row[i], p0);
      for (int i = threadIdx.x + kThreads; i < a.K; i += kRmsThreads) p1 = fmaf(row[i], row[i], p1);
      const float w0 = warp_sum(p0), w1 = warp_sum(p1);
      if (lane == 0) {
        scratch[r][warp] = w0;
        scratch[r][warp + kWarps] = w1;
      }
    }
    __syncthreads();
    if (warp == 0)
      for (int r = 0; r < a.M; ++r) {
        const float total = warp_sum(lane < kRmsThreads / 32 ? scratch[r][lane] : 0.f);
        if (lane == 0) scale[r] = inv_rms(total, a.K, a.norm.eps);
      }
    __syncthreads();
    const bool write_resid = a.norm.resid_out && d_all && blockIdx.x == 0;
    for (int i = threadIdx.x; i < a.M * pieces; i += kThreads) {
      const int r = i / pieces, k = k0 + (i % pieces) * 8;
      const long at = static_cast<long>(r) * a.K + k;
      float w[8];
      to_float8(load8(a.norm.weight + k), w);
      Bf16x8 o, ro;
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        const float v0 = rs[at + 2 * q], v1 = rs[at + 2 * q + 1];
        o.h[q] = __halves2bfloat162(rms_apply(v0, scale[r], w[2 * q]), rms_apply(v1, scale[r], w[2 * q + 1]));
        ro.h[q] = __halves2bfloat162(round_bf16(v0), round_bf16(v1));
      }
      *reinterpret_cast<Bf16x8*>(xs + r * a.x_ld + (k - k0)) = o;
      if (write_resid) *reinterpret_cast<Bf16x8*>(a.norm.resid_out + at) = ro;
    }
  }
  __syncthreads();
}

// Grid: (column blocks, splits). Block: 4 warps; warp w owns WT column tiles, tile
// (blockIdx.x * 4 + w) * WT + i: weight rows 16 tile .. 16 tile + 15 (SwiGlu: gate rows
// 8 tile + g and up rows N + 8 tile + g, so a thread holds the gate and the up sum of the
// same column). WT > 1 (chunked launches from 2 token tiles on) reuses each token fragment for WT
// weight tiles: which warp computes an element changes, its sums do not (the same k-steps
// of the same split, the same MMAs). The token rows come from shared memory (MODE).
template <int TILES, int WT, SkinnyEpilogue E, int MODE>
__global__ void __launch_bounds__(kThreads) skinny_kernel(Args a) {
  static_assert(MODE == kChunked || TILES == 1, "the whole-range modes take one token tile");
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* xs = reinterpret_cast<bf16*>(smem_raw);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  constexpr bool kSwi = E == SkinnyEpilogue::SwiGlu;
  // Weight steps in flight beyond the current one: 3 at WT = 1 (6 KB per warp), 1 above (4 KB).
  constexpr int PF = WT == 1 ? 3 : 1;
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
  // Before the PDL wait (weights only): the warp's weight slice into L2 if asked, and the
  // first PF steps into registers.
  if (a.l2_prefetch && t == 0) {
    const unsigned bytes = static_cast<unsigned>(k_end - k_begin) * 2u;
#pragma unroll
    for (int i = 0; i < WT; ++i) {
      if (live0[i]) prefetch_l2(a.W + static_cast<long>(r0[i]) * K + k_begin, bytes);
      if (live1[i]) prefetch_l2(a.W + static_cast<long>(r1[i]) * K + k_begin, bytes);
    }
  }
  uint4 buf[PF + 1][WT][4];  // NB = PF + 1 (below)
#pragma unroll
  for (int p = 0; p < PF; ++p) load_step(k_begin + p * kStep, buf[p]);
  pdl_wait();
  pdl_trigger();

  // One step at k: prefetch step k + PF into wnext, the MMAs of step k on wcur and the
  // staged rows (xb: the staged row 0 at this step's first k-element, row stride ld). The
  // NB = PF + 1 weight buffers rotate by static index (the loops below unroll by NB): a
  // register copy between buffers would wait for the loads still in flight.
  constexpr int NB = PF + 1;
  static_assert((kChunk / kStep) % NB == 0, "a chunk's steps cycle through the buffers whole");
  auto step = [&](int k, const uint4 (&wcur)[WT][4], uint4 (&wnext)[WT][4], const bf16* xb, int ld,
                  bool row_check) {
    load_step(k + PF * kStep, wnext);
#pragma unroll
    for (int j = 0; j < TILES; ++j) {
      const int m = j * 8 + g;
      const bool ok = !row_check || m < a.M;
      const bf16* xr = xb + m * ld + 8 * t;
      const uint4 x0 = lds16(xr, ok && in_k(k)), x1 = lds16(xr + 32, ok && in_k(k + 32));
#pragma unroll
      for (int i = 0; i < WT; ++i) step_mma(acc[i][j], wcur[i][0], wcur[i][1], wcur[i][2], wcur[i][3], x0, x1);
    }
  };

  if constexpr (MODE == kChunked) {
    // Chunk c of the k-range, rows 0 .. TILES*8-1 (zero past M and past k_end), into buffer
    // c % 2; every thread's cp.async group is one chunk.
    constexpr int kRowsPad = TILES * 8, kPieces = kChunk / 8;
    auto stage = [&](int c) {
      bf16* dst = xs + (c & 1) * kRowsPad * kChunkLd;
      const int kc = k_begin + c * kChunk;
      for (int i = threadIdx.x; i < kRowsPad * kPieces; i += kThreads) {
        const int r = i / kPieces, k = kc + (i % kPieces) * 8;
        const bool ok = r < a.M && k < k_end;
        cp_async16(dst + r * kChunkLd + (k - kc), ok ? a.X + static_cast<long>(r) * K + k : a.X, ok);
      }
      cp_async_commit();
    };
    const int n_chunks = (k_end - k_begin + kChunk - 1) / kChunk;
    stage(0);
    for (int c = 0; c < n_chunks; ++c) {
      if (c + 1 < n_chunks) {
        stage(c + 1);
        cp_async_wait<1>();
      } else {
        cp_async_wait<0>();
      }
      __syncthreads();
      const bf16* xb = xs + (c & 1) * kRowsPad * kChunkLd;
      const int kc = k_begin + c * kChunk;
#pragma unroll
      for (int s = 0; s < kChunk / kStep; ++s) {
        const int k = kc + s * kStep;
        if (k < k_end) step(k, buf[s % NB], buf[(s + PF) % NB], xb + s * kStep, kChunkLd, false);
      }
      __syncthreads();  // buffer c % 2 is restaged two chunks on
    }
  } else {
    stage_whole<MODE>(a, xs, k_begin, k_end);
    for (int k0 = k_begin; k0 < k_end; k0 += NB * kStep) {
#pragma unroll
      for (int u = 0; u < NB; ++u) {
        const int k = k0 + u * kStep;
        if (k < k_end) step(k, buf[u], buf[(u + PF) % NB], xs + (k - k_begin), a.x_ld, true);
      }
    }
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

// Weight tiles per warp for a chunked launch of `tiles` token tiles (see skinny_kernel):
// two from 2 token tiles on, where each token fragment read from shared memory then feeds
// two tiles and the grid is half the nominal one, so it stays within one wave at the 2-3
// resident blocks per SM these register-heavier instantiations allow (the split count
// fills the one-row kernel's 4).
constexpr int weight_tiles(int tiles) { return tiles >= 2 ? 2 : 1; }

std::size_t chunked_smem(int tiles) { return std::size_t(2) * tiles * 8 * kChunkLd * sizeof(bf16); }

// The whole-range modes' row stride for this split length (64 bytes past a multiple of 128).
int whole_ld(int steps_per_split) { return steps_per_split * kStep + kPad; }

template <int TILES, SkinnyEpilogue E, int MODE>
void launch_one(dim3 grid, std::size_t smem, cudaStream_t s, const Args& a) {
  auto* kernel = skinny_kernel<TILES, weight_tiles(TILES), E, MODE>;
  // The opt-in above 48 KB, once per instantiation (prepare() runs it before any capture).
  static const bool attr_set = [&] {
    const int max_smem = MODE == kChunked ? static_cast<int>(chunked_smem(TILES)) : static_cast<int>(kWholeMaxSmem);
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, max_smem));
    return true;
  }();
  (void)attr_set;
  if (grid.x == 0) return;  // prepare(): the attribute only
  launch_pdl(kernel, grid, kThreads, smem, s, a);
}

template <SkinnyEpilogue E>
void launch_tiles(int tiles, int mode, dim3 grid, std::size_t smem, cudaStream_t s, const Args& a) {
  if (mode == kWhole) return launch_one<1, E, kWhole>(grid, smem, s, a);
  if (mode == kWholeNorm) return launch_one<1, E, kWholeNorm>(grid, smem, s, a);
  switch (tiles) {
    case 1: launch_one<1, E, kChunked>(grid, smem, s, a); break;
    case 2: launch_one<2, E, kChunked>(grid, smem, s, a); break;
    case 3: launch_one<3, E, kChunked>(grid, smem, s, a); break;
    case 4: launch_one<4, E, kChunked>(grid, smem, s, a); break;
    case 5: launch_one<5, E, kChunked>(grid, smem, s, a); break;
    case 6: launch_one<6, E, kChunked>(grid, smem, s, a); break;
    case 7: launch_one<7, E, kChunked>(grid, smem, s, a); break;
    default: launch_one<8, E, kChunked>(grid, smem, s, a); break;
  }
}

template <SkinnyEpilogue E>
void set_attributes() {
  const Args none{};
  for (int tiles = 1; tiles <= 8; ++tiles) launch_tiles<E>(tiles, kChunked, dim3(0), 0, nullptr, none);
  launch_tiles<E>(1, kWhole, dim3(0), 0, nullptr, none);
  launch_tiles<E>(1, kWholeNorm, dim3(0), 0, nullptr, none);
}

void set_attributes(SkinnyEpilogue e) {
  switch (e) {
    case SkinnyEpilogue::Store: set_attributes<SkinnyEpilogue::Store>(); break;
    case SkinnyEpilogue::Bias: set_attributes<SkinnyEpilogue::Bias>(); break;
    case SkinnyEpilogue::Residual: set_attributes<SkinnyEpilogue::Residual>(); break;
    case SkinnyEpilogue::SwiGlu: set_attributes<SkinnyEpilogue::SwiGlu>(); break;
  }
}

// Resident blocks per SM of the one-row kernel (whole-range mode, no dynamic shared memory:
// the few KB a decode call stages do not bind), per epilogue; once per process.
template <SkinnyEpilogue E>
int resident_blocks_of() {
  static const int n = [] {
    int occ = 0;
    CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ, skinny_kernel<1, 1, E, kWhole>, kThreads, 0));
    return std::max(1, occ);
  }();
  return n;
}
int resident_blocks(SkinnyEpilogue e) {
  switch (e) {
    case SkinnyEpilogue::Store: return resident_blocks_of<SkinnyEpilogue::Store>();
    case SkinnyEpilogue::Bias: return resident_blocks_of<SkinnyEpilogue::Bias>();
    case SkinnyEpilogue::Residual: return resident_blocks_of<SkinnyEpilogue::Residual>();
    case SkinnyEpilogue::SwiGlu: return resident_blocks_of<SkinnyEpilogue::SwiGlu>();
  }
  return 1;
}

// The steps of one split for (N, K, e): fixed, like the split count.
int steps_per_split(int N, int K, SkinnyEpilogue e) {
  const int steps = (K + kStep - 1) / kStep;
  const int S = SkinnyGemm::splits(N, K, e);
  return (steps + S - 1) / S;
}

std::size_t whole_smem(int M, int N, int K, SkinnyEpilogue e, bool norm) {
  return std::size_t(M) * whole_ld(steps_per_split(N, K, e)) * sizeof(bf16) +
         (norm ? std::size_t(M) * K * sizeof(float) : 0);
}

}  // namespace

bool skinny_supports(int N, int K) { return N >= 1 && K >= 8 && K % 8 == 0; }

// From the nominal tiling (one weight tile per warp), whatever tiling a launch uses: the
// split count, and so every element's sums, never depend on the row count.
// The split count fills one wave of the one-row kernel exactly: column blocks x splits <=
// its resident blocks per SM x SMs (a second, partial wave would double a decode GEMM's
// time: measured on an H200, 2026-12-03, 576 blocks over 528 slots). It is a function of
// (N, K, e) and the GPU only, never of M.
int SkinnyGemm::splits(int N, int K, SkinnyEpilogue e) {
  static const int sms = device_sm_count();
  const int resident = blocks_per_sm_override() > 0 ? blocks_per_sm_override() : resident_blocks(e);
  const int blocks = (N + cols_per_block(e) - 1) / cols_per_block(e);
  const int steps = (K + kStep - 1) / kStep;
  const int max_splits = std::max(1, steps / kMinStepsPerSplit);
  const int want = std::clamp(resident * sms / blocks, 1, max_splits);
  const int per_split = (steps + want - 1) / want;
  return (steps + per_split - 1) / per_split;  // no empty split
}

bool SkinnyGemm::norm_fold_supported(int M, int N, int K, SkinnyEpilogue e) {
  return skinny_supports(N, K) && M >= 1 && M <= kSkinnyNormMaxRows && whole_smem(M, N, K, e, true) <= kWholeMaxSmem;
}

void SkinnyGemm::prepare(int N, int K, SkinnyEpilogue e) {
  if (!skinny_supports(N, K)) return;
  set_attributes(e);
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
                     const bf16* bias, const bf16* resid, bf16* Y, cudaStream_t stream, const SkinnyNorm* norm,
                     bool l2_prefetch) {
  if (M <= 0) return;
  if (!skinny_supports(N, K))
    throw std::invalid_argument("skinny GEMM: K " + std::to_string(K) + " is not a positive multiple of 8 (N " +
                                std::to_string(N) + ")");
  if (!X || !W || !Y || (e == SkinnyEpilogue::Bias && !bias) || (e == SkinnyEpilogue::Residual && !resid) ||
      (norm && !norm->weight))
    throw std::invalid_argument("skinny GEMM: a required operand is null");
  if (norm && !norm_fold_supported(M, N, K, e))
    throw std::invalid_argument("skinny GEMM: the folded RMSNorm takes at most " +
                                std::to_string(kSkinnyNormMaxRows) + " rows whose k-range fits in shared memory (M " +
                                std::to_string(M) + ", N " + std::to_string(N) + ", K " + std::to_string(K) + ")");
  const int S = splits(N, K, e);
  const int per_split = steps_per_split(N, K, e);
  prepare(N, K, e);
  for (int m0 = 0; m0 < M; m0 += kSkinnyMaxRows) {
    const int rows = std::min(kSkinnyMaxRows, M - m0);
    Args a{X + static_cast<long>(m0) * K, W, bias,
           resid ? resid + static_cast<long>(m0) * N : nullptr, Y + static_cast<long>(m0) * N,
           workspace_.data(), counters_.data(), rows, N, K, S, per_split, whole_ld(per_split), l2_prefetch,
           norm ? *norm : SkinnyNorm{}};
    const int tiles = (rows + 7) / 8;
    const int mode =
        norm ? kWholeNorm : tiles == 1 && whole_smem(rows, N, K, e, false) <= kWholeMaxSmem ? kWhole : kChunked;
    const std::size_t smem = mode == kChunked ? chunked_smem(tiles) : whole_smem(rows, N, K, e, norm != nullptr);
    const int cols = cols_per_block(e) * (mode == kChunked ? weight_tiles(tiles) : 1);
    const dim3 grid((N + cols - 1) / cols, S);
    switch (e) {
      case SkinnyEpilogue::Store: launch_tiles<SkinnyEpilogue::Store>(tiles, mode, grid, smem, stream, a); break;
      case SkinnyEpilogue::Bias: launch_tiles<SkinnyEpilogue::Bias>(tiles, mode, grid, smem, stream, a); break;
      case SkinnyEpilogue::Residual: launch_tiles<SkinnyEpilogue::Residual>(tiles, mode, grid, smem, stream, a); break;
      case SkinnyEpilogue::SwiGlu: launch_tiles<SkinnyEpilogue::SwiGlu>(tiles, mode, grid, smem, stream, a); break;
    }
  }
}

}  // namespace fusecheck::fused
