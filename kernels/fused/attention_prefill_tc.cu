// Kernel 4b, tensor-core route (head_dim 64 or 128): causal GQA flash attention (FA2
// style) on mma.sync m16n8k16 bf16 with FP32 accumulation.
// A block of 4 warps owns 64 query rows of one head (16 rows per warp, held as A
// fragments in registers) and walks the KV cache in tiles of 64 keys, double-buffered in
// shared memory by cp.async (rows XOR-swizzled in 16-byte chunks so ldmatrix is free of
// bank conflicts). Per tile: S = Q K^T (bf16 products are exact, sums FP32), scale, causal
// mask on the diagonal tile, online softmax in FP32 (expf), then O += P V with P split
// exactly into bf16 parts so the tensor cores see the FP32 P (see split_p below).
// Deterministic: fixed per-thread order, no atomics.
#include <cuda_bf16.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <stdexcept>

#include "kernels/common/cuda_check.h"
#include "kernels/fused/attention_prefill.h"
#include "kernels/fused/fused_common.cuh"

namespace fusecheck::fused {
namespace {

constexpr int kWarps = 4;
constexpr int kThreads = 32 * kWarps;
constexpr int BM = 16 * kWarps;  // query rows per block
constexpr int BN = 64;           // keys per tile

template <int D>
constexpr int smem_bytes() {
  return 2 * 2 * BN * D * 2;  // K and V, two stages, bf16 (the Q tile borrows stage 1's K)
}

// Byte offset of element (row, col) of a [rows x D] bf16 tile whose 16-byte chunks are
// XOR-swizzled by row: the 8 rows an ldmatrix phase reads land in 8 distinct bank groups.
template <int D>
__device__ __forceinline__ uint32_t swz(int row, int chunk) {
  return static_cast<uint32_t>(row * D * 2 + ((chunk ^ (row & 7)) << 4));
}

__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src, bool valid) {
  // src-size 0 zero-fills the 16 bytes: rows past the sequence read nothing and hold 0.
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(src),
               "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;"); }
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_group 0;" ::: "memory"); }

__device__ __forceinline__ void ldsm_x4(uint32_t addr, uint32_t& r0, uint32_t& r1, uint32_t& r2,
                                        uint32_t& r3) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
               : "r"(addr));
}
__device__ __forceinline__ void ldsm_x4_t(uint32_t addr, uint32_t& r0, uint32_t& r1, uint32_t& r2,
                                          uint32_t& r3) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
               : "r"(addr));
}

