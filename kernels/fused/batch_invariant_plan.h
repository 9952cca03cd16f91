// BatchInvariantPlan: the fixed shapes of fused-cuda's batch-invariant mode
// (FusedLayer::set_batch_invariant, docs/fused-kernels.md "Batch-invariant mode"). Plain host
// header: fused_path.h (no CUDA includes) takes one too.
#pragma once

namespace fusecheck::fused {

// Defaults: 128-position decode chunks (batch 1 on the 8B shapes at KV 1024: 64 blocks;
// batch 64: 4096), GEMM algorithms chosen at 64 rows for decode and the head (the largest
// decode batch of the targets; every decode batch is memory-bound) and at 512 rows for
// prefill (the prefill target). Split-K is allowed: the algorithm fixed per shape carries
// its split count and reduction scheme, so every M runs the same splits reduced in the same
// order (cublasLt.h: the in-place scheme's counters "guarantee the sequentiality"; the other
// schemes reduce in a separate step of the same fixed shape), which the GPU tests check bit
// for bit (tests/fused/test_fused_batch_invariant.cpp). Without split-K the decode layer
// cost 2.0-4.1x the default mode on an H200 (2026-12-03), with it 0.99-1.57x
// (docs/fused-kernels.md "Batch-invariant mode"); gemm_split_k = false stays as a variant.
struct BatchInvariantPlan {
  int decode_chunk = 128;
  int decode_gemm_rows = 64;
  int prefill_gemm_rows = 512;
  bool gemm_split_k = true;
  // true: decode calls (n == 1) run the projections on the skinny tensor-core GEMM
  // (kernels/fused/skinny_gemm.h: its order is fixed per (N, K), whatever the row count;
  // gate/up carries the SwiGLU) instead of the cuBLASLt algorithm fixed at decode_gemm_rows.
  // Off by default: on an H200 (2026-12-03) it made decode b1 4-9% faster than the cuBLASLt
  // plan but b64 1.9-2.2x slower than the default mode (docs/fused-kernels.md); a variant.
  bool skinny_decode = false;
  // With skinny_decode: decode calls of at most this many rows fold attn_norm into the QKV
  // GEMM and the residual add + mlp_norm into gate/up (SkinnyNorm: the separate kernel's
  // order and rounding, the same bits), as the default mode's GEMV route does up to 2 rows.
  // Above it the norms run as their own kernels (each block would re-read whole rows).
  int skinny_norm_rows = 2;
  // Decode attention where its grid is about one wave (batch 1): fold q/k norm + RoPE into
  // it and merge the chunks in its last block instead of the combine kernel, as the default
  // mode does. Either way gives the same bits (FusedKernels.DecodeAttentionRopeFold... and
  // ...MergeInSplitKernelEqualsCombineKernel), so it may depend on the batch. Off by default:
  // at the 128-position chunks (64 blocks at batch 1 on the 8B shapes) the per-block prologue
  // and the serial merge cost more than the two kernel boundaries they save (H200,
  // 2026-12-03, bench_fused invariant/ .../one_wave_fusions; docs/fused-kernels.md).
  bool one_wave_fusions = false;
};

}  // namespace fusecheck::fused
