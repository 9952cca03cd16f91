// register_builtin_paths: the CPU paths, and the names of the CUDA paths, whose code lives
// in libfusecheck_cuda.so and is loaded only when one of them is created
// (harness/paths/plugin_loader.h): commands that run no CUDA path never load CUDA.
#include <mutex>

#include "harness/core/path_registry.h"
#include "harness/paths/plugin_loader.h"
#include "reference/recipe.h"
#include "reference/register.h"

namespace fusecheck {

namespace {
PathFactory cuda_factory(const std::string& name) {
  return [name](const Checkpoint& ckpt, const PathOptions& opts) { return make_builtin_cuda_path(name, ckpt, opts); };
}
}  // namespace

void register_builtin_paths() {
  static std::once_flag once;
  std::call_once(once, [] {
    register_cpu_paths();
    const std::string origin = "built in (libfusecheck_cuda.so)";
    register_path({.name = "ref32-cuda", .device = "cuda",
                   .description = "FP32 decoder on the GPU, every tap; cuBLAS GEMMs with TF32 off",
                   .factory = cuda_factory("ref32-cuda"), .origin = origin});
    register_path({.name = "ref64-cuda", .device = "cuda",
                   .description = "FP64 reference on the GPU (the truth at GPU speed): cuBLAS DGEMM, FP64 kernels, every tap",
                   .factory = cuda_factory("ref64-cuda"), .origin = origin});
    register_path({.name = "standard-cuda", .device = "cuda",
                   .description = "bf16 storage, one kernel per op, cuBLAS bf16 GEMMs (FP32 accumulation), hf-bf16 recipe",
                   .factory = cuda_factory("standard-cuda"), .recipe = "hf-bf16", .origin = origin});
    register_path({.name = "fused-cuda", .device = "cuda",
                   .description = "fused decoder-layer kernels, fused-v1 recipe (kernels/fused)",
                   .factory = cuda_factory("fused-cuda"), .recipe = "fused-v1",
                   .taps = {Tap::q, Tap::k, Tap::v, Tap::q_rope, Tap::k_rope, Tap::attn, Tap::o_proj,
                            Tap::resid_mid, Tap::act, Tap::resid_out},
                   .origin = origin});
    register_path({.name = "fused-cuda:batch-invariant", .device = "cuda",
                   .description = "fused-cuda in its batch-invariant mode: one GEMM algorithm per shape for every "
                                  "batch, fixed split-KV chunks",
                   .factory = cuda_factory("fused-cuda:batch-invariant"), .recipe = "fused-v1", .role = "fused",
                   .taps = {Tap::q, Tap::k, Tap::v, Tap::q_rope, Tap::k_rope, Tap::attn, Tap::o_proj,
                            Tap::resid_mid, Tap::act, Tap::resid_out},
                   .origin = origin});
    // fused-cuda with an FP8 E4M3 KV cache, one path per fp8-kv recipe (its emulated twin:
    // emulated-cpu --recipe of the same name); refused below compute capability 8.9.
    for (const char* recipe : {"fp8-kv", "fp8-kv-per-head", "fp8-kv-dynamic", "fp8-kv-per-head-dynamic"}) {
      const std::string name = std::string("fused-cuda:") + recipe;
      register_path({.name = name, .device = "cuda",
                     .description = "fused-cuda with the " + std::string(recipe) + " KV cache: " +
                                    find_recipe(recipe).description + " (sm_89+)",
                     .factory = cuda_factory(name), .recipe = recipe, .role = "fused",
                     .taps = {Tap::q, Tap::k, Tap::v, Tap::q_rope, Tap::k_rope, Tap::attn, Tap::o_proj,
                              Tap::resid_mid, Tap::act, Tap::resid_out},
                     .origin = origin});
    }
    // fused-cuda with FP8 E4M3 GEMMs and the fp8-kv cache (twin: emulated-cpu --recipe
    // fp8-w8a8); refused below compute capability 8.9.
    register_path({.name = "fused-cuda:fp8-w8a8", .device = "cuda",
                   .description = "fused-cuda with FP8 E4M3 GEMMs (FP8 GEMV kernels at decode) and the fp8-kv cache: " +
                                  find_recipe("fp8-w8a8").description + " (sm_89+)",
                   .factory = cuda_factory("fused-cuda:fp8-w8a8"), .recipe = "fp8-w8a8", .role = "fused",
                   .taps = {Tap::q, Tap::k, Tap::v, Tap::q_rope, Tap::k_rope, Tap::attn, Tap::o_proj,
                            Tap::resid_mid, Tap::act, Tap::resid_out},
                   .origin = origin});
  });
}

}  // namespace fusecheck
