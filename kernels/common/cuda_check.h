// Checked CUDA and cuBLAS calls: every failure throws CudaError with file, line and the
// call's text. The *_NOTHROW variants (for destructors) print and carry on.
#pragma once

#include <cstdio>
#include <stdexcept>
#include <string>

#include <cublas_v2.h>
#include <cuda_runtime.h>

namespace fusecheck::cuda {

class CudaError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

[[noreturn]] inline void throw_cuda(cudaError_t e, const char* call, const char* file, int line) {
  throw CudaError(std::string(file) + ":" + std::to_string(line) + ": " + call + " failed: " +
                  cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")");
}

[[noreturn]] inline void throw_cublas(cublasStatus_t s, const char* call, const char* file, int line) {
  throw CudaError(std::string(file) + ":" + std::to_string(line) + ": " + call +
                  " failed: " + cublasGetStatusName(s) + " (" + cublasGetStatusString(s) + ")");
}

}  // namespace fusecheck::cuda

#define CUDA_CHECK(call)                                                          \
  do {                                                                            \
    cudaError_t fc_err_ = (call);                                                 \
    if (fc_err_ != cudaSuccess) ::fusecheck::cuda::throw_cuda(fc_err_, #call, __FILE__, __LINE__); \
  } while (0)

// After every kernel launch: catches launch-configuration errors at once.
#define CUDA_CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())

#define CUBLAS_CHECK(call)                                                        \
  do {                                                                            \
    cublasStatus_t fc_st_ = (call);                                               \
    if (fc_st_ != CUBLAS_STATUS_SUCCESS) ::fusecheck::cuda::throw_cublas(fc_st_, #call, __FILE__, __LINE__); \
  } while (0)

#define CUDA_CHECK_NOTHROW(call)                                                  \
  do {                                                                            \
    cudaError_t fc_err_ = (call);                                                 \
    if (fc_err_ != cudaSuccess)                                                   \
      std::fprintf(stderr, "%s:%d: %s failed: %s\n", __FILE__, __LINE__, #call,   \
                   cudaGetErrorName(fc_err_));                                    \
  } while (0)
