// FusedKvFp8: FusedLayer's KV cache in the fp8-kv recipes (docs/recipes.md, "fp8-kv"; the
// fused-cuda:fp8-kv* paths). Per layer: K and V caches of E4M3 codes, their FP32 scales
// and the counts reference/kv_fp8.h keeps, and the two ops that take the place of the bf16
// attention:
//  - append: q/k-norm+RoPE has left k_rope and v (bf16, the fused-v1 values) in the bf16
//    cache at positions start..start+n-1; calibrate (the first append after reset when
//    static, every append when dynamic: scale = amax / 448 x multiplier over all
//    sequences) and quantize those rows into the FP8 cache (kv_fp8.h); dynamic recipes
//    also record the scales per position, so attention reads each row with the scale it
//    was stored with, as the twin does (the first H200 run read every row with the latest
//    scale: rel L2 0.3-0.9 against the twin at decode);
//  - attention: decode and prefill alike, each query over the dequantized cache
//    (e4m3_value(code) * s in FP32, keys 0..its own position), as the emulated twin reads
//    its cache: the rows just appended are read back from FP8 too. Decode splits the
//    positions into 128-position chunks merged by a second kernel where the batch's query
//    heads make few blocks (kv_fp8_decode_chunk).
// Nothing here synchronizes: the ops can be captured in a CUDA graph; the path checks the
// scales (0, NaN, Inf are errors) after its stream synchronizes.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <utility>
#include <vector>

#include "harness/core/model_spec.h"
#include "kernels/common/device_buffer.h"
#include "kernels/common/device_op.h"
#include "kernels/fused/kv_fp8.h"
#include "reference/recipe.h"

namespace fusecheck::fused {

class FusedKvFp8 {
 public:
  FusedKvFp8(const ModelSpec& spec, const KvCacheFp8& cfg);

  const KvCacheFp8& config() const { return cfg_; }
  // New sequences: caches poisoned (NaN codes), counters zeroed, no scale yet.
  void reset(int n_layers, int batch, int capacity);

  // Quantizes the n new rows of each sequence that the bf16 caches hold at start.. into
  // layer `layer`'s FP8 caches. Static scales are found by the first append op made after
  // reset (at its build, so build each call's ops in call order).
  cuda::DeviceOp append_op(int layer, int n, int start, const __nv_bfloat16* k_bf16,
                           const __nv_bfloat16* v_bf16);
  // Attention of the n queries of each sequence (q: [batch * n x q_width], positions
  // start..) over positions 0..start+n-1 of the FP8 caches; out: [batch * n x q_width].
  cuda::DeviceOp attention_op(int layer, int n, int start, const __nv_bfloat16* q, __nv_bfloat16* out);

  // Timing at a KV length never written: calibrates every layer over all `capacity`
  // positions of the bf16 caches and quantizes them all (static scales then fixed).
  void fill_from(int layer, const __nv_bfloat16* k_bf16, const __nv_bfloat16* v_bf16, cudaStream_t stream);

  // Host copies (synchronous): the scales in use (K, V) and the counts since reset.
  std::pair<std::vector<float>, std::vector<float>> scales(int layer) const;
  std::pair<KvFp8Counters, KvFp8Counters> counters(int layer) const;
  const __nv_fp8_e4m3* k_cache(int layer) const { return layers_[layer].k.data(); }
  const __nv_fp8_e4m3* v_cache(int layer) const { return layers_[layer].v.data(); }
  const KvFp8Layout& layout() const { return layout_; }

 private:
  struct Layer {
    cuda::DeviceBuffer<__nv_fp8_e4m3> k, v;
    cuda::DeviceBuffer<float> k_scales, v_scales;
    cuda::DeviceBuffer<float> k_pos_scales, v_pos_scales;  // dynamic only: [capacity x groups]
    cuda::DeviceBuffer<unsigned int> amax;        // 2 x scale_count(): calibration scratch
    cuda::DeviceBuffer<KvFp8Counters> counters;   // K, V
    bool calibrated = false;
  };
  ModelSpec spec_;
  KvCacheFp8 cfg_;
  KvFp8Layout layout_;
  std::vector<Layer> layers_;
  cuda::DeviceBuffer<float> ones_;     // drop_scale_on_load: what a kernel never given the scales uses
  cuda::DeviceBuffer<float> partial_;  // a split decode's chunk partials (kv_fp8_decode_chunk)
};

}  // namespace fusecheck::fused
