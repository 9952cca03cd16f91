// The `fused-cuda` path: the fused decoder-layer kernels of kernels/fused behind the Path
// interface. Plain host header (no CUDA includes): the registry and host code include it.
#pragma once

#include <memory>

#include "harness/core/path.h"

namespace fusecheck {

class Checkpoint;

// Uploads the checkpoint's weights to device `opts.device_index` as bf16 (rounded once
// when stored in another format, as fused-v1's `weights` point says).
std::unique_ptr<Path> make_fused_cuda_path(const Checkpoint& ckpt, const PathOptions& opts);

}  // namespace fusecheck
