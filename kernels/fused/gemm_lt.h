// The tensor-core GEMM of the fused prefill path (and of decode batches too large for the
// GEMV kernels): cuBLASLt, bf16 operands, FP32 accumulation and FP32 epilogue math, with
// what the epilogue fuses done before the ONE rounding of the output:
//   Y = round(X . W^T [+ bias] [+ C])   C: the residual (beta = 1), bias: Qwen2 qkv bias.
// Y is bf16, or FP32 (no rounding) when the consumer fuses the rest (o_proj -> add+norm).
// Algorithms: by default the heuristic's first choice for each (M, N, K), so the kernel,
// its tiles and its split-K change with M. A fixed AlgoChoice (the batch-invariant mode of
// fused-cuda) takes the heuristic's first choice at M = AlgoChoice::rows, once per (N, K,
// epilogue, choice), and uses it for every M: one kernel, one tile shape and (split_k
// false, the default) no split-K reduction, so each output element is one thread block's
// fixed sequence of k-steps whatever the row count. cublasLtMatmulAlgoCheck must accept
// the algorithm at each M, else run throws (another algorithm would give other sums).
#pragma once

#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <map>
#include <tuple>

#include "kernels/common/device_buffer.h"

namespace fusecheck::fused {

// How LtGemm::run picks its algorithm (see above).
struct AlgoChoice {
  int rows = 0;          // 0: per (M, N, K); > 0: fixed, chosen at this many rows
  bool split_k = false;  // fixed only: split-K algorithms allowed (a fixed split count and
                         // reduction scheme; without, CUBLASLT_REDUCTION_SCHEME_NONE only)
};

class LtGemm {
 public:
  LtGemm();
  ~LtGemm();
  LtGemm(const LtGemm&) = delete;
  LtGemm& operator=(const LtGemm&) = delete;

  // X: [M x K] row-major bf16, W: [N x K] row-major bf16 (a weight as stored).
  // Y: [M x N] row-major; bf16 unless y_fp32. bias: [N] bf16 or null. residual: [M x N]
  // bf16 or null (requires bf16 Y; may not alias Y).
  void run(const __nv_bfloat16* X, const __nv_bfloat16* W, int M, int N, int K, void* Y,
           bool y_fp32, const __nv_bfloat16* bias, const __nv_bfloat16* residual,
           cudaStream_t stream, AlgoChoice choice = {});

 private:
  struct Plan {
    cublasLtMatmulDesc_t op = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
    cublasLtMatmulAlgo_t algo{};
  };
  // M, N, K, fp32 Y, bias, residual, AlgoChoice rows, AlgoChoice split_k
  using Key = std::tuple<int, int, int, bool, bool, bool, int, bool>;
  Plan& plan(const Key& key);
  // The heuristic's first algorithm for `key` at M = rows (op and a as in the plan);
  // restricted to no split-K reduction unless split_k.
  cublasLtMatmulAlgo_t heuristic(const Key& key, cublasLtMatmulDesc_t op, cublasLtMatrixLayout_t a, int rows,
                                 bool split_k);

  cublasLtHandle_t handle_ = nullptr;
  cuda::DeviceBuffer<unsigned char> workspace_;
  std::map<Key, Plan> plans_;
  std::map<Key, cublasLtMatmulAlgo_t> fixed_algos_;  // fixed choices, keyed with M = 0
};

}  // namespace fusecheck::fused
