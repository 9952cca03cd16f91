// standard-cuda: bf16 storage, one kernel per op, cuBLAS bf16 GEMMs with FP32
// accumulation, following the hf-bf16 recipe (docs/recipes.md). Plain header.
#pragma once

#include <memory>

#include "harness/core/checkpoint.h"
#include "harness/core/path.h"

namespace fusecheck {

struct StandardCudaOptions {
  bool poison_activations = false;  // NaN-fill tap buffers before each layer (tests)
};

std::unique_ptr<Path> make_standard_cuda_path(const Checkpoint& ckpt, const PathOptions& opts,
                                              const StandardCudaOptions& extra = {});

}  // namespace fusecheck
