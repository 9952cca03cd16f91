// ModelSpec: the architecture-neutral description of a decoder-only transformer, read
// from a checkpoint by an adapter (harness/checkpoint/adapters.cpp).
#pragma once

#include <cstdint>
#include <string>

namespace fusecheck {

// NeoX / Hugging Face: rotate pairs (i, i + d/2). Interleaved (original Llama, llama.cpp
// "normal", GGUF llama files): rotate pairs (2i, 2i + 1).
enum class RopeStyle { NeoxHalfSplit, Interleaved };

struct RopeScaling {
  std::string type = "none";  // "none", "linear", "llama3"
  double factor = 1.0;
  double low_freq_factor = 1.0;   // llama3
  double high_freq_factor = 4.0;  // llama3
  int original_max_position = 8192;  // llama3
};

struct ModelSpec {
  std::string architecture;  // "qwen3", "qwen2", "llama" (Mistral and TinyLlama are "llama")
  std::string source_format; // "hf-safetensors" or "gguf"
  int n_layers = 0;
  int hidden = 0;
  int n_heads = 0;
  int n_kv_heads = 0;
  int head_dim = 0;
  int intermediate = 0;
  int vocab = 0;
  double rms_eps = 1e-6;
  double rope_theta = 10000.0;
  int rope_dim = 0;  // rotated dims per head (== head_dim for every supported model)
  RopeStyle rope_style = RopeStyle::NeoxHalfSplit;
  RopeScaling rope_scaling;
  bool has_qk_norm = false;    // Qwen3: per-head RMSNorm on q and k before RoPE
  bool has_qkv_bias = false;   // Qwen2
  bool tied_embeddings = false;
  int max_position = 0;
  int bos_id = -1;
  int eos_id = -1;
  std::string dtype;  // dominant storage dtype of the weights ("BF16", ...)

  int q_width() const { return n_heads * head_dim; }
  int kv_width() const { return n_kv_heads * head_dim; }
};

std::string rope_style_name(RopeStyle s);  // "neox-half-split" / "interleaved"

}  // namespace fusecheck
