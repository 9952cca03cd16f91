// The synthetic-model overrides that the calibration sweep's held-out families need
// (scenarios/calibration/sweep.yaml): outliers in the last layers, and attention shapes
// other than the profile's. Checked on what is written, not on the options.
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
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

// Runs scripts/sweep --dry-run with `args`; its stderr (the point count and the calibrate
// flags it would pass). nullopt when the system Python lacks the script's modules.
std::optional<std::string> sweep_dry_run(const std::string& args) {
  if (std::system("/usr/bin/python3 -c 'import h5py, yaml' >/dev/null 2>&1") != 0) return std::nullopt;
  const auto err = test::scratch_dir() / "sweep.err";
  const std::string cmd = "/usr/bin/python3 " + (test::source_dir() / "scripts" / "sweep").string() +
                          " --dry-run " + args + " >/dev/null 2>" + err.string();
  EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
  std::ifstream in(err);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// The defect of issue 22: --size gpu applied the CI outcome constants unless flags were given.
TEST(SweepScript, TheOutcomeRuleFollowsTheSweepsSize) {
  const auto gpu = sweep_dry_run("--size gpu");
  if (!gpu) GTEST_SKIP() << "/usr/bin/python3 lacks h5py or yaml (scripts/setup installs them)";
  EXPECT_NE(gpu->find("--kl-limit 0.1 --margin-floor 1.0 --top1-min 0.95"), std::string::npos) << *gpu;
  const auto ci = sweep_dry_run("--size ci");
  EXPECT_NE(ci->find("--kl-limit 0.01 --margin-floor 0.1 --top1-min 0.95"), std::string::npos) << *ci;
  const auto flagged = sweep_dry_run("--size gpu --kl-limit 0.2");
  EXPECT_NE(flagged->find("--kl-limit 0.2 --margin-floor 1.0"), std::string::npos) << *flagged;
}

TEST(SweepScript, HeldOutFamiliesArePassedEvenWhenOnlySomePointsRun) {
  const auto out = sweep_dry_run("--size gpu --only '^k_norm-'");
  if (!out) GTEST_SKIP() << "/usr/bin/python3 lacks h5py or yaml (scripts/setup installs them)";
  for (const char* family : {"attn_qk", "final_qk", "gqa", "late", "q_partial", "spread"}) {
    EXPECT_NE(out->find(std::string("--held-out-family ") + family), std::string::npos) << family << ": " << *out;
  }
  EXPECT_EQ(out->find("--held-out-family k_norm"), std::string::npos) << *out;
}

}  // namespace
}  // namespace fusecheck
