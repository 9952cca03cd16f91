// Kernel 5b: SiLU(gate) * up for prefill (see silu_mul.h).
#include "kernels/fused/silu_mul.h"

#include <algorithm>

#include "kernels/common/cuda_check.h"
#include "kernels/fused/fused_common.cuh"

namespace fusecheck::fused {
namespace {

__global__ void silu_mul_kernel(const float* __restrict__ gate_up, long total, int I,
                                bf16* __restrict__ act) {
  pdl_wait();
  pdl_trigger();
  for (long i = blockIdx.x * static_cast<long>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<long>(gridDim.x) * blockDim.x) {
    const long row = i / I, col = i % I;
    const float g = gate_up[row * 2 * I + col];
    const float u = gate_up[row * 2 * I + I + col];
    act[i] = round_bf16(silu(g) * u);
  }
}

}  // namespace

void launch_silu_mul(const float* gate_up, int rows, int I, bf16* act, cudaStream_t stream) {
  const long total = static_cast<long>(rows) * I;
  if (total <= 0) return;
  const int threads = 256;
  const long blocks = std::min<long>((total + threads - 1) / threads, 132L * 16);
  launch_pdl(silu_mul_kernel, static_cast<unsigned>(blocks), threads, 0, stream, gate_up, total, I,
             act);
}

}  // namespace fusecheck::fused
