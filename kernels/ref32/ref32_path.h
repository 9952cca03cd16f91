// ref32-cuda: the decoder in FP32 on the GPU with every tap (cuBLAS GEMMs with TF32 off,
// plain FP32 kernels). Plain header: host-only code can create the path without CUDA.
#pragma once

#include <memory>

#include "harness/core/checkpoint.h"
#include "harness/core/path.h"

namespace fusecheck {

struct Ref32CudaOptions {
  // What-if switch for tests: GEMMs on tensor cores in TF32 (10-bit mantissas). The
  // registered path never sets it.
  bool allow_tf32 = false;
  bool poison_activations = false;  // NaN-fill tap buffers before each layer (tests)
};

std::unique_ptr<Path> make_ref32_cuda_path(const Checkpoint& ckpt, const PathOptions& opts,
                                           const Ref32CudaOptions& extra = {});

}  // namespace fusecheck