// c += a b: A 16x16 (row), B 16x8 (col), bf16 in, FP32 accumulate.
__device__ __forceinline__ void mma_bf16(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t pack(__nv_bfloat162 v) { return *reinterpret_cast<uint32_t*>(&v); }

// Splits two FP32 probabilities into PARTS bf16 pairs whose sum is the FP32 value:
// hi = bf16(p), mid = bf16(p - hi), lo = bf16(p - hi - mid). Each subtraction is exact
// (the rounding error of a round-to-nearest is representable), |p - hi| <= 2^-8 |p|, so
// with 24 significand bits in p the third part holds the last <= 8 bits exactly:
// hi + mid + lo == p for normal p. PARTS = 2 keeps hi + bf16(p - hi): |error| <= 2^-16 |p|.
template <int PARTS>
__device__ __forceinline__ void split_p(float x, float y, uint32_t out[PARTS]) {
#pragma unroll
  for (int k = 0; k < PARTS; ++k) {
    const __nv_bfloat162 part = __floats2bfloat162_rn(x, y);
    out[k] = pack(part);
    const float2 back = __bfloat1622float2(part);
    x -= back.x;
    y -= back.y;
  }
}

template <int D, int PARTS>
__global__ void __launch_bounds__(kThreads, 2)
    prefill_tc_kernel(PrefillAttentionArgs a, float scale) {
  constexpr int KS = D / 16;   // k-steps of S = Q K^T (head_dim / 16)
  constexpr int NT = BN / 8;   // 8-key n-tiles of S per tile
  constexpr int DT = D / 8;    // 8-column n-tiles of O
  constexpr int CH = D / 8;    // 16-byte chunks per row
  constexpr int TILE = BN * D * 2;  // bytes of one K or V tile
  extern __shared__ __align__(128) unsigned char smem[];
  const uint32_t s0 = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  // stage s: K at s0 + s*2*TILE, V at s0 + s*2*TILE + TILE; Q borrows stage 1's K.
  const uint32_t q_smem = s0 + 2 * TILE;

  const int h = blockIdx.x, b = blockIdx.z;
  const int q0 = (gridDim.y - 1 - blockIdx.y) * BM;  // heaviest (latest) query tiles first
  const int kvh = h / (a.n_heads / a.n_kv_heads);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int g = lane >> 2, t = lane & 3;  // mma fragment row group and column pair
  const long q_stride = static_cast<long>(a.n_heads) * D;
  const bf16* k_base = a.k_cache + (static_cast<long>(b) * a.n_kv_heads + kvh) * a.capacity * D;
  const bf16* v_base = a.v_cache + (static_cast<long>(b) * a.n_kv_heads + kvh) * a.capacity * D;

  const int rows_here = min(BM, a.n - q0);
  const int kv_end = a.start + q0 + rows_here;  // keys this block may see
  const int n_tiles = (kv_end + BN - 1) / BN;

  auto load_kv = [&](int tile, int stage) {
    const int k0 = tile * BN;
    const uint32_t ks = s0 + stage * 2 * TILE, vs = ks + TILE;
#pragma unroll
    for (int i = threadIdx.x; i < BN * CH; i += kThreads) {
      const int r = i / CH, c = i % CH;
      const bool in = k0 + r < kv_end;
      const long off = in ? static_cast<long>(k0 + r) * D + c * 8 : 0;
      cp_async16(ks + swz<D>(r, c), k_base + off, in);
      cp_async16(vs + swz<D>(r, c), v_base + off, in);
    }
  };

#pragma unroll
  for (int i = threadIdx.x; i < BM * CH; i += kThreads) {
    const int r = i / CH, c = i % CH;
    const bool in = r < rows_here;
    const long off = in ? (static_cast<long>(b) * a.n + q0 + r) * q_stride + h * D + c * 8 : 0;
    cp_async16(q_smem + swz<D>(r, c), a.q + off, in);
  }
  load_kv(0, 0);
  cp_async_commit();

  uint32_t qf[KS][4];
  float o[DT][4];
#pragma unroll
  for (int j = 0; j < DT; ++j)
#pragma unroll
    for (int c = 0; c < 4; ++c) o[j][c] = 0.f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};  // l: this thread's columns only
  const int row0 = warp * 16 + g;                          // rows row0 and row0 + 8 of the tile
  const int pos0 = a.start + q0 + row0;                    // their positions

  for (int tile = 0; tile < n_tiles; ++tile) {
    cp_async_wait_all();
    __syncthreads();  // tile `tile` landed; every warp is done with the other stage
    if (tile == 0) {
#pragma unroll
      for (int ks = 0; ks < KS; ++ks)
        ldsm_x4(q_smem + swz<D>(warp * 16 + (lane & 15), 2 * ks + (lane >> 4)), qf[ks][0], qf[ks][1],
                qf[ks][2], qf[ks][3]);
      __syncthreads();  // Q read out before stage 1 is overwritten
    }
    if (tile + 1 < n_tiles) load_kv(tile + 1, (tile + 1) & 1);
    cp_async_commit();

    const uint32_t ks_smem = s0 + (tile & 1) * 2 * TILE, vs_smem = ks_smem + TILE;
    const int k0 = tile * BN;

    // S = Q K^T: one ldmatrix.x4 gives the B fragments of two 8-key n-tiles for one k-step.
    float s[NT][4];
#pragma unroll
    for (int j = 0; j < NT; ++j)
#pragma unroll
      for (int c = 0; c < 4; ++c) s[j][c] = 0.f;
#pragma unroll
    for (int ks = 0; ks < KS; ++ks)
#pragma unroll
      for (int np = 0; np < NT / 2; ++np) {
        uint32_t b0, b1, b2, b3;
        ldsm_x4(ks_smem + swz<D>(np * 16 + ((lane >> 4) << 3) + (lane & 7), 2 * ks + ((lane >> 3) & 1)),
                b0, b1, b2, b3);
        mma_bf16(s[2 * np], qf[ks], b0, b1);
        mma_bf16(s[2 * np + 1], qf[ks], b2, b3);
      }

    // Scale (as the recipe: s * scale in FP32), causal mask where the tile reaches past
    // the block's first position, then the online-softmax update of rows row0, row0 + 8.
    const bool diagonal = k0 + BN - 1 > a.start + q0;
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int pos = pos0 + 8 * r;
      float tile_max = -INFINITY;
#pragma unroll
      for (int j = 0; j < NT; ++j)
#pragma unroll
        for (int c = 0; c < 2; ++c) {
          float v = s[j][2 * r + c] * scale;
          if (diagonal && k0 + 8 * j + 2 * t + c > pos) v = -INFINITY;
          s[j][2 * r + c] = v;
          tile_max = fmaxf(tile_max, v);
        }
      tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 1));
      tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 2));
      const float m_new = fmaxf(m[r], tile_max);
      // Key 0 is in every row's first tile, so m_new is finite; the guard keeps a row
      // with nothing visible at weight 0 rather than NaN all the same.
      const float m_use = m_new == -INFINITY ? 0.f : m_new;
      const float alpha = expf(m[r] - m_use);
      float sum = 0.f;
