// FusedLayer: the fused decoder layer of the `fused-cuda` path, as a list of device ops
// over bf16 buffers. It owns the layers' device weights (bf16, in the fused layouts: q|k|v
// concatenated, gate|up concatenated), the KV caches, the RoPE table and the activation
// buffers, and it picks the route for the shape:
//  - GEMV route (batch*n <= kGemvRouteMaxRows rows): norm+QKV GEMV, q/k-norm+RoPE, attention,
//    o_proj GEMV (+residual), add+norm+gate/up+SwiGLU dual GEMV, down GEMV+residual
//    (6 kernels; 5 where decode folds the RoPE into the attention, see below; plus a
//    combine kernel where the split-KV grid exceeds about one wave).
//  - GEMM route: RMSNorm prologue, cuBLASLt QKV (+bias epilogue), q/k-norm+RoPE,
//    attention, cuBLASLt o_proj, residual add+RMSNorm, cuBLASLt gate|up (FP32 out),
//    SiLU*up, cuBLASLt down (+residual via beta = 1).
// Decode (n == 1, either route) where the split-KV grid is about one wave (batch 1 on
// the 8B models): q/k-norm+RoPE and the KV append are folded into the attention kernel
// (one op, "qk_norm+rope+attention(split-kv)"); FUSECHECK_FUSED_ROPE_FOLD=0 / all fold
// never / at every decode step (A/B timing, decode_rope_fold_mode()).
// Both routes follow one rounding recipe, fused-v1 (docs/recipes.md, docs/fused-kernels.md).
// Batch-invariant mode (set_batch_invariant; the fused-cuda:batch-invariant path): one
// route for every row count, so a sequence's bits do not depend on the batch around it:
// the GEMM route always: decode calls on the skinny tensor-core GEMM (skinny_gemm.h, its
// order fixed per (N, K); gate/up with the SwiGLU in its epilogue) when the plan asks for it
// (skinny_decode) and K is a multiple of 8, every other GEMM on the cuBLASLt algorithm fixed
// per (N, K) at BatchInvariantPlan's rows (decode calls and the head at one, prefill calls at
// the other; no split-K unless the plan allows it), decode attention on fixed chunks merged by the combine kernel, q/k-norm+RoPE as
// its own kernel (not folded: where it folds depends on the grid, i.e. on the batch, unless
// FUSECHECK_FUSED_ROPE_FOLD=all). Norms, RoPE, SwiGLU and prefill attention are row-local
// already (one block per row, token or 64-query tile at absolute key positions).
// FP8 KV cache (set_kv_fp8; the fused-cuda:fp8-kv* paths): q/k-norm+RoPE writes the bf16
// cache as always, never folded into attention; an append op quantizes the new rows into
// E4M3 caches and attention reads those (fused_kv_fp8.h). Without it, no op changes.
// FP8 GEMMs (set_w8a8 after quantize_weights_w8a8; the fused-cuda:fp8-w8a8 path, recipe
// fp8-w8a8, docs/recipes.md): every projection on E4M3 weights with per-output-row scales,
// its input quantized per token. GEMV route: fp8_gemv.h's four fused forms (the same op
// boundaries as bf16). GEMM route: attn_norm, then per GEMM row quantization + cuBLASLt FP8
// + epilogue (w8a8.h), add+mlp_norm, SwiGLU, and the residual add after down; where cuBLASLt
// refuses the shapes (K or N not a multiple of 16: the tiny test models) the GEMV forms in
// groups of kMaxGemvTokens rows instead. Attention: the fp8-kv cache (set_kv_fp8 required).
// Used by FusedPath and by the benchmarks (which fill the weights with seeded random data).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "harness/core/model_spec.h"
#include "harness/core/path.h"
#include "kernels/common/device_buffer.h"
#include "kernels/common/device_op.h"
#include "kernels/fused/batch_invariant_plan.h"
#include "kernels/fused/w8a8.h"

namespace fusecheck {
struct KvCacheFp8;
}

