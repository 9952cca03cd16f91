// Seeded random fills on the device (counter-based hash: the same seed gives the same
// values on any launch shape), for benchmark weights and activations and kernel tests.
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_runtime.h>

namespace fusecheck::cuda {

// Uniform in [lo, hi); bf16 values are rounded once from the float draw.
void fill_uniform(float* p, std::size_t n, std::uint64_t seed, float lo, float hi,
                  cudaStream_t s = nullptr);
void fill_uniform(__nv_bfloat16* p, std::size_t n, std::uint64_t seed, float lo, float hi,
                  cudaStream_t s = nullptr);

}  // namespace fusecheck::cuda
