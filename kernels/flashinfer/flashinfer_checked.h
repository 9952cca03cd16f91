// flashinfer_checked: runs a FlashInfer call (a launcher or a planner returning
// cudaError_t) so that its cudaError_t, a FlashInfer exception, or a launch error left
// behind each becomes one std::runtime_error naming the call. Host only; shared by the
// .cu files of kernels/flashinfer.
#pragma once

#include <cuda_runtime.h>

#include <exception>
#include <stdexcept>
#include <string>

namespace fusecheck::flashinfer_ops {

template <class F>
void checked(const char* what, F&& call) {
  cudaError_t status;
  try {
    status = call();
  } catch (const std::exception& e) {
    throw std::runtime_error(std::string("FlashInfer ") + what + ": " + e.what());
  }
  if (status == cudaSuccess) status = cudaGetLastError();
  if (status != cudaSuccess) {
    throw std::runtime_error(std::string("FlashInfer ") + what + ": " + cudaGetErrorString(status));
  }
}

}  // namespace fusecheck::flashinfer_ops
