// Registers the CUDA paths by name (see register.h to add your own).
#include "kernels/register.h"

#include "harness/core/path_registry.h"
#include "kernels/fused/fused_path.h"
#include "kernels/ref32/ref32_path.h"
#include "kernels/standard/standard_path.h"

namespace fusecheck {
void register_cuda_paths() {
  register_path({"ref32-cuda", "cuda",
                 "FP32 decoder on the GPU, every tap; cuBLAS GEMMs with TF32 off",
                 [](const Checkpoint& c, const PathOptions& o) { return make_ref32_cuda_path(c, o); }});
  register_path({"standard-cuda", "cuda",
                 "bf16 storage, one kernel per op, cuBLAS bf16 GEMMs (FP32 accumulation), hf-bf16 recipe",
                 [](const Checkpoint& c, const PathOptions& o) { return make_standard_cuda_path(c, o); }});
  register_path({"fused-cuda", "cuda", "fused decoder-layer kernels, fused-v1 recipe (kernels/fused)", make_fused_cuda_path});
}
}  // namespace fusecheck
