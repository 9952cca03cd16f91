// ref32-cuda: CudaDecoderPath<float> with strict FP32 GEMMs and FP64-angle RoPE tables
// (rounded once to FP32, like ref32-cpu).
#include "kernels/ref32/ref32_path.h"

#include "kernels/standard/cuda_path.h"

namespace fusecheck {

std::unique_ptr<Path> make_ref32_cuda_path(const Checkpoint& ckpt, const PathOptions& opts,
                                           const Ref32CudaOptions& extra) {
  cuda::CudaPathConfig cfg;
  cfg.name = extra.allow_tf32 ? "ref32-cuda-tf32" : "ref32-cuda";
  cfg.engine.fp32_gemm = extra.allow_tf32 ? cuda::Fp32Gemm::tf32 : cuda::Fp32Gemm::strict;
  cfg.engine.rope_angles = cuda::RopeAngles::fp64;
  cfg.engine.device = opts.device_index;
  cfg.poison_activations = extra.poison_activations;
  return std::make_unique<cuda::CudaDecoderPath<float>>(ckpt, cfg);
}

}  // namespace fusecheck
