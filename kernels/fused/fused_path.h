// The `fused-cuda` path: the fused decoder-layer kernels of kernels/fused behind the Path
// interface. Plain host header (no CUDA includes): the registry and host code include it.
#pragma once

#include <memory>
#include <optional>

#include "harness/core/path.h"
#include "kernels/fused/batch_invariant_plan.h"

namespace fusecheck {

class Checkpoint;

// The batch-invariant variant's path name: the same kernels and recipe (fused-v1) with
// one route and fixed reduction shapes for every batch (fused_layer.h, docs/fused-kernels.md).
inline constexpr const char* kFusedBatchInvariantName = "fused-cuda:batch-invariant";

// Uploads the checkpoint's weights to device `opts.device_index` as bf16 (rounded once
// when stored in another format, as fused-v1's `weights` point says). With `invariant`:
// the fused-cuda:batch-invariant path on that plan (instances of both share one upload).
std::unique_ptr<Path> make_fused_cuda_path(const Checkpoint& ckpt, const PathOptions& opts,
                                           std::optional<fused::BatchInvariantPlan> invariant = std::nullopt);

}  // namespace fusecheck
