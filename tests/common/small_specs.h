// Small model specs for ref::RandomCheckpoint, one home for the tests that build them:
// the CPU paths' tests (tests/reference) and the GPU paths' agreement tests (ref64-cuda,
// fused-cuda, flashinfer-cuda). Header-only: it needs nothing beyond ModelSpec.
#pragma once

#include <string>

#include "harness/core/model_spec.h"

namespace fusecheck::test {

// Attention and MLP sizes of one small model (rope_dim follows head_dim).
struct SmallShape {
  int hidden = 0, n_heads = 0, n_kv_heads = 0, head_dim = 0, intermediate = 0;
};

// One shape per architecture that two_layer_spec knows.
struct ShapePerArch {
  SmallShape qwen3, qwen2, llama;
};

// The awkward shapes the CUDA paths are checked on: 5 query heads over 1 kv head (qwen3),
// group 2 (qwen2), 9 heads over 3 with head_dim 8 (llama).
inline constexpr ShapePerArch kOddShapes{
    .qwen3 = {.hidden = 80, .n_heads = 5, .n_kv_heads = 1, .head_dim = 16, .intermediate = 136},
    .qwen2 = {.hidden = 64, .n_heads = 4, .n_kv_heads = 2, .head_dim = 16, .intermediate = 120},
    .llama = {.hidden = 72, .n_heads = 9, .n_kv_heads = 3, .head_dim = 8, .intermediate = 200},
};

// What every small spec shares: `arch` as HF safetensors, `n_layers` of `shape`, a vocab of
// 97 (prime, so no tile divides it), RMSNorm eps 1e-6.
inline ModelSpec random_checkpoint_spec(const std::string& arch, int n_layers, const SmallShape& shape) {
  ModelSpec s;
  s.architecture = arch;
  s.source_format = "hf-safetensors";
  s.n_layers = n_layers;
  s.hidden = shape.hidden;
  s.n_heads = shape.n_heads;
  s.n_kv_heads = shape.n_kv_heads;
  s.head_dim = shape.head_dim;
  s.intermediate = shape.intermediate;
  s.rope_dim = shape.head_dim;
  s.vocab = 97;
  s.rms_eps = 1e-6;
  return s;
}

// A two-layer model of `arch` with the traits that architecture brings: qwen3 q/k norms,
// qwen2 QKV biases (both RoPE theta 1e6), anything else llama (eps 1e-5, theta 10000, RoPE
// pairs as `llama_rope`). Weights stored as `dtype` ("BF16", "F32").
inline ModelSpec two_layer_spec(const std::string& arch, const ShapePerArch& shapes, RopeStyle llama_rope,
                                const std::string& dtype) {
  const bool llama = arch != "qwen3" && arch != "qwen2";
  const SmallShape& shape = arch == "qwen3" ? shapes.qwen3 : arch == "qwen2" ? shapes.qwen2 : shapes.llama;
  ModelSpec s = random_checkpoint_spec(arch, 2, shape);
  s.rope_theta = 1e6;
  s.has_qk_norm = arch == "qwen3";
  s.has_qkv_bias = arch == "qwen2";
  if (llama) {
    s.rms_eps = 1e-5;
    s.rope_theta = 10000;
    s.rope_style = llama_rope;
  }
  s.max_position = 4096;
  s.dtype = dtype;
  return s;
}

// The tiny tied-embedding Qwen3 of the recipe tests (tests/reference: recipes, FP8 KV cache):
// 2 layers, hidden 64, 4 heads over 2 of 16, MLP 96, vocab 50.
inline ModelSpec tiny_qwen3_tied_spec() {
  ModelSpec s;
  s.architecture = "qwen3";
  s.n_layers = 2;
  s.hidden = 64;
  s.n_heads = 4;
  s.n_kv_heads = 2;
  s.head_dim = 16;
  s.intermediate = 96;
  s.vocab = 50;
  s.rms_eps = 1e-6;
  s.rope_theta = 1e6;
  s.rope_dim = 16;
  s.has_qk_norm = true;
  s.tied_embeddings = true;
  return s;
}

}  // namespace fusecheck::test
