// Quantized GGUF models end to end on the CPU reference: the reference runs the model as
// stored (the dequantized values exactly, no other rounding), ref32-cpu-bf16w rounds
// exactly those values to bf16 once, a missing output.weight ties the head to the
// quantized embedding, and the real model stored quantized (stories260K-Q8_0) runs
// through info, check, generate and a scenario.
#include <regex>
#include <bit>
#include <fstream>

#include <fmt/core.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "harness/core/checkpoint.h"
#include "harness/core/greedy.h"
#include "harness/core/path_registry.h"
#include "tests/checkpoint/fixtures.h"
#include "tests/checkpoint/gguf_deps.h"
#include "tests/common/test_support.h"

namespace fusecheck::test {
namespace {

namespace fs = std::filesystem;

struct QuantCase {
  std::string name;
  std::uint32_t ggml_type;
  TinyModel model;  // rows hold whole blocks of the type
};
void PrintTo(const QuantCase& c, std::ostream* os) { *os << c.name; }

const std::vector<QuantCase>& quant_cases() {
  static const std::vector<QuantCase> cases = {
      {"Q8_0", 8, {.layers = 2, .hidden = 32, .heads = 2, .kv_heads = 1, .head_dim = 16, .intermediate = 64, .vocab = 17}},
      {"Q4_K", 12, {.layers = 2, .hidden = 256, .heads = 2, .kv_heads = 1, .head_dim = 128, .intermediate = 256, .vocab = 17}},
      {"Q6_K", 14, {.layers = 1, .hidden = 256, .heads = 2, .kv_heads = 1, .head_dim = 128, .intermediate = 256, .vocab = 17}},
  };
  return cases;
}

fs::path fixture_dir() {
  fs::path dir = scratch_dir().string() + ".fixture";
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

// The same model with every tensor stored as `dtype`, holding `ck`'s values as decoded
// (rounded to bf16 when dtype is BF16).
fs::path rewrite_as(const Checkpoint& ck, const TinyModel& m, DType dtype, const fs::path& file) {
  std::vector<std::string> all;
  for (const TensorView& t : ck.tensors()) all.push_back(t.name);
  GgufWriter w = tiny_gguf(m, "llama", DType::F32, all);
  for (const TensorView& t : ck.tensors()) w.tensor(NamedTensor{t.name, t.shape, t.to_float()}, dtype);
  w.write(file);
  return file;
}

// The bits of every logit of a 3-token prefill and 3 greedy steps on `path`.
std::vector<std::uint64_t> logits_bits(const std::string& path, const Checkpoint& ck) {
  register_builtin_paths();
  const auto p = make_path(path, ck, {});
  std::vector<std::uint64_t> bits;
  const std::vector<std::int32_t> prompt = {1, 5, 9};
  greedy_decode(*p, ck.spec().n_layers, prompt, 4, [&](int, const std::vector<TapSet>&, const TapSet& head) {
    const TapMatrix& logits = head.at(Tap::logits);
    for (Eigen::Index i = 0; i < logits.size(); ++i) bits.push_back(std::bit_cast<std::uint64_t>(logits.data()[i]));
  });
  return bits;
}

class QuantizedGguf : public ::testing::TestWithParam<QuantCase> {};

TEST_P(QuantizedGguf, OpensWithQuantizedMatricesAndF32Norms) {
  const QuantCase& c = GetParam();
  const fs::path file = fixture_dir() / "model.gguf";
  tiny_gguf_quantized(c.model, "llama", c.ggml_type, 41).write(file);
  const auto ck = Checkpoint::open(file);
  EXPECT_EQ(ck->spec().dtype, c.name);
  const LayerTensors& l = ck->model().layers.at(0);
  ASSERT_NE(l.wq->codec, nullptr);
  EXPECT_EQ(l.wq->storage_name(), c.name);
  EXPECT_EQ(l.attn_norm->codec, nullptr);
  EXPECT_EQ(ck->model().embed->storage_name(), c.name);
}

TEST_P(QuantizedGguf, ReferenceRunsTheDequantizedValuesExactly) {
  const QuantCase& c = GetParam();
  const fs::path dir = fixture_dir();
  tiny_gguf_quantized(c.model, "llama", c.ggml_type, 43).write(dir / "quantized.gguf");
  const auto quantized = Checkpoint::open(dir / "quantized.gguf");
  const auto f32 = Checkpoint::open(rewrite_as(*quantized, c.model, DType::F32, dir / "f32.gguf"));
  for (const char* path : {"ref32-cpu", "ref64-cpu"}) {
    const auto q = logits_bits(path, *quantized);
    ASSERT_FALSE(q.empty());
    EXPECT_EQ(q, logits_bits(path, *f32)) << path;
  }
}

TEST_P(QuantizedGguf, Bf16WeightsReferenceIsRef32OnTheBf16RoundedValues) {
  const QuantCase& c = GetParam();
  const fs::path dir = fixture_dir();
  tiny_gguf_quantized(c.model, "llama", c.ggml_type, 47).write(dir / "quantized.gguf");
  const auto quantized = Checkpoint::open(dir / "quantized.gguf");
  const auto bf16 = Checkpoint::open(rewrite_as(*quantized, c.model, DType::BF16, dir / "bf16.gguf"));
  const auto rounded = logits_bits("ref32-cpu-bf16w", *quantized);
  EXPECT_EQ(rounded, logits_bits("ref32-cpu", *bf16));
  // Guard: the rounding is not a no-op on these weights.
  EXPECT_NE(rounded, logits_bits("ref32-cpu", *quantized));
}

TEST_P(QuantizedGguf, TiedHeadReusesTheQuantizedEmbedding) {
  const QuantCase& c = GetParam();
  const fs::path dir = fixture_dir();
  tiny_gguf_quantized(c.model, "llama", c.ggml_type, 53, {"output.weight"}).write(dir / "tied.gguf");
  const auto tied = Checkpoint::open(dir / "tied.gguf");
  EXPECT_TRUE(tied->spec().tied_embeddings);
  EXPECT_EQ(tied->model().lm_head, tied->model().embed);
  // The same model with output.weight stored as a copy of token_embd's blocks.
  GgufWriter untied = tiny_gguf_quantized(c.model, "llama", c.ggml_type, 53, {"output.weight"});
  const TensorView& e = *tied->model().embed;
  untied.tensor("output.weight", c.ggml_type, e.shape, std::vector<std::byte>(e.bytes.begin(), e.bytes.end()));
  untied.write(dir / "untied.gguf");
  const auto copy = Checkpoint::open(dir / "untied.gguf");
  EXPECT_FALSE(copy->spec().tied_embeddings);
  const auto bits = logits_bits("ref32-cpu", *tied);
  ASSERT_FALSE(bits.empty());
  EXPECT_EQ(bits, logits_bits("ref32-cpu", *copy));
}

INSTANTIATE_TEST_SUITE_P(Gguf, QuantizedGguf, ::testing::ValuesIn(quant_cases()),
                         [](const auto& info) { return info.param.name; });

// ---- the real model stored quantized ----

class RealQuantized : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto m = quantized_model();
    if (!m) GTEST_SKIP() << quantized_model_skip_reason();
    model_ = *m;
  }
  fs::path model_;
};

TEST_F(RealQuantized, InfoListsStorageTypesWithCountsAndBytes) {
  const CommandResult r = run_fusecheck("info --format json '" + model_.string() + "'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["spec"]["dtype"], "Q8_0");
  // 32 matrices in Q8_0 (34 bytes per 32 values); norms and the 172-wide ffn_down rows F32.
  EXPECT_EQ(j["dtypes"]["Q8_0"]["tensors"], 32);
  EXPECT_EQ(j["dtypes"]["Q8_0"]["bytes"].get<std::uint64_t>(), j["dtypes"]["Q8_0"]["elements"].get<std::uint64_t>() / 32 * 34);
  EXPECT_EQ(j["dtypes"]["F32"]["tensors"], 16);
  EXPECT_EQ(j["dtypes"]["F32"]["bytes"].get<std::uint64_t>(), j["dtypes"]["F32"]["elements"].get<std::uint64_t>() * 4);
}

TEST_F(RealQuantized, CheckReadsTheSameNormsAsTheF32Model) {
  // Quantization leaves 1-D tensors F32: the static score reads the very norm bytes of
  // the original model, so it reports their digest and the original's verdict.
  const auto models = models_dir();
  if (!models) GTEST_SKIP() << models_dir_skip_reason();
  const CommandResult q = run_fusecheck("check '" + model_.string() + "'");
  const CommandResult f = run_fusecheck("check '" + (*models / "stories260K.gguf").string() + "'");
  ASSERT_EQ(q.exit_code, f.exit_code) << q.err << f.err;
  // The line, less the time the read took (" in 1.6 ms"), which differs from run to run.
  const auto line = [](const std::string& out, const std::string& key) {
    const auto at = out.find(key);
    if (at == std::string::npos) return std::string();
    return std::regex_replace(out.substr(at, out.find('\n', at) - at), std::regex(" in [0-9.]+ [mu]?s"), "");
  };
  for (const char* key : {"Status:", "Norm tensors read:", "Architecture:"}) {
    EXPECT_FALSE(line(q.out, key).empty()) << key << " missing in:\n" << q.out;
    EXPECT_EQ(line(q.out, key), line(f.out, key));
  }
}

TEST_F(RealQuantized, RunsAScenarioWithTheBf16WeightsReference) {
  const fs::path dir = fixture_dir();
  const fs::path scenario = dir / "q8.yaml";
  std::ofstream(scenario) << fmt::format(
      "name: stories260k-q8-test\nmodel: {{path: \"{}\"}}\n"
      "tokens: {{ids: [1, 403, 261, 280, 261, 343, 379, 346]}}\nphase: {{prefill: 8}}\n"
      "paths: [standard-cuda, ref32-cpu-bf16w]\nmodes: [isolated, propagated]\nend_to_end: {{greedy_steps: 4}}\n",
      model_.string());
  const CommandResult r = run_fusecheck(fmt::format("run '{}' --device cpu --no-progress --out '{}'", scenario.string(),
                                                    (dir / "q8.h5").string()));
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("ref32-cpu-bf16w: all gates pass"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("emulated-cpu:hf-bf16: all gates pass"), std::string::npos) << r.out;
  EXPECT_TRUE(fs::is_regular_file(dir / "q8.h5"));
}

TEST_F(RealQuantized, GeneratesTheF32ModelsStoryOnRef32) {
  // Q8_0 moves the weights by under 0.4% of each block's largest: the story of the first
  // 32 greedy tokens stays the published one (stories260K.greedy.ids, first 32).
  const auto models = models_dir();
  if (!models) GTEST_SKIP() << models_dir_skip_reason();
  std::ifstream ids_file(*models / "stories260K.greedy.ids");
  std::vector<std::int32_t> published;
  for (std::int32_t id; ids_file >> id && published.size() < 32;) published.push_back(id);
  ASSERT_EQ(published.size(), 32u);
  const auto ck = Checkpoint::open(model_);
  register_builtin_paths();
  const auto path = make_path("ref32-cpu", *ck, {});
  const std::vector<std::int32_t> bos = {1};
  EXPECT_EQ(greedy_decode(*path, ck->spec().n_layers, bos, 32).ids, published);
}

}  // namespace
}  // namespace fusecheck::test
