// Kernel 5b of the fused path (prefill, fused-v1 K6's activation): follows the single
// gate/up GEMM over the concatenated [gate; up] weights, which writes FP32 (gate and up
// are not rounding points of the recipe). act = bf16(silu(gate) * up), one rounding.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

namespace fusecheck::fused {

// gate_up: [rows x 2I] (gate columns, then up columns); act: [rows x I].
void launch_silu_mul(const float* gate_up, int rows, int I, __nv_bfloat16* act,
                     cudaStream_t stream);

}  // namespace fusecheck::fused