namespace fusecheck::fused {

class LtGemm;
class SkinnyGemm;
class FusedKvFp8;
struct RopeArgs;

// Token rows up to which a layer call takes the GEMV route. Measured on an H200
// (bench_fused, docs/fused-kernels.md): at 8 rows the CUDA-core GEMV is ALU-bound (377 us
// vs 171 us for the cuBLASLt route on llama-3-8b); at 1 row it is 15% faster than it.
inline constexpr int kGemvRouteMaxRows = 2;

struct FusedLayerWeights {
  cuda::DeviceBuffer<__nv_bfloat16> attn_norm;   // [hidden]
  cuda::DeviceBuffer<__nv_bfloat16> w_qkv;       // [(q_width + 2 kv_width) x hidden]
  cuda::DeviceBuffer<__nv_bfloat16> b_qkv;       // [q_width + 2 kv_width] (Qwen2) or empty
  cuda::DeviceBuffer<__nv_bfloat16> q_norm;      // [head_dim] (Qwen3) or empty
  cuda::DeviceBuffer<__nv_bfloat16> k_norm;
  cuda::DeviceBuffer<__nv_bfloat16> w_o;         // [hidden x q_width]
  cuda::DeviceBuffer<__nv_bfloat16> mlp_norm;    // [hidden]
  cuda::DeviceBuffer<__nv_bfloat16> w_gate_up;   // [2 intermediate x hidden]
  cuda::DeviceBuffer<__nv_bfloat16> w_down;      // [hidden x intermediate]
  // fp8-w8a8 (quantize_weights_w8a8): the four projections in E4M3, bf16 copies released.
  Fp8Weight qkv8, o8, gate_up8, down8;
};

// Quantizes w's four projections to E4M3 per output row on the device (w8a8.h's
// quantize_weight_e4m3; InputError naming `layer` and the projection on NaN or Inf), pads
// rows to 16 codes where K is not a multiple of 16 (fp8_gemv.h), and releases the bf16
// projections. Synchronizes `stream`.
void quantize_weights_w8a8(FusedLayerWeights& w, int layer, cudaStream_t stream);

// The GEMMs of an fp8-w8a8 layer call, in order (the row checks' names).
inline constexpr int kW8a8Gemms = 4;
inline constexpr const char* kW8a8GemmNames[kW8a8Gemms] = {"q|k|v input (attn_norm)", "o_proj input (attn)",
                                                           "gate|up input (mlp_norm)", "down input (act)"};

class FusedLayer {
 public:
  explicit FusedLayer(const ModelSpec& spec);
  ~FusedLayer();

  const ModelSpec& spec() const { return spec_; }
  std::vector<FusedLayerWeights>& weights() { return *weights_; }
  // The weights as a shared handle: instances of a path on one checkpoint share one upload.
  std::shared_ptr<std::vector<FusedLayerWeights>> shared_weights() const { return weights_; }
  void share_weights(std::shared_ptr<std::vector<FusedLayerWeights>> w) { weights_ = std::move(w); }
  // Allocates weights for `n_layers` layers filled with seeded random values (benchmarks).
  void init_random_weights(int n_layers, std::uint64_t seed, cudaStream_t stream);

  // New sequences: KV caches for every layer, RoPE table for `capacity` positions.
  void reset(int batch, int capacity);
  int batch() const { return batch_; }
  int capacity() const { return capacity_; }
  // Fills every KV cache with seeded random values (timing at a KV length never written).
  void randomize_caches(std::uint64_t seed, cudaStream_t stream);
  // Fills input() for `rows` rows with seeded random values.
  void randomize_input(int rows, std::uint64_t seed, cudaStream_t stream);

  // The ops of one call of layer `layer` on batch*n rows already in input(), the n tokens of
  // each sequence at positions start..start+n-1. Buffers are sized before this returns, so
  // the ops can be captured in a CUDA graph.
  std::vector<cuda::DeviceOp> ops(int layer, int n, int start);

