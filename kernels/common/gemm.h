// cuBLAS GEMMs in the layout every path uses: activations X [rows x in] and weights
// W [out x in] row-major (HF order), Y = X W^T [rows x out] row-major, FP32 accumulation.
// The compute type is always explicit so that TF32 is used only when asked for.
#pragma once

#include <cublas_v2.h>
#include <cuda_bf16.h>

namespace fusecheck::cuda {

enum class Fp32Gemm {
  strict,  // CUBLAS_COMPUTE_32F: true FP32 products (the reference)
  tf32,    // CUBLAS_COMPUTE_32F_FAST_TF32: tensor cores with 10-bit mantissas (a what-if)
};

// beta = 1 adds the values already in y (a broadcast bias, say) to the FP32 accumulator
// before the single output rounding.
void gemm_xwt(cublasHandle_t h, int rows, int out, int in, const float* x, const float* w,
              float* y, Fp32Gemm mode = Fp32Gemm::strict, float beta = 0.0f);
// bf16 operands and output, FP32 accumulation, one rounding of each output to bf16.
void gemm_xwt(cublasHandle_t h, int rows, int out, int in, const __nv_bfloat16* x,
              const __nv_bfloat16* w, __nv_bfloat16* y, float beta = 0.0f);

// FLOPs of one gemm_xwt call (a multiply-add counts 2).
inline double gemm_flops(double rows, double out, double in) { return 2.0 * rows * out * in; }

}  // namespace fusecheck::cuda
