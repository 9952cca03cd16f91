// The built-in precision recipes (docs/recipes.md) and the headroom measurement.
#include "reference/recipe.h"

#include <initializer_list>

#include <fmt/core.h>

#include "harness/core/error.h"

namespace fusecheck {

namespace {
constexpr std::array<std::string_view, kRoundPointCount> kRoundPointNames = {
    "weights", "layer_input",
    "attn_norm.normalized", "attn_norm", "q", "k", "v",
    "q_norm.normalized", "q_normed", "k_norm.normalized", "k_normed",
    "rope.cos_sin", "rope.terms", "q_rope", "k_rope",
    "scores", "scores.scaled", "probs", "attn", "o_proj", "resid_mid",
    "mlp_norm.normalized", "mlp_norm", "gate", "up", "silu", "act", "down", "resid_out",
    "final_norm.normalized", "final_norm", "logits",
    "attn_norm.sumsq", "q_norm.sumsq", "k_norm.sumsq", "mlp_norm.sumsq", "final_norm.sumsq"};

using P = RoundPoint;

Recipe make_recipe(std::string name, std::string description, DType format,
                   std::initializer_list<RoundPoint> rounded, bool unrounded_sum,
                   bool fp32_angles) {
  Recipe r;
  r.name = std::move(name);
  r.description = std::move(description);
  r.format = format;
  for (RoundPoint p : rounded) r.rounds[static_cast<int>(p)] = true;
  r.mlp_norm_reads_unrounded_sum = unrounded_sum;
  r.rope_angles_in_fp32 = fp32_angles;
  return r;
}

// HF eager attention on a low-precision model: every PyTorch op rounds its output.
std::vector<Recipe> make_builtin() {
  const std::initializer_list<RoundPoint> hf = {
      P::weights, P::layer_input, P::attn_norm_normalized, P::attn_norm, P::q, P::k, P::v,
      P::q_norm_normalized, P::q_normed, P::k_norm_normalized, P::k_normed,
      P::rope_cos_sin, P::rope_terms, P::q_rope, P::k_rope,
      P::scores, P::scores_scaled, P::probs, P::attn, P::o_proj, P::resid_mid,
      P::mlp_norm_normalized, P::mlp_norm, P::gate, P::up, P::silu, P::act, P::down,
      P::resid_out, P::final_norm_normalized, P::final_norm, P::logits};
  // One rounding per kernel output (docs/recipes.md, fused-v1 table).
  const std::initializer_list<RoundPoint> fused = {
      P::weights, P::layer_input, P::attn_norm, P::q, P::k, P::v, P::q_rope, P::k_rope,
      P::attn, P::o_proj, P::resid_mid, P::mlp_norm, P::act, P::resid_out, P::final_norm};
  // FlashInfer's kernels between cuBLAS GEMMs (docs/recipes.md, flashinfer table): every
  // kernel output rounded once, q/k norms and gate|up included; FusedAddRMSNorm
  // normalizes the FP32 sum; FP32 cos|sin cache from FP32 angles (vLLM's).
  const std::initializer_list<RoundPoint> flashinfer = {
      P::weights, P::layer_input, P::attn_norm, P::q, P::k, P::v, P::q_normed, P::k_normed,
      P::q_rope, P::k_rope, P::attn, P::o_proj, P::resid_mid, P::mlp_norm, P::gate, P::up,
      P::act, P::down, P::resid_out, P::final_norm, P::logits};
  // Split-KV decode as flashinfer-cuda's batch paged decode plans it: chunks of 128 keys
  // (8 pages of 16, DecodePlan's floor, scheduler.cuh:196-199, while sequences x chunks x
  // kv heads fit the resident blocks), each partial output stored as bf16 (tmp_v is
  // DTypeO*), merged in FP32 (cascade.cuh:366-467, state.cuh:53-78).
  auto flashinfer_recipe = [&] {
    Recipe r = make_recipe("flashinfer",
                           "FlashInfer 0.6.18 kernels around cuBLAS bf16 GEMMs, as vLLM/SGLang run them",
                           DType::BF16, flashinfer, true, true);
    r.decode_partial_chunk = 128;
    r.decode_batch_paged = true;
    r.prefill_rounds_unnormalized_p = true;
    return r;
  };
  auto fp8_kv = [&](std::string name, std::string description, KvScaleGranularity g, KvScaleTiming t) {
    Recipe r = make_recipe(std::move(name), std::move(description), DType::BF16, fused, true, false);
    r.kv_fp8 = KvCacheFp8{.granularity = g, .timing = t};
    return r;
  };
  using G = KvScaleGranularity;
  using T = KvScaleTiming;
  // FP8 GEMMs with fused-v1's rounding points (each GEMM's output rounded once to bf16)
  // and fp8-kv's cache: llm-compressor's FP8_DYNAMIC scheme as vLLM runs it.
  auto fp8_w8a8 = [&] {
    Recipe r = fp8_kv("fp8-w8a8",
                      "fused-v1 with FP8 E4M3 GEMMs (weights per output channel, activations per "
                      "token, dynamic) and the fp8-kv cache", G::per_tensor, T::static_prefill);
    r.gemm_fp8 = true;
    return r;
  };
  return {
      make_recipe("hf-bf16", "Hugging Face transformers, bf16 model, eager attention",
                  DType::BF16, hf, false, true),
      make_recipe("hf-fp16", "Hugging Face transformers, fp16 model, eager attention",
                  DType::F16, hf, false, true),
      make_recipe("fused-v1", "fused kernels: bf16 between kernels, FP32 inside",
                  DType::BF16, fused, true, false),
      make_recipe("fused-v1-fp16", "fused kernels: fp16 between kernels, FP32 inside",
                  DType::F16, fused, true, false),
      flashinfer_recipe(),
      fp8_kv("fp8-kv", "fused-v1 with an FP8 E4M3 KV cache, one static scale per tensor",
             G::per_tensor, T::static_prefill),
      fp8_kv("fp8-kv-per-head", "fused-v1 with an FP8 E4M3 KV cache, static scales per kv head",
             G::per_head, T::static_prefill),
      fp8_kv("fp8-kv-dynamic", "fused-v1 with an FP8 E4M3 KV cache, one scale per tensor and step",
             G::per_tensor, T::dynamic),
      fp8_kv("fp8-kv-per-head-dynamic",
             "fused-v1 with an FP8 E4M3 KV cache, scales per kv head and step", G::per_head, T::dynamic),
      fp8_w8a8(),
  };
}
}  // namespace

std::string_view round_point_name(RoundPoint p) { return kRoundPointNames[static_cast<int>(p)]; }

float Recipe::round(float x) const {
  return format == DType::F16 ? round_to_fp16(x) : round_to_bf16(x);
}

const std::vector<Recipe>& builtin_recipes() {
  static const std::vector<Recipe> recipes = make_builtin();
  return recipes;
}

const Recipe& find_recipe(const std::string& name) {
  for (const auto& r : builtin_recipes()) {
    if (r.name == name) return r;
  }
  std::string known;
  for (const auto& r : builtin_recipes()) known += (known.empty() ? "" : ", ") + r.name;
  throw InputError("", "unknown recipe '" + name + "' (known: " + known + ")");
}

std::vector<Recipe> recipes_per_slot(const RecipeMix& mix, int n_layers) {
  for (const auto& l : mix.layers) {
    if (l.last >= n_layers) {
      throw InputError("", fmt::format("recipe mix '{}': layers {}-{} reach beyond the model's {} layers (0..{})",
                                       mix.text(), l.first, l.last, n_layers, n_layers - 1));
    }
  }
  std::vector<Recipe> out;
  for (int l = 0; l <= n_layers; ++l) out.push_back(find_recipe(l < n_layers ? mix.at(l) : mix.base));
  for (const Recipe& r : out) {
    if (r.format != out.back().format) {
      throw InputError("", fmt::format("recipe mix '{}': {} rounds to {} but {} to {}; a mix keeps one format",
                                       mix.text(), r.name, dtype_name(r.format), out.back().name,
                                       dtype_name(out.back().format)));
    }
  }
  return out;
}

}  // namespace fusecheck
