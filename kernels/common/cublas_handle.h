// RAII cuBLAS handle bound to one stream, with its math mode set explicitly at creation
// so that no path inherits a library default (TF32 in particular) by accident.
#pragma once

#include <utility>

#include "kernels/common/cuda_check.h"

namespace fusecheck::cuda {

class CublasHandle {
 public:
  // DEFAULT_MATH never picks TF32 for FP32 GEMMs (that needs TF32_TENSOR_OP_MATH or an
  // explicit FAST_TF32 compute type); disallowing reduced-precision reductions keeps the
  // split-K partial sums of bf16/fp16 GEMMs in FP32, which the recipes assume.
  explicit CublasHandle(cudaStream_t stream = nullptr,
                        cublasMath_t mode = static_cast<cublasMath_t>(
                            CUBLAS_DEFAULT_MATH | CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION)) {
    CUBLAS_CHECK(cublasCreate(&h_));
    CUBLAS_CHECK(cublasSetStream(h_, stream));
    CUBLAS_CHECK(cublasSetMathMode(h_, mode));
  }
  ~CublasHandle() {
    if (h_) cublasDestroy(h_);
  }
  CublasHandle(const CublasHandle&) = delete;
  CublasHandle& operator=(const CublasHandle&) = delete;
  CublasHandle(CublasHandle&& o) noexcept : h_(std::exchange(o.h_, nullptr)) {}
  CublasHandle& operator=(CublasHandle&& o) noexcept {
    if (this != &o) {
      if (h_) cublasDestroy(h_);
      h_ = std::exchange(o.h_, nullptr);
    }
    return *this;
  }
  cublasHandle_t get() const { return h_; }
  operator cublasHandle_t() const { return h_; }
  void set_stream(cudaStream_t s) { CUBLAS_CHECK(cublasSetStream(h_, s)); }

 private:
  cublasHandle_t h_ = nullptr;
};

}  // namespace fusecheck::cuda
