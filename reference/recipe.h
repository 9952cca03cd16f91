// Precision recipes for emulated-cpu: where a layer's values are rounded to bf16 or fp16
// and where FP32 is kept (docs/recipes.md is the prose of each recipe), and the overflow
// headroom recorded at every rounding point.
#pragma once

#include <array>
#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "harness/core/dtype.h"
#include "harness/core/headroom.h"
#include "harness/core/recipe_mix.h"

namespace fusecheck {

// Every point of a layer (and the head) where a recipe may round, in execution order.
enum class RoundPoint {
  weights, layer_input,
  attn_norm_normalized, attn_norm, q, k, v,
  q_norm_normalized, q_normed, k_norm_normalized, k_normed,
  rope_cos_sin, rope_terms, q_rope, k_rope,
  scores, scores_scaled, probs, attn, o_proj, resid_mid,
  mlp_norm_normalized, mlp_norm, gate, up, silu, act, down, resid_out,
  final_norm_normalized, final_norm, logits,
  // Measured only, never rounded by a recipe: each row's sum of x^2 inside a norm.
  attn_norm_sumsq, q_norm_sumsq, k_norm_sumsq, mlp_norm_sumsq, final_norm_sumsq,
};
inline constexpr int kRoundPointCount = static_cast<int>(RoundPoint::final_norm_sumsq) + 1;

// "attn_norm.normalized", "scores.scaled", ... (the names docs/recipes.md uses).
std::string_view round_point_name(RoundPoint p);

// fp8-kv recipes: K (k_rope) and V stored in the KV cache as FP8 E4M3 with a scale
// (docs/recipes.md, "fp8-kv"); reference/kv_fp8.h applies it.
enum class KvScaleGranularity { per_tensor, per_head };
enum class KvScaleTiming { static_prefill, dynamic };
struct KvCacheFp8 {
  KvScaleGranularity granularity = KvScaleGranularity::per_tensor;
  KvScaleTiming timing = KvScaleTiming::static_prefill;
  // Scale delivery check (docs/recipes.md): calibrated scales times this; values are
  // quantized with the multiplied scale and dequantized with it, so outputs must not move
  // beyond FP8 rounding.
  float scale_multiplier = 1.0f;
  // Test only: dequantize with scale 1, as a kernel that never received the scales does.
  bool drop_scale_on_load = false;
};

struct Recipe {
  std::string name;
  std::string description;
  DType format = DType::BF16;  // BF16 or F16
  std::array<bool, kRoundPointCount> rounds{};
  // fused-v1: mlp_norm normalizes the FP32 sum resid_in + o_proj, not its rounding.
  bool mlp_norm_reads_unrounded_sum = false;
  // hf-*: cos/sin from FP32 inv_freq and FP32 angles (as HF's rotary embedding);
  // otherwise an FP64 table rounded to FP32 once.
  bool rope_angles_in_fp32 = false;
  std::optional<KvCacheFp8> kv_fp8;  // set: the KV cache stores FP8 E4M3
  // fp8-w8a8: every GEMM of a layer (not lm_head) multiplies E4M3 weights (per output
  // channel scales) by E4M3 activations (per token dynamic scales), reference/w8a8.h.
  bool gemm_fp8 = false;
  // > 0 (flashinfer): a decode step follows FlashInfer's decode kernel in its FP32 order
  // (reference/flashinfer_decode.h) and splits the keys into chunks of this many (the batch
  // kernel: past one chunk; the single one: past 256 keys), each chunk's output rounded to
  // `format`, merged as MergeStates does (docs/recipes.md); 0: one pass.
  int decode_partial_chunk = 0;
  // With decode_partial_chunk: the batch paged decode's thread layout and split rule
  // (flashinfer-cuda's default route), else the single-request decode's.
  bool decode_batch_paged = false;
  // flashinfer: at prefill (more than one query row) the unnormalized probabilities
  // exp(s - max) are rounded to `format` and both P.V and the row sum read the rounded
  // values (FlashInfer's bf16 P, prefill.cuh:1699-1717); exact for rows within one KV tile.
  bool prefill_rounds_unnormalized_p = false;

  bool rounds_at(RoundPoint p) const { return rounds[static_cast<int>(p)]; }
  // Value of x after this recipe's rounding to its format.
  float round(float x) const;
};

// "hf-bf16", "hf-fp16", "fused-v1", "fused-v1-fp16", "flashinfer", "fp8-kv", "fp8-kv-per-head",
// "fp8-kv-dynamic", "fp8-kv-per-head-dynamic", "fp8-w8a8".
const std::vector<Recipe>& builtin_recipes();
// InputError naming the known recipes when `name` is not one.
const Recipe& find_recipe(const std::string& name);
inline constexpr const char* kDefaultRecipe = "hf-bf16";

// A recipe mix resolved for a model of `n_layers`: one recipe per layer, then the head's
// (the base). InputError for an unknown recipe, a layer beyond the model, or recipes of
// different formats (bf16 and fp16 cannot share the residual stream).
std::vector<Recipe> recipes_per_slot(const RecipeMix& mix, int n_layers);

}  // namespace fusecheck
