// `fusecheck info`: prints every ModelSpec field, the tensor count, bytes per dtype and
// the tensors no role uses, as text or JSON.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/checkpoint/fixtures.h"
#include "tests/common/test_support.h"

namespace fusecheck::test {
namespace {

namespace fs = std::filesystem;

// run_fusecheck() empties scratch_dir(), so fixtures live in a sibling directory.
fs::path fixture_dir() {
  fs::path dir = scratch_dir().string() + ".fixture";
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

TEST(InfoCli, JsonHasEveryFieldAndBytesPerDtype) {
  const fs::path dir = fixture_dir() / "model";
  const TinyModel m{.hf_class = "Qwen3ForCausalLM"};
  std::vector<NamedTensor> tensors = tiny_tensors(m, false);
  std::vector<TensorToWrite> encoded = encode(tensors, DType::BF16);
  encoded.push_back(make_tensor("model.extra.scale", DType::F32, {3}, {0.5f, 1.5f, -2.0f}));
  write_hf_checkpoint(dir, tiny_hf_config(m).dump(), encoded);
  const CommandResult r = run_fusecheck("info --format json '" + dir.string() + "'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["format"], "hf-safetensors");
  const auto& s = j["spec"];
  for (const char* key : {"architecture", "source_format", "n_layers", "hidden", "n_heads", "n_kv_heads", "head_dim",
                          "intermediate", "vocab", "rms_eps", "rope_theta", "rope_dim", "rope_style", "rope_scaling",
                          "has_qk_norm", "has_qkv_bias", "tied_embeddings", "max_position", "bos_id", "eos_id", "dtype"}) {
    EXPECT_TRUE(s.contains(key)) << key;
  }
  EXPECT_EQ(s["architecture"], "qwen3");
  EXPECT_EQ(s["rope_style"], "neox-half-split");
  EXPECT_EQ(s["dtype"], "BF16");
  EXPECT_EQ(j["tensor_count"], tensors.size() + 1);
  std::uint64_t bf16_bytes = 0;
  for (const NamedTensor& t : tensors) bf16_bytes += 2 * t.values.size();
  EXPECT_EQ(j["dtypes"]["BF16"]["bytes"], bf16_bytes);
  EXPECT_EQ(j["dtypes"]["F32"]["bytes"], 12);
  EXPECT_EQ(j["unused_tensors"], nlohmann::json::array({"model.extra.scale"}));
}

TEST(InfoCli, TextShowsStories260KSpec) {
  const auto models = models_dir();
  if (!models) GTEST_SKIP() << models_dir_skip_reason();
  const CommandResult r = run_fusecheck("info '" + (*models / "stories260K.gguf").string() + "'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const char* line : {"architecture     llama", "n_layers         5", "hidden           64", "n_heads          8",
                           "n_kv_heads       4", "head_dim         8", "vocab            512",
                           "rope_style       interleaved", "tied_embeddings  false", "tensors      48",
                           "F32        48 tensors", "unused       none"}) {
    EXPECT_NE(r.out.find(line), std::string::npos) << "missing '" << line << "' in:\n" << r.out;
  }
  EXPECT_TRUE(r.err.empty()) << r.err;
}

TEST(InfoCli, RejectsUnknownFormat) {
  const CommandResult r = run_fusecheck("info --format yaml /nonexistent");
  EXPECT_NE(r.exit_code, 0);
}

}  // namespace
}  // namespace fusecheck::test
