// The `fused-cuda` path: the fused decoder-layer kernels of kernels/fused behind the Path
// interface. Plain host header (no CUDA includes): the registry and host code include it.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "harness/core/path.h"
#include "kernels/fused/batch_invariant_plan.h"
#include "reference/recipe.h"

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

// The fused-cuda:fp8-kv* paths: fused-cuda whose KV cache is FP8 E4M3 as the fp8-kv
// recipe `recipe` says (fp8-kv, fp8-kv-per-head, fp8-kv-dynamic, fp8-kv-per-head-dynamic;
// the path is kFusedFp8KvPrefix + recipe, its twin emulated-cpu --recipe `recipe`).
// `kv`, when given, replaces the recipe's KvCacheFp8 (the scale delivery check's multiplier
// and dropped scales). InputError on a device below compute capability 8.9, or when
// `recipe` is not an fp8-kv recipe. Its headroom() reports k_cache.fp8 and v_cache.fp8 as
// emulated-cpu does (and through libfusecheck_cuda.so's ABI 1.4 headroom entry).
inline constexpr const char* kFusedFp8KvPrefix = "fused-cuda:";
std::unique_ptr<Path> make_fused_cuda_fp8_kv_path(const Checkpoint& ckpt, const PathOptions& opts,
                                                  const std::string& recipe,
                                                  std::optional<KvCacheFp8> kv = std::nullopt);

// fused-cuda:fp8-w8a8 (its twin: emulated-cpu --recipe fp8-w8a8): every projection on E4M3
// weights with per-output-row scales (quantized on the device at upload, no bf16 copies),
// inputs quantized per token inside the FP8 GEMV kernels at decode (fp8_gemv.h) and by
// w8a8.h's kernels around cuBLASLt's FP8 GEMM on the GEMM route; attention on the fp8-kv
// cache (static per-tensor scales). InputError on a device below compute capability 8.9;
// a GEMM input row holding NaN or Inf is an InputError naming the layer and the GEMM.
// headroom(): `<gemm>.weight.fp8` and the caches' counts, as the twin names them.
inline constexpr const char* kFusedW8a8Name = "fused-cuda:fp8-w8a8";
inline constexpr const char* kFusedW8a8Recipe = "fp8-w8a8";
std::unique_ptr<Path> make_fused_cuda_w8a8_path(const Checkpoint& ckpt, const PathOptions& opts);

}  // namespace fusecheck
