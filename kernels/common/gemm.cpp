// Row-major Y = X W^T through column-major cuBLAS: in column-major terms Y^T (out x rows)
// = W^T-as-stored (in x out, transposed) times X^T-as-stored (in x rows).
#include "kernels/common/gemm.h"

#include "kernels/common/cuda_check.h"

namespace fusecheck::cuda {

namespace {
void gemm_ex(cublasHandle_t h, int rows, int out, int in, const void* x, const void* w, void* y,
             cudaDataType_t type, cublasComputeType_t compute, float beta) {
  const float alpha = 1.0f;
  CUBLAS_CHECK(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, out, rows, in, &alpha, w, type, in, x,
                            type, in, &beta, y, type, out, compute, CUBLAS_GEMM_DEFAULT));
}
}  // namespace

void gemm_xwt(cublasHandle_t h, int rows, int out, int in, const float* x, const float* w,
              float* y, Fp32Gemm mode, float beta) {
  gemm_ex(h, rows, out, in, x, w, y, CUDA_R_32F,
          mode == Fp32Gemm::tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F, beta);
}

void gemm_xwt(cublasHandle_t h, int rows, int out, int in, const __nv_bfloat16* x,
              const __nv_bfloat16* w, __nv_bfloat16* y, float beta) {
  gemm_ex(h, rows, out, in, x, w, y, CUDA_R_16BF, CUBLAS_COMPUTE_32F, beta);
}

}  // namespace fusecheck::cuda
