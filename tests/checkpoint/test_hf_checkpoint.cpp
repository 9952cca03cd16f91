// Hugging Face directories: every supported architecture, dtype and layout (single file,
// shards) opens into the right ModelSpec with every role bound to the right tensor.
#include <fstream>
#include <set>

#include <gtest/gtest.h>

#include "harness/core/checkpoint.h"
#include "harness/core/error.h"
#include "tests/checkpoint/fixtures.h"
#include "tests/common/test_support.h"

namespace fusecheck::test {
namespace {

namespace fs = std::filesystem;

// Values of a stored tensor after the dtype's rounding, as the writer stored them.
std::vector<float> rounded(const std::vector<float>& v, DType dtype) {
  std::vector<float> out;
  for (const float x : v) {
    out.push_back(dtype == DType::BF16 ? round_to_bf16(x) : dtype == DType::F16 ? round_to_fp16(x) : x);
  }
  return out;
}

fs::path write_model(const TinyModel& m, DType dtype = DType::F32, std::uint64_t shard_bytes = 0) {
  const fs::path dir = scratch_dir() / "model";
  write_tiny_hf(dir, m, dtype, shard_bytes);
  return dir;
}

TEST(HfCheckpoint, Qwen3SpecAndQkNormsBound) {
  const TinyModel m{.hf_class = "Qwen3ForCausalLM"};
  const auto ck = Checkpoint::open(write_model(m));
  const ModelSpec& s = ck->spec();
  EXPECT_EQ(ck->format(), "hf-safetensors");
  EXPECT_EQ(s.architecture, "qwen3");
  EXPECT_EQ(s.source_format, "hf-safetensors");
  EXPECT_EQ(s.n_layers, 2);
  EXPECT_EQ(s.hidden, 12);
  EXPECT_EQ(s.n_heads, 3);
  EXPECT_EQ(s.n_kv_heads, 1);
  EXPECT_EQ(s.head_dim, 4);
  EXPECT_EQ(s.rope_dim, 4);
  EXPECT_EQ(s.intermediate, 20);
  EXPECT_EQ(s.vocab, 17);
  EXPECT_DOUBLE_EQ(s.rms_eps, 1e-5);
  EXPECT_DOUBLE_EQ(s.rope_theta, 500000.0);
  EXPECT_EQ(s.max_position, 4096);
  EXPECT_EQ(s.bos_id, 1);
  EXPECT_EQ(s.eos_id, 2);
  EXPECT_TRUE(s.has_qk_norm);
  EXPECT_FALSE(s.has_qkv_bias);
  EXPECT_FALSE(s.tied_embeddings);
  EXPECT_EQ(s.rope_style, RopeStyle::NeoxHalfSplit);
  EXPECT_EQ(s.dtype, "F32");
  ASSERT_EQ(ck->model().layers.size(), 2u);
  const LayerTensors& l1 = ck->model().layers[1];
  ASSERT_NE(l1.q_norm, nullptr);
  EXPECT_EQ(l1.q_norm->name, "model.layers.1.self_attn.q_norm.weight");
  EXPECT_EQ(l1.k_norm->name, "model.layers.1.self_attn.k_norm.weight");
  EXPECT_EQ(l1.bq, nullptr);
  EXPECT_EQ(l1.w_down->name, "model.layers.1.mlp.down_proj.weight");
  EXPECT_EQ(ck->model().lm_head->name, "lm_head.weight");
  EXPECT_TRUE(ck->unused_tensors().empty());
}

TEST(HfCheckpoint, Qwen2BindsQkvBiases) {
  const auto ck = Checkpoint::open(write_model({.hf_class = "Qwen2ForCausalLM"}));
  EXPECT_EQ(ck->spec().architecture, "qwen2");
  EXPECT_TRUE(ck->spec().has_qkv_bias);
  EXPECT_FALSE(ck->spec().has_qk_norm);
  const LayerTensors& l0 = ck->model().layers[0];
  ASSERT_NE(l0.bk, nullptr);
  EXPECT_EQ(l0.bq->name, "model.layers.0.self_attn.q_proj.bias");
  EXPECT_EQ(l0.bk->shape, (std::vector<std::int64_t>{4}));
  EXPECT_EQ(l0.q_norm, nullptr);
}

TEST(HfCheckpoint, LlamaHasNeitherBiasNorQkNorm) {
  const auto ck = Checkpoint::open(write_model({.hf_class = "LlamaForCausalLM"}));
  EXPECT_EQ(ck->spec().architecture, "llama");
  EXPECT_FALSE(ck->spec().has_qkv_bias);
  EXPECT_FALSE(ck->spec().has_qk_norm);
  EXPECT_EQ(ck->spec().rope_style, RopeStyle::NeoxHalfSplit);
}

TEST(HfCheckpoint, MistralIsLlamaWithHeadDimFromHiddenOverHeads) {
  const TinyModel m{.hf_class = "MistralForCausalLM"};
  const fs::path dir = scratch_dir() / "model";
  nlohmann::json config = tiny_hf_config(m);
  config.erase("head_dim");
  config.erase("num_key_value_heads");  // HF default: as many kv heads as query heads
  TinyModel mha = m;
  mha.kv_heads = m.heads;
  write_hf_checkpoint(dir, config.dump(), encode(tiny_tensors(mha, false), DType::F32));
  const auto ck = Checkpoint::open(dir);
  EXPECT_EQ(ck->spec().architecture, "llama");
  EXPECT_EQ(ck->spec().head_dim, 4);
  EXPECT_EQ(ck->spec().n_kv_heads, 3);
}

class HfDtypeTest : public ::testing::TestWithParam<DType> {};

TEST_P(HfDtypeTest, TensorsReadBackAsWritten) {
  const DType dtype = GetParam();
  const TinyModel m{.hf_class = "Qwen3ForCausalLM"};
  const auto ck = Checkpoint::open(write_model(m, dtype));
  EXPECT_EQ(ck->spec().dtype, dtype_name(dtype));
  std::vector<NamedTensor> expected = tiny_tensors(m, false);
  ASSERT_EQ(ck->tensors().size(), expected.size());
  for (const NamedTensor& t : expected) {
    const TensorView* v = ck->find(t.name);
    ASSERT_NE(v, nullptr) << t.name;
    EXPECT_EQ(v->dtype, dtype);
    EXPECT_EQ(v->to_float(), rounded(t.values, dtype)) << t.name;
  }
}

INSTANTIATE_TEST_SUITE_P(AllDtypes, HfDtypeTest, ::testing::Values(DType::F32, DType::F16, DType::BF16, DType::F64),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

TEST(HfCheckpoint, ShardedDirectoryMatchesSingleFile) {
  const TinyModel m{.hf_class = "Qwen3ForCausalLM"};
  const fs::path single = scratch_dir() / "single";
  const fs::path sharded = scratch_dir() / "sharded";
  write_tiny_hf(single, m, DType::BF16, 0);
  write_tiny_hf(sharded, m, DType::BF16, 3000);
  ASSERT_TRUE(fs::exists(sharded / "model.safetensors.index.json"));
  const auto a = Checkpoint::open(single);
  const auto b = Checkpoint::open(sharded);
  std::set<std::string> files;
  for (const TensorView& t : b->tensors()) files.insert(t.file);
  EXPECT_GE(files.size(), 2u) << "fixture did not shard";
  EXPECT_EQ(a->tensors().size(), b->tensors().size());
  for (const TensorView& t : a->tensors()) {
    const TensorView* u = b->find(t.name);
    ASSERT_NE(u, nullptr) << t.name;
    EXPECT_EQ(t.to_float(), u->to_float()) << t.name;
  }
  EXPECT_EQ(b->spec().n_layers, a->spec().n_layers);
  EXPECT_EQ(b->model().layers[1].k_norm->to_float(), a->model().layers[1].k_norm->to_float());
}

TEST(HfCheckpoint, TensorStoredInTwoShardsIsAnError) {
  const TinyModel m{.hf_class = "LlamaForCausalLM"};
  const fs::path dir = scratch_dir() / "model";
  fs::create_directories(dir);
  std::ofstream(dir / "config.json") << tiny_hf_config(m).dump();
  const std::vector<TensorToWrite> all = encode(tiny_tensors(m, false), DType::F32);
  const std::vector<TensorToWrite> first(all.begin(), all.begin() + 5);
  std::vector<TensorToWrite> second(all.begin() + 5, all.end());
  second.push_back(all[2]);  // also in the first shard
  write_safetensors(dir / "a.safetensors", first);
  write_safetensors(dir / "b.safetensors", second);
  nlohmann::json index = {{"metadata", nlohmann::json::object()}, {"weight_map", nlohmann::json::object()}};
  for (const auto& t : first) index["weight_map"][t.name] = "a.safetensors";
  for (std::size_t i = 5; i < all.size(); ++i) index["weight_map"][all[i].name] = "b.safetensors";
  std::ofstream(dir / "model.safetensors.index.json") << index.dump();
  try {
    Checkpoint::open(dir);
    FAIL();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find(".safetensors: tensor '" + all[2].name + "': duplicate: also stored in"),
              std::string::npos) << e.what();
  }
}

TEST(HfCheckpoint, TiedEmbeddingsUseEmbedAsLmHead) {
  const auto ck = Checkpoint::open(write_model({.hf_class = "Qwen3ForCausalLM", .tied = true}));
  EXPECT_TRUE(ck->spec().tied_embeddings);
  EXPECT_EQ(ck->model().lm_head, ck->model().embed);
  EXPECT_EQ(ck->find("lm_head.weight"), nullptr);
}

TEST(HfCheckpoint, UntiedModelWithoutLmHeadIsAnError) {
  const TinyModel m{.hf_class = "LlamaForCausalLM"};
  std::vector<NamedTensor> tensors = tiny_tensors(m, false);
  erase_tensor(tensors, "lm_head.weight");
  const fs::path dir = scratch_dir() / "model";
  write_hf_checkpoint(dir, tiny_hf_config(m).dump(), encode(tensors, DType::F32));
  EXPECT_THROW(
      {
        try {
          Checkpoint::open(dir);
        } catch (const InputError& e) {
          EXPECT_NE(std::string(e.what()).find("tensor 'lm_head.weight': missing"), std::string::npos) << e.what();
          throw;
        }
      },
      InputError);
}

TEST(HfCheckpoint, ListsTensorsNoRoleUses) {
  const TinyModel m{.hf_class = "LlamaForCausalLM"};
  std::vector<NamedTensor> tensors = tiny_tensors(m, false);
  tensors.push_back({"model.layers.0.self_attn.rotary_emb.inv_freq", {2}, {1.0f, 0.01f}});
  const fs::path dir = scratch_dir() / "model";
  write_hf_checkpoint(dir, tiny_hf_config(m).dump(), encode(tensors, DType::F32));
  const auto ck = Checkpoint::open(dir);
  EXPECT_EQ(ck->unused_tensors(), (std::vector<std::string>{"model.layers.0.self_attn.rotary_emb.inv_freq"}));
}

TEST(HfCheckpoint, ReadsLlama3RopeScaling) {
  const TinyModel m{.hf_class = "LlamaForCausalLM"};
  nlohmann::json config = tiny_hf_config(m);
  config["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0},
                            {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 8192}};
  config["eos_token_id"] = {128001, 128008, 128009};
  const fs::path dir = scratch_dir() / "model";
  write_hf_checkpoint(dir, config.dump(), encode(tiny_tensors(m, false), DType::F32));
  const auto ck = Checkpoint::open(dir);
  EXPECT_EQ(ck->spec().rope_scaling.type, "llama3");
  EXPECT_DOUBLE_EQ(ck->spec().rope_scaling.factor, 8.0);
  EXPECT_EQ(ck->spec().rope_scaling.original_max_position, 8192);
  EXPECT_EQ(ck->spec().eos_id, 128001);
}

// transformers 5 save_pretrained writes rope_parameters instead of rope_theta and
// rope_scaling; a silent default theta would rotate every position wrongly.
TEST(HfCheckpoint, ReadsTransformers5RopeParameters) {
  const TinyModel m{.hf_class = "LlamaForCausalLM"};
  nlohmann::json config = tiny_hf_config(m);
  config.erase("rope_theta");
  config.erase("rope_scaling");
  config["rope_parameters"] = {{"rope_type", "llama3"}, {"rope_theta", 500000.0}, {"factor", 8.0},
                               {"low_freq_factor", 1.0}, {"high_freq_factor", 4.0},
                               {"original_max_position_embeddings", 8192}};
  const fs::path dir = scratch_dir() / "model";
  write_hf_checkpoint(dir, config.dump(), encode(tiny_tensors(m, false), DType::F32));
  const auto ck = Checkpoint::open(dir);
  EXPECT_DOUBLE_EQ(ck->spec().rope_theta, 500000.0);
  EXPECT_EQ(ck->spec().rope_scaling.type, "llama3");
  EXPECT_DOUBLE_EQ(ck->spec().rope_scaling.factor, 8.0);
}

TEST(HfCheckpoint, ReadsDefaultRopeParametersTheta) {
  const TinyModel m{.hf_class = "Qwen3ForCausalLM"};
  nlohmann::json config = tiny_hf_config(m);
  config.erase("rope_theta");
  config["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 1000000.0}};
  const fs::path dir = scratch_dir() / "model";
  write_hf_checkpoint(dir, config.dump(), encode(tiny_tensors(m, false), DType::F32));
  const auto ck = Checkpoint::open(dir);
  EXPECT_DOUBLE_EQ(ck->spec().rope_theta, 1000000.0);
  EXPECT_EQ(ck->spec().rope_scaling.type, "none");
}

TEST(HfCheckpoint, ReadsLinearRopeScaling) {
  const TinyModel m{.hf_class = "LlamaForCausalLM"};
  nlohmann::json config = tiny_hf_config(m);
  config["rope_scaling"] = {{"type", "linear"}, {"factor", 4.0}};
  const fs::path dir = scratch_dir() / "model";
  write_hf_checkpoint(dir, config.dump(), encode(tiny_tensors(m, false), DType::F32));
  const auto ck = Checkpoint::open(dir);
  EXPECT_EQ(ck->spec().rope_scaling.type, "linear");
  EXPECT_DOUBLE_EQ(ck->spec().rope_scaling.factor, 4.0);
}

TEST(HfCheckpoint, RefusesUnsupportedRopeScaling) {
  const TinyModel m{.hf_class = "Qwen2ForCausalLM"};
  nlohmann::json config = tiny_hf_config(m);
  config["rope_scaling"] = {{"type", "yarn"}, {"factor", 4.0}};
  const fs::path dir = scratch_dir() / "model";
  write_hf_checkpoint(dir, config.dump(), encode(tiny_tensors(m, false), DType::F32));
  try {
    Checkpoint::open(dir);
    FAIL() << "yarn accepted";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("config.json: rope_scaling: type 'yarn' is not supported"), std::string::npos)
        << e.what();
  }
}

TEST(HfCheckpoint, OpensFromConfigOrShardPath) {
  const fs::path dir = write_model({.hf_class = "LlamaForCausalLM"});
  EXPECT_EQ(Checkpoint::open(dir / "config.json")->spec().n_layers, 2);
  EXPECT_EQ(Checkpoint::open(dir / "model.safetensors")->spec().n_layers, 2);
}

TEST(HfCheckpoint, DirectoryWithoutConfigIsAnError) {
  const fs::path dir = scratch_dir() / "empty";
  fs::create_directories(dir);
  EXPECT_THROW(Checkpoint::open(dir), InputError);
  EXPECT_THROW(Checkpoint::open(scratch_dir() / "absent"), InputError);
}

TEST(HfCheckpoint, ConfigThatIsNotJsonIsAnError) {
  const fs::path dir = write_model({.hf_class = "LlamaForCausalLM"});
  std::ofstream(dir / "config.json") << "{ hidden_size: 12";
  try {
    Checkpoint::open(dir);
    FAIL();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("config.json: not valid JSON"), std::string::npos) << e.what();
  }
}

TEST(HfCheckpoint, KvHeadsNotDividingHeadsIsAnError) {
  const TinyModel m{.hf_class = "LlamaForCausalLM"};
  nlohmann::json config = tiny_hf_config(m);
  config["num_key_value_heads"] = 2;
  const fs::path dir = scratch_dir() / "model";
  write_hf_checkpoint(dir, config.dump(), encode(tiny_tensors(m, false), DType::F32));
  EXPECT_THROW(Checkpoint::open(dir), InputError);
}

}  // namespace
}  // namespace fusecheck::test
