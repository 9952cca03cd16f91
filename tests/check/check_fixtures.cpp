// Tiny checkpoint writer for the static-check tests (see check_fixtures.h).
#include "tests/check/check_fixtures.h"

#include <cstdlib>
#include <random>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "harness/checkpoint/safetensors_writer.h"

namespace fusecheck::test {

std::filesystem::path fixture_dir(const std::string& name) {
  const char* bin = std::getenv("FUSECHECK_BINARY_DIR");
  const std::filesystem::path root = bin ? std::filesystem::path(bin) : std::filesystem::temp_directory_path();
  auto dir = root / "test-scratch" / "check-fixtures" / name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

std::vector<float> peaked(int n, float bulk, float peak) {
  std::vector<float> v(static_cast<std::size_t>(n), bulk);
  v.back() = peak;
  return v;
}

std::vector<float> seeded_uniform(int n, float lo, float hi, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(static_cast<std::size_t>(n));
  for (auto& x : v) x = dist(rng);
  return v;
}

void write_tiny_checkpoint(const std::filesystem::path& dir, const TinyModel& m) {
  nlohmann::ordered_json cfg;
  cfg["architectures"] = {m.qwen3 ? "Qwen3ForCausalLM" : "LlamaForCausalLM"};
  cfg["model_type"] = m.qwen3 ? "qwen3" : "llama";
  cfg["hidden_size"] = m.hidden;
  cfg["num_hidden_layers"] = static_cast<int>(m.layers.size());
  cfg["num_attention_heads"] = m.heads;
  cfg["num_key_value_heads"] = m.kv_heads;
  cfg["head_dim"] = m.head_dim;
  cfg["intermediate_size"] = m.intermediate;
  cfg["vocab_size"] = m.vocab;
  cfg["rms_norm_eps"] = 1e-6;
  cfg["rope_theta"] = 1000000.0;
  cfg["hidden_act"] = "silu";
  cfg["max_position_embeddings"] = 128;
  cfg["tie_word_embeddings"] = false;
  cfg["torch_dtype"] = "float32";

  unsigned seed = m.seed;
  auto random_matrix = [&](const std::string& name, std::int64_t rows, std::int64_t cols) {
    auto v = seeded_uniform(static_cast<int>(rows * cols), -0.05f, 0.05f, seed++);
    return make_tensor(name, DType::F32, {rows, cols}, v);
  };
  auto norm = [&](const std::string& name, const std::vector<float>& given, int n) {
    const auto v = given.empty() ? seeded_uniform(n, 0.9f, 1.1f, seed++) : given;
    if (static_cast<int>(v.size()) != n) throw std::invalid_argument(name + ": wrong length in the fixture");
    return make_tensor(name, DType::F32, {n}, v);
  };

  const int qw = m.heads * m.head_dim, kvw = m.kv_heads * m.head_dim;
  std::vector<TensorToWrite> t;
  t.push_back(random_matrix("model.embed_tokens.weight", m.vocab, m.hidden));
  for (std::size_t i = 0; i < m.layers.size(); ++i) {
    const auto& l = m.layers[i];
    const std::string p = "model.layers." + std::to_string(i) + ".";
    t.push_back(norm(p + "input_layernorm.weight", l.attn_norm, m.hidden));
    t.push_back(random_matrix(p + "self_attn.q_proj.weight", qw, m.hidden));
    t.push_back(random_matrix(p + "self_attn.k_proj.weight", kvw, m.hidden));
    t.push_back(random_matrix(p + "self_attn.v_proj.weight", kvw, m.hidden));
    if (m.qwen3) {
      t.push_back(norm(p + "self_attn.q_norm.weight", l.q_norm, m.head_dim));
      t.push_back(norm(p + "self_attn.k_norm.weight", l.k_norm, m.head_dim));
    }
    t.push_back(random_matrix(p + "self_attn.o_proj.weight", m.hidden, qw));
    t.push_back(norm(p + "post_attention_layernorm.weight", l.mlp_norm, m.hidden));
    t.push_back(random_matrix(p + "mlp.gate_proj.weight", m.intermediate, m.hidden));
    t.push_back(random_matrix(p + "mlp.up_proj.weight", m.intermediate, m.hidden));
    t.push_back(random_matrix(p + "mlp.down_proj.weight", m.hidden, m.intermediate));
  }
  t.push_back(norm("model.norm.weight", m.final_norm, m.hidden));
  t.push_back(random_matrix("lm_head.weight", m.vocab, m.hidden));
  write_hf_checkpoint(dir, cfg.dump(2), t);
}

}  // namespace fusecheck::test
