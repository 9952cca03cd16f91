// standard-cuda: CudaDecoderPath<bf16> with HF's FP32-angle RoPE table cast to bf16.
#include "kernels/standard/standard_path.h"

#include "harness/core/error.h"
#include "kernels/standard/cuda_path.h"

namespace fusecheck {

std::unique_ptr<Path> make_standard_cuda_path(const Checkpoint& ckpt, const PathOptions& opts,
                                              const StandardCudaOptions& extra) {
  if (!opts.recipe.empty() && opts.recipe != "hf-bf16") {
    throw InputError("", "standard-cuda follows the hf-bf16 recipe only (asked for '" + opts.recipe + "')");
  }
  cuda::CudaPathConfig cfg;
  cfg.name = "standard-cuda";
  cfg.engine.rope_angles = cuda::RopeAngles::fp32;
  cfg.engine.device = opts.device_index;
  cfg.poison_activations = extra.poison_activations;
  return std::make_unique<cuda::CudaDecoderPath<__nv_bfloat16>>(ckpt, cfg);
}

}  // namespace fusecheck
