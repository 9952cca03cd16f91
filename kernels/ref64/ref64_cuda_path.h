// ref64-cuda: the FP64 reference on the GPU, the same model as ref64-cpu (weights as
// stored, dequantized exactly, no bf16 rounding; every tap) in FP64 kernels and cuBLAS
// DGEMM. ref64-cpu stays the CPU oracle; `reference: {ref64: true}` with --device cuda
// runs this one. Plain header: host-only code can create the path without CUDA.
#pragma once

#include <memory>

#include "harness/core/checkpoint.h"
#include "harness/core/path.h"

namespace fusecheck {

struct Ref64CudaOptions {
  bool poison_activations = false;  // NaN-fill every tap buffer before each layer (tests)
};

std::unique_ptr<Path> make_ref64_cuda_path(const Checkpoint& ckpt, const PathOptions& opts,
                                           const Ref64CudaOptions& extra = {});

}  // namespace fusecheck
