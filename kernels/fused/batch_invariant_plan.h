// BatchInvariantPlan: the fixed shapes of fused-cuda's batch-invariant mode
// (FusedLayer::set_batch_invariant, docs/fused-kernels.md "Batch-invariant mode"). Plain host
// header: fused_path.h (no CUDA includes) takes one too.
#pragma once

namespace fusecheck::fused {

// Defaults: 128-position decode chunks (batch 1 on the 8B shapes at KV 1024: 64 blocks;
// batch 64: 4096), GEMM algorithms chosen at 64 rows for decode and the head (the largest
// decode batch of the targets; every decode batch is memory-bound) and at 512 rows for
// prefill (the prefill target), without split-K (cuBLASLt does not document every split-K
// reduction scheme's order; gemm_split_k allows a fixed split count, for the benchmarks'
// and the tests' comparison).
struct BatchInvariantPlan {
  int decode_chunk = 128;
  int decode_gemm_rows = 64;
  int prefill_gemm_rows = 512;
  bool gemm_split_k = false;
};

}  // namespace fusecheck::fused
