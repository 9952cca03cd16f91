// Kernel 1: residual add + RMSNorm (see add_rmsnorm.h for the rounding points).
#include "kernels/fused/add_rmsnorm.h"

#include "kernels/common/cuda_check.h"
#include "kernels/fused/fused_common.cuh"

namespace fusecheck::fused {
namespace {

constexpr int kThreads = kRmsThreads;  // the order the skinny GEMM's folded norm repeats

__global__ void __launch_bounds__(kThreads)
add_rmsnorm_kernel(const bf16* __restrict__ delta, const bf16* __restrict__ residual,
                   const bf16* __restrict__ weight, float eps, int n,
                   bf16* __restrict__ resid_out, bf16* __restrict__ normed) {
  __shared__ float scratch[32];
  pdl_wait();
  pdl_trigger();
  const long row = blockIdx.x;
  const bf16* x = residual + row * n;
  const bf16* d = delta ? delta + row * n : nullptr;
  // The FP32 sum (recomputed in the second pass, bit-identically, rather than kept). The
  // order is rms_partial's (fused_common.cuh), which the skinny GEMM's folded norm repeats.
  float sum_squares = 0.f;
  for (int i = threadIdx.x; i < n; i += kThreads) {
    const float r = rms_resid(x, d, i);
    if (d) resid_out[row * n + i] = round_bf16(r);
    sum_squares = fmaf(r, r, sum_squares);
  }
  const float scale = inv_rms(block_sum(sum_squares, scratch), n, eps);
  for (int i = threadIdx.x; i < n; i += kThreads) {
    normed[row * n + i] = rms_apply(rms_resid(x, d, i), scale, __bfloat162float(weight[i]));
  }
}

}  // namespace

void launch_add_rmsnorm(const bf16* delta, const bf16* residual, const bf16* weight,
                        float eps, int rows, int n, bf16* resid_out, bf16* normed,
                        cudaStream_t stream) {
  if (rows <= 0) return;
  launch_pdl(add_rmsnorm_kernel, rows, kThreads, 0, stream, delta, residual, weight, eps, n,
             resid_out, normed);
}

}  // namespace fusecheck::fused
