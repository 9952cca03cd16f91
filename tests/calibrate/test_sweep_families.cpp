// The synthetic-model overrides that the calibration sweep's held-out families need
// (scenarios/calibration/sweep.yaml): outliers in the last layers, and attention shapes
// other than the profile's. Checked on what is written, not on the options.
#include <filesystem>
#include <fstream>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "harness/checkpoint/synth.h"
#include "harness/core/checkpoint.h"
#include "harness/core/error.h"
#include "tests/common/test_support.h"

namespace fusecheck {
namespace {

std::vector<NormPlan> four_plain_layers() { return std::vector<NormPlan>(4, NormPlan{.median = 2.0, .spread = 0.2}); }

TEST(SweepFamilies, LastLayersOverridePutsTheOutliersAtTheEndOfTheDepth) {
  NormOverride o;
  o.max = 50.0;
  o.outlier_layers = 1;
  o.outlier_last = true;
  const auto plans = apply_norm_override(four_plain_layers(), o, 64, "--k-norm-*");
  for (int l = 0; l < 3; ++l) EXPECT_TRUE(plans[static_cast<std::size_t>(l)].outliers.empty()) << "layer " << l;
  ASSERT_EQ(plans[3].outliers.size(), 1u);
  EXPECT_EQ(plans[3].outliers[0], 50.0);
}

TEST(SweepFamilies, FirstLayersStayTheDefault) {
  NormOverride o;
  o.max = 50.0;
  o.outlier_layers = 1;
  const auto plans = apply_norm_override(four_plain_layers(), o, 64, "--k-norm-*");
  EXPECT_EQ(plans[0].outliers.size(), 1u);
  EXPECT_TRUE(plans[3].outliers.empty());
}

nlohmann::json config_of(const std::filesystem::path& dir) {
  std::ifstream in(dir / "config.json");
  return nlohmann::json::parse(in);
}

TEST(SweepFamilies, ShapeOverrideWritesTheNewAttentionShape) {
  const auto dir = test::scratch_dir() / "mha48";
  SynthOptions o;
  o.layers = 1;
  o.shape.heads = 4;
  o.shape.kv_heads = 4;
  o.shape.head_dim = 48;
  o.threads = 1;
  write_synthetic_checkpoint("qwen3-tiny", o, dir);
  const auto c = config_of(dir);
  EXPECT_EQ(c["num_attention_heads"], 4);
  EXPECT_EQ(c["num_key_value_heads"], 4);
  EXPECT_EQ(c["head_dim"], 48);
  const auto ckpt = Checkpoint::open(dir);
  EXPECT_EQ(ckpt->spec().head_dim, 48);
  EXPECT_EQ(ckpt->model().layers[0].k_norm->numel(), 48);
  EXPECT_EQ(ckpt->model().layers[0].wq->rows(), 4 * 48);
  EXPECT_EQ(ckpt->model().layers[0].wk->rows(), 4 * 48);
}

TEST(SweepFamilies, AShapeThatCannotBeIsAnInputErrorNamingTheOption) {
  SynthOptions o;
  o.layers = 1;
  o.shape.kv_heads = 4;  // qwen3-tiny has 6 query heads
  try {
    write_synthetic_checkpoint("qwen3-tiny", o, test::scratch_dir() / "bad");
    FAIL() << "kv_heads 4 of 6 heads was accepted";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("--kv-heads"), std::string::npos) << e.what();
  }
  o.shape = {};
  o.shape.head_dim = 7;
  EXPECT_THROW(write_synthetic_checkpoint("qwen3-tiny", o, test::scratch_dir() / "bad"), InputError);
}

}  // namespace
}  // namespace fusecheck
