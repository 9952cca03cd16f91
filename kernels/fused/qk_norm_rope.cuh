// The per-head q/k norm + RoPE arithmetic of the fused path, shared by the separate
// qk_norm_rope kernel (prefill, and decode with FUSECHECK_FUSED_ROPE_FOLD=0) and the decode
// attention kernel that folds it in: both produce the same bits from the same inputs.
//   out = bf16(rope(x * inv_rms(x) * norm_w))   (norm skipped without weights; ONE rounding)
// One warp per head; lane `lane` owns the rotation pairs p = lane + 32 j (j < 4, p < D/2),
// NeoX (p, p + D/2) or interleaved (2p, 2p + 1). Every FP32 operation is spelled out with
// an explicit rounding intrinsic, so the compiler cannot contract it differently in the
// two kernels: per pair ss += fma(x2, x2, x1*x1) in pair order, a fixed xor-tree warp sum,
// y = (x * inv_rms) * w, out1 = fma(y1, c, -(y2*s)), out2 = fma(y2, c, y1*s).
// Included by .cu files only.
#pragma once

#include "kernels/fused/fused_common.cuh"

namespace fusecheck::fused {

inline constexpr int kRopeMaxPairsPerLane = 4;  // head_dim up to 256
inline constexpr int kRopeMaxHeadDim = 2 * 32 * kRopeMaxPairsPerLane;

__device__ __forceinline__ void rope_pair(int p, int half, bool interleaved, int& i1, int& i2) {
  i1 = interleaved ? 2 * p : p;
  i2 = interleaved ? 2 * p + 1 : p + half;
}

// Per-lane values that do not depend on the head's activations (loadable before the PDL
// wait): cos/sin of the position, and the norm weights of the lane's pairs (FP32, exact).
struct RopeLaneTrig {
  float c[kRopeMaxPairsPerLane], s[kRopeMaxPairsPerLane];
};
struct RopeLaneNorm {
  float w1[kRopeMaxPairsPerLane], w2[kRopeMaxPairsPerLane];
};
// One head's elements of the lane's pairs (bf16 -> FP32, exact).
struct RopeLaneX {
  float x1[kRopeMaxPairsPerLane], x2[kRopeMaxPairsPerLane];
};

// cs, sn: the position's rows of the cos/sin tables ([D/2] floats each).
__device__ __forceinline__ RopeLaneTrig load_rope_trig(const float* cs, const float* sn, int half,
                                                       int lane) {
  RopeLaneTrig t;
#pragma unroll
  for (int j = 0; j < kRopeMaxPairsPerLane; ++j) {
    const int p = lane + 32 * j;
    t.c[j] = p < half ? cs[p] : 0.f;
    t.s[j] = p < half ? sn[p] : 0.f;
  }
  return t;
}

// w: [D] norm weights, or null (then the values are unused).
__device__ __forceinline__ RopeLaneNorm load_rope_norm(const bf16* w, int half, bool interleaved,
                                                       int lane) {
  RopeLaneNorm n;
#pragma unroll
  for (int j = 0; j < kRopeMaxPairsPerLane; ++j) {
    const int p = lane + 32 * j;
    n.w1[j] = n.w2[j] = 1.f;
    if (w && p < half) {
      int i1, i2;
      rope_pair(p, half, interleaved, i1, i2);
      n.w1[j] = __bfloat162float(w[i1]);
      n.w2[j] = __bfloat162float(w[i2]);
    }
  }
  return n;
}

// x: one head's [D] bf16 values.
__device__ __forceinline__ RopeLaneX load_rope_x(const bf16* x, int half, bool interleaved, int lane) {
  RopeLaneX v;
#pragma unroll
  for (int j = 0; j < kRopeMaxPairsPerLane; ++j) {
    const int p = lane + 32 * j;
    v.x1[j] = v.x2[j] = 0.f;
    if (p < half) {
      int i1, i2;
      rope_pair(p, half, interleaved, i1, i2);
      v.x1[j] = __bfloat162float(x[i1]);
      v.x2[j] = __bfloat162float(x[i2]);
    }
  }
  return v;
}

// Norm (when `has_norm`, warp-uniform) + rotation of one head, one rounding per element;
// store(i, value) receives element i of the head. Called by all 32 lanes of the warp.
template <typename Store>
__device__ __forceinline__ void norm_rope_head(const RopeLaneX& v, bool has_norm,
                                               const RopeLaneNorm& nw, const RopeLaneTrig& tr,
                                               float eps, int D, bool interleaved, int lane,
                                               Store&& store) {
  const int half = D / 2;
  float ss = 0.f;
#pragma unroll
  for (int j = 0; j < kRopeMaxPairsPerLane; ++j)
    if (lane + 32 * j < half)
      ss = __fadd_rn(ss, __fmaf_rn(v.x2[j], v.x2[j], __fmul_rn(v.x1[j], v.x1[j])));
  const float scale = has_norm ? inv_rms(warp_sum(ss), D, eps) : 1.f;
#pragma unroll
  for (int j = 0; j < kRopeMaxPairsPerLane; ++j) {
    const int p = lane + 32 * j;
    if (p >= half) continue;
    int i1, i2;
    rope_pair(p, half, interleaved, i1, i2);
    float y1 = v.x1[j], y2 = v.x2[j];
    if (has_norm) {  // the normalized value stays FP32 (q_normed/k_normed are not rounded)
      y1 = __fmul_rn(__fmul_rn(y1, scale), nw.w1[j]);
      y2 = __fmul_rn(__fmul_rn(y2, scale), nw.w2[j]);
    }
    store(i1, round_bf16(__fmaf_rn(y1, tr.c[j], -__fmul_rn(y2, tr.s[j]))));
    store(i2, round_bf16(__fmaf_rn(y2, tr.c[j], __fmul_rn(y1, tr.s[j]))));
  }
}

}  // namespace fusecheck::fused
