// Synthetic checkpoints as files: determinism, loading through Checkpoint::open, the
// config.json of each architecture, sharding, dtypes, overrides touching only their
// tensors, the super weight, and the command line.
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <set>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "harness/checkpoint/synth.h"
#include "harness/core/checkpoint.h"
#include "harness/core/error.h"
#include "tests/common/test_support.h"

namespace fusecheck {
namespace {

std::string slurp(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// Tensor name -> stored bytes.
std::map<std::string, std::string> tensor_bytes(const std::filesystem::path& dir) {
  const auto ck = Checkpoint::open(dir);
  std::map<std::string, std::string> out;
  for (const TensorView& t : ck->tensors()) {
    out[t.name] = std::string(reinterpret_cast<const char*>(t.bytes.data()), t.bytes.size());
  }
  return out;
}

std::vector<std::string> differing(const std::map<std::string, std::string>& a,
                                   const std::map<std::string, std::string>& b) {
  EXPECT_EQ(a.size(), b.size());
  std::vector<std::string> names;
  for (const auto& [name, bytes] : a) {
    if (!b.contains(name) || b.at(name) != bytes) names.push_back(name);
  }
  return names;
}

SynthOptions with_seed(std::uint64_t seed) {
  SynthOptions o;
  o.seed = seed;
  return o;
}

TEST(SynthCheckpoint, SameOptionsGiveByteIdenticalFilesWhateverTheThreadCount) {
  const auto dir = test::scratch_dir();
  SynthOptions one = with_seed(5), many = with_seed(5);
  one.threads = 1;
  many.threads = 7;
  one.shard_bytes = many.shard_bytes = 300'000;  // several shards: the index too
  const auto a = write_synthetic_checkpoint("qwen3-tiny", one, dir / "a");
  write_synthetic_checkpoint("qwen3-tiny", many, dir / "b");
  ASSERT_GT(a.files.size(), 4u);
  for (const WrittenFile& f : a.files) {
    EXPECT_EQ(slurp(f.path), slurp(dir / "b" / f.path.filename())) << f.path.filename();
  }
}

TEST(SynthCheckpoint, DifferentSeedChangesEveryTensor) {
  const auto dir = test::scratch_dir();
  write_synthetic_checkpoint("llama-tiny", with_seed(0), dir / "a");
  write_synthetic_checkpoint("llama-tiny", with_seed(1), dir / "b");
  const auto a = tensor_bytes(dir / "a"), b = tensor_bytes(dir / "b");
  EXPECT_EQ(differing(a, b).size(), a.size());
}

struct Expected {
  const char* profile;
  const char* architecture;
  bool qk_norm, qkv_bias, tied;
};

class SynthProfileLoads : public ::testing::TestWithParam<Expected> {};

TEST_P(SynthProfileLoads, AndTheSpecIsTheProfiles) {
  const Expected e = GetParam();
  const auto dir = test::scratch_dir();
  write_synthetic_checkpoint(e.profile, {}, dir);
  const SynthProfile& p = synth_profile(e.profile);
  const auto ck = Checkpoint::open(dir);
  const ModelSpec& s = ck->spec();
  EXPECT_EQ(s.architecture, e.architecture);
  EXPECT_EQ(s.n_layers, p.layers);
  EXPECT_EQ(s.hidden, p.hidden);
  EXPECT_EQ(s.n_heads, p.heads);
  EXPECT_EQ(s.n_kv_heads, p.kv_heads);
  EXPECT_EQ(s.head_dim, p.head_dim);
  EXPECT_EQ(s.intermediate, p.intermediate);
  EXPECT_EQ(s.vocab, p.vocab);
  EXPECT_EQ(s.rope_theta, p.rope_theta);
  EXPECT_EQ(s.rms_eps, p.rms_eps);
  EXPECT_EQ(s.has_qk_norm, e.qk_norm);
  EXPECT_EQ(s.has_qkv_bias, e.qkv_bias);
  EXPECT_EQ(s.tied_embeddings, e.tied);
  EXPECT_EQ(s.dtype, "BF16");
  EXPECT_TRUE(ck->unused_tensors().empty());
  EXPECT_EQ(ck->find("lm_head.weight") == nullptr, e.tied);
  for (const LayerTensors& l : ck->model().layers) {
    EXPECT_EQ(l.k_norm != nullptr, e.qk_norm);
    EXPECT_EQ(l.bq != nullptr, e.qkv_bias);
  }
}

INSTANTIATE_TEST_SUITE_P(Tiny, SynthProfileLoads,
                         ::testing::Values(Expected{"qwen3-tiny", "qwen3", true, false, true},
                                           Expected{"qwen2-tiny", "qwen2", false, true, false},
                                           Expected{"llama-tiny", "llama", false, false, false}),
                         [](const auto& info) {
                           std::string n = info.param.profile;
                           for (char& c : n) c = c == '-' ? '_' : c;
                           return n;
                         });

TEST(SynthConfig, Qwen3ConfigHasTheFieldsHfWrites) {
  const auto c = nlohmann::json::parse(hf_config_json(synth_profile("qwen3-0.6b"), 28, DType::BF16));
  EXPECT_EQ(c["architectures"], nlohmann::json::array({"Qwen3ForCausalLM"}));
  EXPECT_EQ(c["model_type"], "qwen3");
  EXPECT_EQ(c["hidden_size"], 1024);
  EXPECT_EQ(c["intermediate_size"], 3072);
  EXPECT_EQ(c["num_hidden_layers"], 28);
  EXPECT_EQ(c["num_attention_heads"], 16);
  EXPECT_EQ(c["num_key_value_heads"], 8);
  EXPECT_EQ(c["head_dim"], 128);
  EXPECT_EQ(c["rms_norm_eps"], 1e-6);
  EXPECT_EQ(c["rope_theta"], 1000000);
  EXPECT_EQ(c["vocab_size"], 151936);
  EXPECT_EQ(c["tie_word_embeddings"], true);
  EXPECT_EQ(c["torch_dtype"], "bfloat16");
  EXPECT_EQ(c["hidden_act"], "silu");
  EXPECT_EQ(c["attention_bias"], false);
  EXPECT_EQ(c["bos_token_id"], 151643);
  EXPECT_EQ(c["eos_token_id"], 151645);
  EXPECT_EQ(c["max_position_embeddings"], 40960);
}

TEST(SynthConfig, LlamaConfigHasTheFieldsHfWrites) {
  const auto c = nlohmann::json::parse(hf_config_json(synth_profile("llama-3-8b"), 32, DType::F16));
  EXPECT_EQ(c["architectures"], nlohmann::json::array({"LlamaForCausalLM"}));
  EXPECT_EQ(c["model_type"], "llama");
  EXPECT_EQ(c["intermediate_size"], 14336);
  EXPECT_EQ(c["num_key_value_heads"], 8);
  EXPECT_EQ(c["rope_theta"], 500000.0);
  EXPECT_EQ(c["rms_norm_eps"], 1e-5);
  EXPECT_EQ(c["vocab_size"], 128256);
  EXPECT_EQ(c["tie_word_embeddings"], false);
  EXPECT_EQ(c["torch_dtype"], "float16");
  EXPECT_EQ(c["mlp_bias"], false);
  EXPECT_EQ(c["bos_token_id"], 128000);
}

TEST(SynthConfig, Qwen2ConfigHasNoHeadDimAndItsHeadsDivideHidden) {
  const SynthProfile& p = synth_profile("qwen2-tiny");
  const auto c = nlohmann::json::parse(hf_config_json(p, 3, DType::BF16));
  EXPECT_EQ(c["architectures"], nlohmann::json::array({"Qwen2ForCausalLM"}));
  EXPECT_FALSE(c.contains("head_dim"));  // Qwen2Config derives it from hidden / heads
  EXPECT_EQ(p.hidden % p.heads, 0);
  EXPECT_EQ(p.hidden / p.heads, p.head_dim);
}

TEST(SynthCheckpoint, ShardedCheckpointLoadsBackWithTheSameTensors) {
  const auto dir = test::scratch_dir();
  SynthOptions sharded;
  sharded.shard_bytes = 200'000;
  const auto r = write_synthetic_checkpoint("qwen3-tiny", sharded, dir / "sharded");
  write_synthetic_checkpoint("qwen3-tiny", {}, dir / "single");
  EXPECT_TRUE(std::filesystem::exists(dir / "sharded" / "model.safetensors.index.json"));
  EXPECT_FALSE(std::filesystem::exists(dir / "sharded" / "model.safetensors"));
  const auto index = nlohmann::json::parse(slurp(dir / "sharded" / "model.safetensors.index.json"));
  std::set<std::string> shards;
  for (const auto& [name, file] : index["weight_map"].items()) shards.insert(file.get<std::string>());
  EXPECT_GT(shards.size(), 2u);
  const auto single = tensor_bytes(dir / "single");
  std::uint64_t total = 0;
  for (const auto& [name, bytes] : single) total += bytes.size();
  EXPECT_EQ(index["metadata"]["total_size"], total);
  EXPECT_EQ(index["weight_map"].size(), single.size());
  EXPECT_TRUE(differing(single, tensor_bytes(dir / "sharded")).empty());
  EXPECT_EQ(r.files.front().path.filename(), "config.json");
}

TEST(SynthCheckpoint, F32ValuesRoundToTheBf16Checkpoint) {
  // One generator, several storage types: bf16 = RNE(f32) element for element.
  const auto dir = test::scratch_dir();
  SynthOptions f32;
  f32.dtype = DType::F32;
  write_synthetic_checkpoint("llama-tiny", f32, dir / "f32");
  write_synthetic_checkpoint("llama-tiny", {}, dir / "bf16");
  const auto wide = Checkpoint::open(dir / "f32");
  const auto narrow = Checkpoint::open(dir / "bf16");
  ASSERT_EQ(wide->tensors().size(), narrow->tensors().size());
  for (const TensorView& t : wide->tensors()) {
    ASSERT_EQ(t.dtype, DType::F32);
    const TensorView* n = narrow->find(t.name);
    ASSERT_NE(n, nullptr);
    const auto w = t.to_float(), b = n->to_float();
    for (std::size_t i = 0; i < w.size(); ++i) ASSERT_EQ(round_to_bf16(w[i]), b[i]) << t.name << "[" << i << "]";
  }
}

TEST(SynthCheckpoint, F16CheckpointLoads) {
  const auto dir = test::scratch_dir();
  SynthOptions f16;
  f16.dtype = DType::F16;
  write_synthetic_checkpoint("qwen3-tiny", f16, dir);
  const auto ck = Checkpoint::open(dir);
  EXPECT_EQ(ck->spec().dtype, "F16");
  EXPECT_EQ(nlohmann::json::parse(slurp(dir / "config.json"))["torch_dtype"], "float16");
}

TEST(SynthOverrides, KNormMaxChangesOnlyKNormTensors) {
  const auto dir = test::scratch_dir();
  SynthOptions o;
  o.k_norm.max = 10.0;
  write_synthetic_checkpoint("qwen3-tiny", {}, dir / "base");
  write_synthetic_checkpoint("qwen3-tiny", o, dir / "over");
  const auto changed = differing(tensor_bytes(dir / "base"), tensor_bytes(dir / "over"));
  EXPECT_EQ(changed, (std::vector<std::string>{"model.layers.0.self_attn.k_norm.weight",
                                               "model.layers.1.self_attn.k_norm.weight",
                                               "model.layers.2.self_attn.k_norm.weight"}));
  const auto ck = Checkpoint::open(dir / "over");
  double top = 0;
  for (const LayerTensors& l : ck->model().layers) {
    for (float v : l.k_norm->to_float()) top = std::max(top, static_cast<double>(v));
  }
  EXPECT_EQ(top, 10.0);
}

TEST(SynthOverrides, EachNormFlagChangesOnlyItsFamily) {
  const auto dir = test::scratch_dir();
  write_synthetic_checkpoint("qwen3-tiny", {}, dir / "base");
  const auto base = tensor_bytes(dir / "base");
  struct Case {
    const char* suffix;
    void (*set)(SynthOptions&);
  };
  const Case cases[] = {
      {"self_attn.q_norm.weight", [](SynthOptions& o) { o.q_norm.max = 20.0; }},
      {"input_layernorm.weight", [](SynthOptions& o) { o.attn_norm.max = 8.0; }},
      {"model.norm.weight", [](SynthOptions& o) { o.final_norm.max = 30.0; }},
      {"self_attn.k_norm.weight", [](SynthOptions& o) { o.k_norm.outlier_layers = 1; }},
  };
  for (const Case& c : cases) {
    SynthOptions o;
    c.set(o);
    write_synthetic_checkpoint("qwen3-tiny", o, dir / "over");
    const auto changed = differing(base, tensor_bytes(dir / "over"));
    ASSERT_FALSE(changed.empty()) << c.suffix;
    for (const std::string& name : changed) EXPECT_TRUE(name.ends_with(c.suffix)) << name;
  }
}

TEST(SynthOverrides, MassiveActivationPlantsOneSuperWeightInLayerOne) {
  const auto dir = test::scratch_dir();
  SynthOptions o;
  o.massive_activation = true;
  o.massive_channel = 17;
  o.massive_neuron = 101;
  write_synthetic_checkpoint("llama-tiny", {}, dir / "base");
  const auto r = write_synthetic_checkpoint("llama-tiny", o, dir / "over");
  EXPECT_NE(r.summary.find("down_proj[17, 101]"), std::string::npos) << r.summary;
  const auto changed = differing(tensor_bytes(dir / "base"), tensor_bytes(dir / "over"));
  EXPECT_EQ(changed, (std::vector<std::string>{"model.layers.1.mlp.down_proj.weight",
                                               "model.layers.1.mlp.gate_proj.weight",
                                               "model.layers.1.mlp.up_proj.weight"}));
  const auto base = Checkpoint::open(dir / "base"), over = Checkpoint::open(dir / "over");
  const auto down_base = base->model().layers[1].w_down->to_float();
  const auto down = over->model().layers[1].w_down->to_float();
  const std::int64_t inter = 200, at = 17 * inter + 101;
  EXPECT_EQ(down[at], 128.0f);
  for (std::size_t i = 0; i < down.size(); ++i) {
    if (static_cast<std::int64_t>(i) != at) {
      ASSERT_EQ(down[i], down_base[i]) << i;
    }
  }
  // The neuron's gate row is 4x (exact: a power of two), the other rows untouched.
  const auto gate_base = base->model().layers[1].w_gate->to_float();
  const auto gate = over->model().layers[1].w_gate->to_float();
  for (std::int64_t c = 0; c < 96; ++c) EXPECT_EQ(gate[101 * 96 + c], 4.0f * gate_base[101 * 96 + c]);
  EXPECT_EQ(gate[100 * 96], gate_base[100 * 96]);
}

TEST(SynthOverrides, KNormOnAModelWithoutItIsAnInputError) {
  SynthOptions o;
  o.k_norm.max = 50.0;
  EXPECT_THROW(write_synthetic_checkpoint("llama-tiny", o, test::scratch_dir()), InputError);
}

TEST(SynthOverrides, LayersOptionSetsTheDepth) {
  const auto dir = test::scratch_dir();
  SynthOptions o;
  o.layers = 5;  // more than qwen3-tiny's table: plans repeat
  write_synthetic_checkpoint("qwen3-tiny", o, dir);
  EXPECT_EQ(Checkpoint::open(dir)->spec().n_layers, 5);
}

TEST(SynthProfiles, UnknownProfileIsAnInputErrorListingTheKnownOnes) {
  try {
    write_synthetic_checkpoint("qwen9-huge", {}, test::scratch_dir());
    FAIL() << "no error";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("qwen3-0.6b"), std::string::npos) << e.what();
  }
  EXPECT_EQ(synth_profile_names().size(), 7u);
}

TEST(SynthCommand, ListsProfiles) {
  const auto r = test::run_fusecheck("synth --list");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  for (const std::string& name : synth_profile_names()) EXPECT_NE(r.out.find(name), std::string::npos) << name;
}

TEST(SynthCommand, WritesACheckpointAndSaysWhat) {
  const auto out = test::scratch_dir() / "cmd" / "ckpt";
  const auto r = test::run_fusecheck("synth llama-tiny " + out.string() + " --seed 3 --dtype f32 --shard-size 100K");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("model.safetensors.index.json"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("wrote"), std::string::npos) << r.out;
  EXPECT_EQ(Checkpoint::open(out)->spec().dtype, "F32");
}

TEST(SynthCommand, BadOptionValueExitsTwoWithOneLine) {
  const auto out = test::scratch_dir() / "cmd" / "ckpt";
  const auto r = test::run_fusecheck("synth qwen3-tiny " + out.string() + " --k-norm-outlier-layers many");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--k-norm-outlier-layers"), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
}

// Issue 22, third round: the outlier layers' position is a command-line option too.
TEST(SynthCommand, OutlierPositionPutsTheOutliersFromThatLayer) {
  const auto out = test::scratch_dir() / "cmd" / "mid";
  const auto r = test::run_fusecheck("synth qwen3-tiny " + out.string() +
                                     " --layers 4 --k-norm-max 40 --k-norm-outlier-layers 1 --k-norm-outlier-position 2");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::ifstream in(out / "synth.json");
  EXPECT_EQ(nlohmann::json::parse(in)["overrides"]["k_norm"]["outlier_position"], 2);
  const auto bad = test::run_fusecheck("synth qwen3-tiny " + out.string() +
                                       " --layers 4 --k-norm-outlier-layers 2 --k-norm-outlier-position 3");
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.err.find("--k-norm-*: 2 outlier layers from layer 3 do not fit in 4 layers"), std::string::npos)
      << bad.err;
  EXPECT_EQ(std::count(bad.err.begin(), bad.err.end(), '\n'), 1) << bad.err;
}

}  // namespace
}  // namespace fusecheck
