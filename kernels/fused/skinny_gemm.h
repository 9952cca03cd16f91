// The decode GEMM of fused-cuda's batch-invariant mode (docs/fused-kernels.md,
// "Batch-invariant mode"): Y = X . W^T for a few token rows X [M x K] against a weight
// W [N x K] as stored, bf16 operands, FP32 accumulation on the tensor cores, with the
// fused-v1 epilogues (one rounding to bf16 at the end):
//   Store     Y = bf16(acc)
//   Bias      Y = bf16(acc + bias[n])                          (Qwen2's qkv bias)
//   Residual  Y = bf16(acc + resid[m][n])                      (down_proj + residual)
//   SwiGlu    W = [gate rows; up rows] ([2N x K]), Y[m][j] = bf16(silu(gate) * up),
//             gate and up FP32 (the recipe's K5+K6 without the norm)
//
// Why it exists: a batch-invariant decode needs one reduction order for every row count.
// cuBLASLt's algorithm fixed at 64 rows gives that but streams the weights poorly at one row
// (decode b1 cost 1.28-1.57x the default mode's GEMV on an H200); this kernel streams them
// like the GEMV and its order does not depend on M at all:
//  - "swap AB": the weight rows are the MMA's M side (16 per warp), the tokens its N side
//    (8 per MMA tile, mma.sync m16n8k16). Every token tile runs the same sequence of MMAs
//    over the same k-steps; a token's column in its tile and the other columns do not enter
//    its sums (zero-padded rows only add to their own columns);
//  - the k-order inside each 64-wide step is a fixed permutation (each thread loads 16 bytes
//    of a weight row and the same 16 bytes of the token row), the same for W and X;
//  - split-K over thread blocks: the split count depends on (N, K) and the GPU's SM count
//    only, each split's partial sums go to a workspace and the last block of a row tile to
//    arrive adds them in split order 0, 1, ... (arrival counters; no atomics on data);
//  - M above kSkinnyMaxRows runs as several launches of at most kSkinnyMaxRows rows each
//    (the same arithmetic per row).
// How the operands reach the MMAs may change with M (it never changes the sums): the token
// rows are staged in shared memory, either the block's whole k-range at once (one tile of
// at most 8 rows, when it fits) or in 256-wide k-chunks double-buffered by cp.async, shared
// by the block's warps; from 2 token tiles on each warp owns two weight tiles (each token
// fragment used twice, half the grid). The weights stream from DRAM into registers three or two steps ahead.
// Optional, at up to kSkinnyNormMaxRows rows: the RMSNorm before the projection folded into
// the kernel (SkinnyNorm), with the order and rounding of launch_add_rmsnorm bit for bit
// (kernels/fused/add_rmsnorm.h), so whether a layer folds it may depend on the batch.
// So row m's bits are a function of (its own X row, W, N, K, the GPU) only: what the
// batch-invariant tests assert bit for bit (tests/fused/test_skinny_gemm.cpp).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>

#include "kernels/common/device_buffer.h"

namespace fusecheck::fused {

enum class SkinnyEpilogue { Store, Bias, Residual, SwiGlu };

// Token rows per launch (8 MMA tiles of 8); more rows run as more launches.
inline constexpr int kSkinnyMaxRows = 64;

// Token rows up to which SkinnyNorm (the folded RMSNorm) is accepted.
inline constexpr int kSkinnyNormMaxRows = 8;

// The RMSNorm folded in front of the GEMM: the kernel's X is normed = bf16(s * inv_rms(s) *
// weight) with s = x (+ delta) in FP32, exactly as launch_add_rmsnorm(delta, x, weight, eps,
// M, K, resid_out, normed) computes it; resid_out (optional, only with delta) receives
// bf16(s), written once.
struct SkinnyNorm {
  const __nv_bfloat16* delta = nullptr;  // [M x K] or null
  const __nv_bfloat16* weight = nullptr; // [K]
  float eps = 1e-6f;
  __nv_bfloat16* resid_out = nullptr;    // [M x K] or null
};

// True when the kernel takes this shape: K a positive multiple of 8 (16-byte rows), N >= 1.
bool skinny_supports(int N, int K);

class SkinnyGemm {
 public:
  SkinnyGemm() = default;
  SkinnyGemm(const SkinnyGemm&) = delete;
  SkinnyGemm& operator=(const SkinnyGemm&) = delete;

  // The split-K count used for an output of N columns over K (for SwiGlu N is the number of
  // activation columns): fixed per (N, K, epilogue) on a given GPU, never by M.
  static int splits(int N, int K, SkinnyEpilogue e);

  // True when run() accepts a SkinnyNorm for this call: M <= kSkinnyNormMaxRows and the
  // block's k-range of M rows fits in shared memory.
  static bool norm_fold_supported(int M, int N, int K, SkinnyEpilogue e);

  // Allocates the split workspace and counters this shape needs (a no-op when they are big
  // enough). run() calls it too; call it before capturing run() into a CUDA graph.
  void prepare(int N, int K, SkinnyEpilogue e);

  // X: [M x K]; W: [N x K] ([2N x K] for SwiGlu: gate rows then up rows); bias: [N] (Bias);
  // resid: [M x N] (Residual; may not alias Y); Y: [M x N] bf16. Pointers 16-byte aligned.
  // Throws std::invalid_argument for a shape skinny_supports() refuses or a missing operand.
  // norm (optional): X is the residual stream x, normalized in the kernel (SkinnyNorm;
  // throws where norm_fold_supported() is false). l2_prefetch: each warp asks its weight
  // slice into L2 before the PDL wait (for a projection after a latency-bound kernel, the
  // o_proj after the attention); it changes no bits.
  void run(const __nv_bfloat16* X, const __nv_bfloat16* W, int M, int N, int K, SkinnyEpilogue e,
           const __nv_bfloat16* bias, const __nv_bfloat16* resid, __nv_bfloat16* Y,
           cudaStream_t stream, const SkinnyNorm* norm = nullptr, bool l2_prefetch = false);

 private:
  cuda::DeviceBuffer<float> workspace_;          // split partials
  cuda::DeviceBuffer<unsigned int> counters_;    // arrival counters, zero between launches
};

}  // namespace fusecheck::fused