  // Device buffers (valid after ops()): rows = batch*n.
  __nv_bfloat16* input() { return x_.data(); }
  const __nv_bfloat16* qkv() const { return qkv_.data(); }
  const __nv_bfloat16* q_rope() const { return q_rope_.data(); }
  const __nv_bfloat16* attn() const { return attn_.data(); }
  const __nv_bfloat16* o_proj() const { return o_proj_.data(); }
  const __nv_bfloat16* resid_mid() const { return resid_mid_.data(); }
  const __nv_bfloat16* act() const { return act_.data(); }
  const __nv_bfloat16* resid_out() const { return resid_out_.data(); }
  const __nv_bfloat16* k_cache(int layer) const { return k_cache_[layer].data(); }
  const __nv_bfloat16* v_cache(int layer) const { return v_cache_[layer].data(); }
  bool gemv_route(int rows) const;
  // Benchmarks: run the GEMM route at every shape (the cuBLAS-per-projection baseline).
  void force_gemm_route(bool on) { force_gemm_ = on; }
  // Batch-invariant mode (see above) for the ops made from now on; nullopt: the default.
  void set_batch_invariant(std::optional<BatchInvariantPlan> plan);
  // The fp8-kv recipe's KV cache from the next reset() on (docs/recipes.md, "fp8-kv").
  void set_kv_fp8(const KvCacheFp8& cfg);
  const FusedKvFp8* kv_fp8() const { return kv_fp8_.get(); }
  // fp8-w8a8 for the ops made from now on: every layer's weights must hold qkv8 .. down8
  // (quantize_weights_w8a8); throws InputError below compute capability 8.9.
  void set_w8a8();
  bool w8a8() const { return w8a8_; }
  // The NaN/Inf row flags of GEMM g (kW8a8GemmNames): arm() before enqueueing a call's
  // ops, check() after (Fp8RowCheck).
  Fp8RowCheck& w8a8_row_check(int g) { return *row_checks_.at(static_cast<std::size_t>(g)); }

  // Final norm + lm_head on `rows` rows of input(): final_norm (bf16) and logits (FP32,
  // not a rounding point of fused-v1).
  void head(const __nv_bfloat16* final_norm_w, const __nv_bfloat16* lm_head, int rows,
            cudaStream_t stream);
  const __nv_bfloat16* final_norm_out() const { return normed_.data(); }
  const float* logits() const { return logits_.data(); }

 private:
  void ensure_buffers(int rows, int kv_len);
  RopeArgs rope_args(int layer, int n, int start);
  std::vector<cuda::DeviceOp> ops_w8a8(int layer, int n, int start);

  ModelSpec spec_;
  std::shared_ptr<std::vector<FusedLayerWeights>> weights_ =
      std::make_shared<std::vector<FusedLayerWeights>>();
  std::unique_ptr<LtGemm> gemm_;
  std::unique_ptr<SkinnyGemm> skinny_;  // batch-invariant decode projections
  int batch_ = 0, capacity_ = 0;
  bool force_gemm_ = false;
  std::optional<BatchInvariantPlan> invariant_;
  std::unique_ptr<FusedKvFp8> kv_fp8_;
  bool w8a8_ = false;
  std::unique_ptr<Fp8Gemm> fp8_gemm_;
  std::vector<std::unique_ptr<Fp8RowCheck>> row_checks_;
  cuda::DeviceBuffer<__nv_fp8_e4m3> a8_;  // GEMM route: one GEMM input's codes
  cuda::DeviceBuffer<float> a_scales_, fp8_acc_, down32_;
  std::vector<cuda::DeviceBuffer<__nv_bfloat16>> k_cache_, v_cache_;
  cuda::DeviceBuffer<float> rope_cos_, rope_sin_;
  cuda::DeviceBuffer<__nv_bfloat16> x_, normed_, qkv_, q_rope_, attn_, o_proj_, resid_mid_,
      act_, resid_out_;
  cuda::DeviceBuffer<float> gate_up_, logits_, attn_scratch_;
  cuda::DeviceBuffer<unsigned int> attn_counters_;  // zeroed on allocation; kernels keep it zero
};

// RoPE cos/sin for positions [0, capacity): angles in double, stored FP32 [capacity x dim/2].
void rope_tables(const ModelSpec& spec, int capacity, std::vector<float>& cos_t,
                 std::vector<float>& sin_t);

}  // namespace fusecheck::fused
