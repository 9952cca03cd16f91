// The tensor-core GEMM of the fused prefill path (and of decode batches too large for the
// GEMV kernels): cuBLASLt, bf16 operands, FP32 accumulation and FP32 epilogue math, with
// what the epilogue fuses done before the ONE rounding of the output:
//   Y = round(X . W^T [+ bias] [+ C])   C: the residual (beta = 1), bias: Qwen2 qkv bias.
// Y is bf16, or FP32 (no rounding) when the consumer fuses the rest (o_proj -> add+norm).
#pragma once

#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <map>
#include <tuple>

#include "kernels/common/device_buffer.h"

namespace fusecheck::fused {

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
           cudaStream_t stream);

 private:
  struct Plan {
    cublasLtMatmulDesc_t op = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
    cublasLtMatmulAlgo_t algo{};
  };
  using Key = std::tuple<int, int, int, bool, bool, bool>;
  Plan& plan(const Key& key);

  cublasLtHandle_t handle_ = nullptr;
  cuda::DeviceBuffer<unsigned char> workspace_;
  std::map<Key, Plan> plans_;
};

}  // namespace fusecheck::fused
