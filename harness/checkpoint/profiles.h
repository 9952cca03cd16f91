// Synthetic model profiles: published shapes (Qwen3-0.6B, Qwen3-8B, Llama-3-8B,
// TinyLlama-1.1B) and tiny test shapes, each with the config.json HF writes for its
// architecture and the statistics its norm weights are drawn with.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "harness/core/dtype.h"

namespace fusecheck {

// How one norm weight vector is drawn. The bulk is lognormal around `median` (which is
// exact: the two middle order statistics are set to it, so lower, upper and averaged
// medians all agree); `outliers` are planted at seeded channels, largest first. When
// `target_mean` is set, `fit_channels` extra channels (a descending ramp) are solved so
// the vector's mean hits it; with `target_std` also set (sample std, n - 1), one more
// channel is solved so both hold. Overrides rescale every planted channel about the
// median by `excess_scale` after the fit.
struct NormPlan {
  double median = 1.0;
  double spread = 0.1;  // sigma of log(value / median) in the bulk
  std::vector<double> outliers{};
  std::optional<double> target_mean{};
  std::optional<double> target_std{};
  int fit_channels = 0;
  double excess_scale = 1.0;
};

struct SynthProfile {
  std::string name;
  std::string description;
  std::string architecture;  // HF class: Qwen3ForCausalLM, Qwen2ForCausalLM, LlamaForCausalLM
  std::string model_type;    // qwen3, qwen2, llama
  int layers = 0;
  int hidden = 0;
  int heads = 0;
  int kv_heads = 0;
  int head_dim = 0;
  int intermediate = 0;
  int vocab = 0;
  double rope_theta = 10000.0;
  double rms_eps = 1e-6;
  bool tied = false;
  bool qk_norm = false;   // Qwen3
  bool qkv_bias = false;  // Qwen2
  int max_position = 0;
  int bos_id = 0;
  int eos_id = 0;
  double embed_std = 0.02;

  // Per-layer plans; layer l uses entry l % size (so --layers can exceed the table).
  std::vector<NormPlan> k_norm;  // empty unless qk_norm
  std::vector<NormPlan> q_norm;
  std::vector<NormPlan> attn_norm;  // input_layernorm
  std::vector<NormPlan> mlp_norm;   // post_attention_layernorm
  NormPlan final_norm;

  int q_width() const { return heads * head_dim; }
  int kv_width() const { return kv_heads * head_dim; }
};

const std::vector<SynthProfile>& synth_profiles();
// Throws InputError naming the profile and listing the known ones.
const SynthProfile& synth_profile(const std::string& name);

// config.json text (sorted keys, indent 2, as save_pretrained writes it) for `profile`
// with `layers` layers stored in `dtype`.
std::string hf_config_json(const SynthProfile& profile, int layers, DType dtype);

}  // namespace fusecheck
