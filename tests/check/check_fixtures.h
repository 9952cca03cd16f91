// Tiny checkpoints with chosen norm weights for the static-check tests: every projection
// is seeded random, every norm vector is the test's own, stored in F32 so that the
// statistics the test computes from its vectors are exactly the stored ones.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

namespace fusecheck::test {

struct TinyLayerNorms {
  std::vector<float> attn_norm;  // empty: seeded values in [0.9, 1.1]
  std::vector<float> q_norm;     // qwen3 only
  std::vector<float> k_norm;     // qwen3 only
  std::vector<float> mlp_norm;
};

struct TinyModel {
  bool qwen3 = true;  // false: a Llama (no q/k norms)
  int hidden = 16;
  int heads = 2;
  int kv_heads = 1;
  int head_dim = 8;
  int intermediate = 24;
  int vocab = 32;
  std::vector<TinyLayerNorms> layers;
  std::vector<float> final_norm;  // empty: seeded values in [0.9, 1.1]
  unsigned seed = 1234;
};

// A directory that run_fusecheck's scratch_dir() does not wipe (it empties the test's own
// scratch directory on every call): <binary dir>/test-scratch/check-fixtures/<name>.
std::filesystem::path fixture_dir(const std::string& name);

// Writes `model` as a HF checkpoint (config.json + model.safetensors) into `dir`.
void write_tiny_checkpoint(const std::filesystem::path& dir, const TinyModel& model);

// A norm vector of length n: `bulk` everywhere, `peak` in channel n - 1.
std::vector<float> peaked(int n, float bulk, float peak);

// Seeded values in [lo, hi] (never constant).
std::vector<float> seeded_uniform(int n, float lo, float hi, unsigned seed);

}  // namespace fusecheck::test
