// launch_w8a8_epilogue_residual (w8a8_residual.h): dequantize, add the residual, round once.
#include "kernels/fused/w8a8_residual.h"

#include <algorithm>
#include <stdexcept>

#include "kernels/common/cuda_check.h"
#include "kernels/fused/fused_common.cuh"

namespace fusecheck::fused {

namespace {

constexpr int kThreads = 256;

// __fmul_rn / __fadd_rn: each operation rounds once in FP32, as the twin's separate
// operations (a_s * (w_s * acc), then resid_mid + down).
__global__ void __launch_bounds__(kThreads)
    epilogue_residual_kernel(const float* acc, const float* a_scales, const float* w_scales, const bf16* resid,
                             int M, int N, bf16* out) {
  const long count = static_cast<long>(M) * N;
  for (long i = blockIdx.x * static_cast<long>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<long>(gridDim.x) * blockDim.x) {
    const int m = static_cast<int>(i / N), n = static_cast<int>(i % N);
    const float down = __fmul_rn(a_scales[m], __fmul_rn(w_scales[n], acc[i]));
    out[i] = round_bf16(__fadd_rn(__bfloat162float(resid[i]), down));
  }
}

}  // namespace

void launch_w8a8_epilogue_residual(const float* acc, const float* a_scales, const float* w_scales, const bf16* resid,
                                   int M, int N, bf16* out, cudaStream_t stream) {
  if (M <= 0 || N <= 0) throw std::invalid_argument("w8a8 residual epilogue: M and N must be positive");
  if (!resid || resid == out) throw std::invalid_argument("w8a8 residual epilogue: needs a residual other than out");
  const long count = static_cast<long>(M) * N;
  const int blocks = static_cast<int>(std::min<long>((count + kThreads - 1) / kThreads, 8192));
  epilogue_residual_kernel<<<blocks, kThreads, 0, stream>>>(acc, a_scales, w_scales, resid, M, N, out);
  CUDA_CHECK_LAUNCH();
}

}  // namespace fusecheck::fused