#pragma unroll
      for (int j = 0; j < NT; ++j)
#pragma unroll
        for (int c = 0; c < 2; ++c) {
          const float p = expf(s[j][2 * r + c] - m_use);
          s[j][2 * r + c] = p;
          sum += p;
        }
      m[r] = m_new;
      l[r] = l[r] * alpha + sum;
#pragma unroll
      for (int j = 0; j < DT; ++j) {
        o[j][2 * r] *= alpha;
        o[j][2 * r + 1] *= alpha;
      }
    }

    // O += P V, P (FP32, C layout of S) re-read as A fragments of 16-key k-steps and split
    // into PARTS bf16 matrices; V fragments by ldmatrix.trans, two 8-column n-tiles each.
#pragma unroll
    for (int kk = 0; kk < BN / 16; ++kk) {
      uint32_t pa[PARTS][4];
      {
        uint32_t w0[PARTS], w1[PARTS], w2[PARTS], w3[PARTS];
        split_p<PARTS>(s[2 * kk][0], s[2 * kk][1], w0);
        split_p<PARTS>(s[2 * kk][2], s[2 * kk][3], w1);
        split_p<PARTS>(s[2 * kk + 1][0], s[2 * kk + 1][1], w2);
        split_p<PARTS>(s[2 * kk + 1][2], s[2 * kk + 1][3], w3);
#pragma unroll
        for (int k = 0; k < PARTS; ++k) {
          pa[k][0] = w0[k];
          pa[k][1] = w1[k];
          pa[k][2] = w2[k];
          pa[k][3] = w3[k];
        }
      }
#pragma unroll
      for (int dp = 0; dp < DT / 2; ++dp) {
        uint32_t b0, b1, b2, b3;
        ldsm_x4_t(vs_smem + swz<D>(16 * kk + (lane & 7) + (((lane >> 3) & 1) << 3), 2 * dp + (lane >> 4)),
                  b0, b1, b2, b3);
        // Smallest part first: the big terms are added last.
#pragma unroll
        for (int k = PARTS - 1; k >= 0; --k) {
          mma_bf16(o[2 * dp], pa[k], b0, b1);
          mma_bf16(o[2 * dp + 1], pa[k], b2, b3);
        }
      }
    }
  }
  cp_async_wait_all();

  // Row sums: each thread summed its own columns; the 4 lanes of a row add theirs.
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
  }
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int row = row0 + 8 * r;
    if (row >= rows_here) continue;
    bf16* out = a.out + (static_cast<long>(b) * a.n + q0 + row) * q_stride + h * D;
#pragma unroll
    for (int j = 0; j < DT; ++j) {
      const __nv_bfloat162 v = __halves2bfloat162(round_bf16(o[j][2 * r] / l[r]),
                                                  round_bf16(o[j][2 * r + 1] / l[r]));
      *reinterpret_cast<__nv_bfloat162*>(out + 8 * j + 2 * t) = v;
    }
  }
}

template <int D, int PARTS>
void launch_tc(const PrefillAttentionArgs& a, cudaStream_t stream) {
  constexpr int smem = smem_bytes<D>();
  static bool configured = false;
  if (!configured) {
    CUDA_CHECK(cudaFuncSetAttribute(prefill_tc_kernel<D, PARTS>,
                                    cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    configured = true;
  }
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(D)));
  const dim3 grid(a.n_heads, (a.n + BM - 1) / BM, a.batch);
  prefill_tc_kernel<D, PARTS><<<grid, kThreads, smem, stream>>>(a, scale);
  CUDA_CHECK_LAUNCH();
}

int& split_parts() {
  static int parts = [] {
    const char* env = std::getenv("FUSECHECK_PREFILL_PV_SPLIT");
    return env != nullptr && std::atoi(env) == 2 ? 2 : 3;
  }();
  return parts;
}

bool aligned16(const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 16 == 0; }

}  // namespace

void set_prefill_attention_pv_split(int parts) {
  if (parts != 2 && parts != 3)
    throw std::invalid_argument("fused prefill attention: the P split has 2 or 3 bf16 parts");
  split_parts() = parts;
}
int prefill_attention_pv_split() { return split_parts(); }

bool launch_prefill_attention_tc(const PrefillAttentionArgs& a, cudaStream_t stream) {
  if (a.head_dim != 64 && a.head_dim != 128) return false;
  if (!aligned16(a.q) || !aligned16(a.k_cache) || !aligned16(a.v_cache) || !aligned16(a.out))
    return false;
  const bool three = split_parts() == 3;
  if (a.head_dim == 64)
    three ? launch_tc<64, 3>(a, stream) : launch_tc<64, 2>(a, stream);
  else
    three ? launch_tc<128, 3>(a, stream) : launch_tc<128, 2>(a, stream);
  return true;
}

}  // namespace fusecheck::fused
