// The seed's scorer on crafted F32 checkpoints: every branch of R, E and M, the status
// boundaries, the published verdicts (Qwen3-0.6B's k_norm statistics: 0.00; a Llama:
// 1.00) and stories260K. Expected values are computed here from the vectors written.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "harness/check/check.h"
#include "harness/core/checkpoint.h"
#include "harness/core/error.h"
#include "tests/check/check_fixtures.h"
#include "tests/common/test_support.h"

namespace fusecheck::check {
namespace {

using test::peaked;
using test::TinyModel;

std::string test_name() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  return std::string(info->test_suite_name()) + "." + info->name();
}

CompatibilityResult check_fixture(const TinyModel& m, Scorer scorer = Scorer::Braidinfer) {
  const auto dir = test::fixture_dir(test_name());
  test::write_tiny_checkpoint(dir, m);
  return check_model(*Checkpoint::open(dir), default_thresholds(), scorer);
}

// A Qwen3 fixture whose layer i has k_norm ks[i] (empty: seeded values in [0.9, 1.1]).
TinyModel qwen3_with_k(const std::vector<std::vector<float>>& ks) {
  TinyModel m;
  for (const auto& k : ks) {
    test::TinyLayerNorms l;
    l.k_norm = k;
    m.layers.push_back(l);
  }
  return m;
}

// The seed's R for a largest k ratio r with the default 20 / 15.
double seed_R(double r) { return r > 20 ? 0.0 : (r > 15 ? 0.5 * (20 - r) / (20 - 15) : 1.0); }

// --- R: the largest k ratio (bulk 0.25 keeps every max under the extreme level 10) ---

TEST(BraidinferRatio, Ratio15KeepsTheFullRatioTerm) {
  const auto r = check_fixture(qwen3_with_k({peaked(8, 0.25f, 3.75f), {}}));
  EXPECT_EQ(r.components[0].value, 15.0);
  EXPECT_EQ(r.components[0].score, 1.0);
  EXPECT_EQ(r.score, 1.0);
  EXPECT_EQ(r.status, Status::Compatible);
}

TEST(BraidinferRatio, RatioJustAbove15JumpsToUnderHalf) {
  const float peak = 3.7525f;  // ratio 15.01
  const auto r = check_fixture(qwen3_with_k({peaked(8, 0.25f, peak), {}}));
  const double ratio = static_cast<double>(peak) / 0.25;
  ASSERT_GT(ratio, 15.0);
  EXPECT_EQ(r.components[0].value, ratio);
  EXPECT_EQ(r.components[0].score, 0.5 * (20 - ratio) / 5);
  EXPECT_LT(r.components[0].score, 0.5);  // the seed's jump: 1 at 15, under 0.5 just above
  EXPECT_EQ(r.score, seed_R(ratio) * 0.4 + 1.0 * 0.3 + 1.0 * 0.3);
  EXPECT_EQ(r.status, Status::Warning);
}

TEST(BraidinferRatio, Ratio20GivesZeroRatioTerm) {
  const auto r = check_fixture(qwen3_with_k({peaked(8, 0.25f, 5.0f), {}}));
  EXPECT_EQ(r.components[0].value, 20.0);
  EXPECT_EQ(r.components[0].score, 0.0);  // 0.5 (20 - 20) / 5
  EXPECT_DOUBLE_EQ(r.score, 0.6);
  EXPECT_EQ(r.status, Status::Warning);
}

TEST(BraidinferRatio, RatioJustAbove20GivesZeroRatioTerm) {
  const auto r = check_fixture(qwen3_with_k({peaked(8, 0.25f, 5.0025f), {}}));
  EXPECT_GT(r.components[0].value, 20.0);
  EXPECT_EQ(r.components[0].score, 0.0);
  EXPECT_DOUBLE_EQ(r.score, 0.6);
}

TEST(BraidinferRatio, QRatioIsIgnored) {
  TinyModel m = qwen3_with_k({{}, {}});
  m.layers[0].q_norm = peaked(8, 0.0625f, 6.25f);  // q ratio 100, max under 10
  const auto r = check_fixture(m);
  EXPECT_EQ(r.score, 1.0);
  EXPECT_DOUBLE_EQ(r.layers[0].find(NormRole::QNorm)->ratio, 100.0);
}

TEST(BraidinferRatio, NegativeOutlierIsNotSeen) {
  auto k = peaked(8, 1.0f, 1.0f);
  k[3] = -96.5f;
  const auto r = check_fixture(qwen3_with_k({k, {}}));
  EXPECT_EQ(r.score, 1.0);
  EXPECT_EQ(r.status, Status::Compatible);
}

// --- E: the fraction of extreme layers (k max 12 > 10, ratio 12, so R = M = 1) ---

TinyModel with_extreme_layers(int extreme, int total) {
  std::vector<std::vector<float>> ks(static_cast<std::size_t>(total));
  for (int i = 0; i < extreme; ++i) ks[static_cast<std::size_t>(i)] = peaked(8, 1.0f, 12.0f);
  return qwen3_with_k(ks);
}

TEST(BraidinferExtremeFraction, ThreeTenthsKeepsTheFullTerm) {
  const auto r = check_fixture(with_extreme_layers(3, 10));
  EXPECT_EQ(r.components[1].value, 0.3);
  EXPECT_EQ(r.components[1].score, 1.0);
  EXPECT_EQ(r.score, 1.0);
}

TEST(BraidinferExtremeFraction, JustAboveThreeTenthsStartsTheRamp) {
  const auto r = check_fixture(with_extreme_layers(4, 13));
  const double x = 4.0 / 13.0;
  const double E = 1.0 - 2 * (x - 0.3);
  EXPECT_EQ(r.components[1].score, E);
  EXPECT_EQ(r.score, 1.0 * 0.4 + E * 0.3 + 1.0 * 0.3);
  EXPECT_EQ(r.status, Status::Compatible);
}

TEST(BraidinferExtremeFraction, HalfGivesPointSix) {
  const auto r = check_fixture(with_extreme_layers(5, 10));
  EXPECT_DOUBLE_EQ(r.components[1].score, 0.6);
  EXPECT_DOUBLE_EQ(r.score, 0.88);
}

TEST(BraidinferExtremeFraction, JustAboveHalfGivesZero) {
  const auto r = check_fixture(with_extreme_layers(6, 11));
  EXPECT_EQ(r.components[1].score, 0.0);
  EXPECT_DOUBLE_EQ(r.score, 0.7);
  EXPECT_EQ(r.status, Status::Warning);
}

TEST(BraidinferExtremeFraction, ExtremeTestIsAbsoluteOnEitherNorm) {
  TinyModel m = qwen3_with_k({{}, {}});
  m.layers[0].q_norm = peaked(8, 10.5f, 10.5f);  // ratio 1, but every value > 10
  const auto r = check_fixture(m);
  EXPECT_TRUE(r.layers[0].extreme);
  EXPECT_FALSE(r.layers[1].extreme);
}

// --- M: the largest k max (bulk 4 keeps ratios <= 12.5; one extreme layer in four) ---

TinyModel with_max_weight(float w) { return qwen3_with_k({peaked(8, 4.0f, w), {}, {}, {}}); }

TEST(BraidinferMaxWeight, Twenty) {
  const auto r = check_fixture(with_max_weight(20.0f));
  EXPECT_EQ(r.components[2].score, 1.0);
  EXPECT_EQ(r.score, 1.0);
}

TEST(BraidinferMaxWeight, JustAboveTwenty) {
  const float w = 20.01f;
  const auto r = check_fixture(with_max_weight(w));
  const double M = (50.0 - static_cast<double>(w)) / 30.0;
  EXPECT_EQ(r.components[2].score, M);
  EXPECT_EQ(r.score, 1.0 * 0.4 + 1.0 * 0.3 + M * 0.3);
}

TEST(BraidinferMaxWeight, Fifty) {
  const auto r = check_fixture(with_max_weight(50.0f));
  EXPECT_EQ(r.components[2].score, 0.0);
  EXPECT_DOUBLE_EQ(r.score, 0.7);
}

TEST(BraidinferMaxWeight, JustAboveFifty) {
  const auto r = check_fixture(with_max_weight(50.01f));
  EXPECT_EQ(r.components[2].score, 0.0);
  EXPECT_DOUBLE_EQ(r.score, 0.7);
  EXPECT_EQ(r.status, Status::Warning);  // one bad component alone cannot go further
}

// --- status boundaries, hit exactly in double arithmetic ---

TEST(BraidinferStatus, ScoreExactlyPointEightIsCompatible) {
  // x = 1/2 (E = 0.6), w = 28 (M = 22/30), ratio 14 (R = 1): 0.4 + 0.18 + 0.22.
  const auto r = check_fixture(qwen3_with_k({peaked(8, 2.0f, 28.0f), {}}));
  ASSERT_EQ(r.score, 0.8);
  EXPECT_EQ(r.status, Status::Compatible);
}

TEST(BraidinferStatus, ScoreExactlyPointFiveIsWarning) {
  // ratio 30 (R = 0), x = 1/4 (E = 1), w = 30 (M = 2/3): 0 + 0.3 + 0.2.
  const auto r = check_fixture(qwen3_with_k({peaked(8, 1.0f, 30.0f), {}, {}, {}}));
  ASSERT_EQ(r.score, 0.5);
  EXPECT_EQ(r.status, Status::Warning);
}

// --- published verdicts ---

// Qwen3-0.6B's reported k_norm statistics (REFERENCE.md section 2): layer 0 max 96.5 at
// 42.3x its median; maxima 44.5, 44.0, 41.75, 34.0 in layers 1, 2, 4, 5; layers 1-7
// above 20x median; 16 of 28 layers with max > 10. head_dim 128 as in the real model.
TinyModel qwen3_published_k_stats() {
  TinyModel m;
  m.hidden = 64;
  m.heads = 2;
  m.kv_heads = 1;
  m.head_dim = 128;
  m.intermediate = 32;
  const float maxima[8] = {96.5f, 44.5f, 44.0f, 30.0f, 41.75f, 34.0f, 25.0f, 22.0f};
  const float medians[8] = {96.5f / 42.3f, 2.0f, 2.0f, 1.4f, 2.0f, 1.6f, 1.2f, 1.0f};
  for (int i = 0; i < 28; ++i) {
    test::TinyLayerNorms l;
    if (i < 8) l.k_norm = peaked(128, medians[i], maxima[i]);
    else if (i < 16) l.k_norm = peaked(128, 1.5f, 15.0f);  // extreme (> 10), ratio 10
    else l.k_norm = peaked(128, 1.0f, 8.0f);
    l.q_norm = test::seeded_uniform(128, 0.5f, 2.0f, 100u + static_cast<unsigned>(i));
    m.layers.push_back(l);
  }
  return m;
}

TEST(BraidinferPublished, Qwen3KNormStatisticsScoreZeroIncompatible) {
  const TinyModel m = qwen3_published_k_stats();
  const auto r = check_fixture(m);
  EXPECT_EQ(r.analysed_layers(), 28);
  EXPECT_NEAR(r.components[0].value, 42.3, 1e-3);  // largest k ratio
  EXPECT_DOUBLE_EQ(r.components[1].value, 16.0 / 28.0);
  EXPECT_EQ(r.components[2].value, 96.5);
  EXPECT_EQ(r.score, 0.0);
  EXPECT_EQ(r.status, Status::Incompatible);

  // The seed's amplification: product over extreme layers of 1 + 0.001 (max_k + max_q) / 2.
  double amplification = 1.0;
  int extreme = 0;
  for (const auto& l : m.layers) {
    const double max_k = *std::max_element(l.k_norm.begin(), l.k_norm.end());
    const double max_q = *std::max_element(l.q_norm.begin(), l.q_norm.end());
    if (max_k > 10 || max_q > 10) {
      amplification *= 1.0 + 0.001 * ((max_k + max_q) / 2.0);
      ++extreme;
    }
  }
  ASSERT_EQ(extreme, 16);
  EXPECT_DOUBLE_EQ(r.estimated_amplification, amplification);
  char expected_reason[200];
  std::snprintf(expected_reason, sizeof expected_reason,
                "Found 16/28 layers with extreme weights; Maximum weight: 96.5; Estimated error amplification: %.1fx",
                amplification);
  EXPECT_EQ(r.reason, expected_reason);
  ASSERT_EQ(r.recommendations.size(), 3u);
  EXPECT_EQ(r.recommendations[0], "Use standard kernels only");
  EXPECT_EQ(r.recommendations[2], "Layers [0, 1, 2] have particularly extreme weights");
}

TEST(BraidinferPublished, LlamaWithoutQkNormsScoresOneCompatible) {
  TinyModel m;
  m.qwen3 = false;
  m.layers.resize(3);
  m.layers[1].attn_norm = peaked(16, 0.5f, 90.0f);  // never read by this scorer
  const auto r = check_fixture(m);
  EXPECT_EQ(r.analysed_layers(), 0);
  EXPECT_EQ(r.score, 1.0);
  EXPECT_EQ(r.status, Status::Compatible);
  EXPECT_EQ(r.reason, "Model weights are within normal ranges.");
  EXPECT_EQ(r.estimated_amplification, 1.0);
  EXPECT_EQ(r.model.norm_tensors_read, 0);
}

TEST(BraidinferPublished, Stories260KScoresOneCompatible) {
  const auto models = test::models_dir();
  if (!models) GTEST_SKIP() << test::models_dir_skip_reason();
  const auto r = check_model(*Checkpoint::open(*models / "stories260K.gguf"), default_thresholds(),
                             Scorer::Braidinfer);
  EXPECT_EQ(r.score, 1.0);
  EXPECT_EQ(r.status, Status::Compatible);
  EXPECT_EQ(r.analysed_layers(), 0);
}

// --- the seed's handling of partial q/k norms (plain weights: no checkpoint has them) ---

LayerNormWeights qk_layer(int i, std::optional<NamedWeights> q, std::optional<NamedWeights> k) {
  LayerNormWeights l;
  l.layer = i;
  l.q_norm = std::move(q);
  l.k_norm = std::move(k);
  return l;
}

TEST(BraidinferPartial, OneMissingNormIsTakenAsAllOnesAndNeitherSkipsTheLayer) {
  ModelNormWeights w;
  w.layers.push_back(qk_layer(0, std::nullopt, NamedWeights{"k0", {1.0, 2.0, 3.0, 12.0}}));
  w.layers.push_back(qk_layer(1, std::nullopt, std::nullopt));  // no q/k norms: skipped
  w.layers.push_back(qk_layer(2, NamedWeights{"q2", {1.0, 1.0, 1.0, 4.0}}, std::nullopt));
  const auto r = score_norm_weights(w, default_thresholds(), Scorer::Braidinfer);
  ASSERT_EQ(r.analysed_layers(), 2);
  EXPECT_EQ(r.layers[0].layer, 0);
  EXPECT_EQ(r.layers[1].layer, 2);
  const NormStats* q0 = r.layers[0].find(NormRole::QNorm);
  EXPECT_TRUE(q0->assumed_ones);
  EXPECT_EQ(q0->max, 1.0);
  EXPECT_EQ(q0->ratio, 1.0);
  EXPECT_TRUE(r.layers[1].find(NormRole::KNorm)->assumed_ones);
  EXPECT_TRUE(r.layers[0].extreme);  // k max 12 > 10
  EXPECT_DOUBLE_EQ(r.layers[0].amplification, 1.0 + 0.001 * ((12.0 + 1.0) / 2.0));
}

TEST(BraidinferThresholdFlag, MovesSafeAndWarningRatios) {
  Thresholds t = default_thresholds();
  apply_threshold_flag(t, 12.0);  // safe 12, warning 9
  ModelNormWeights w;
  w.layers.push_back(qk_layer(0, std::nullopt, NamedWeights{"k", {1.0, 1.0, 1.0, 10.0}}));  // ratio 10
  const auto r = score_norm_weights(w, t, Scorer::Braidinfer);
  EXPECT_EQ(r.components[0].score, 0.5 * (12.0 - 10.0) / (12.0 - 9.0));
}

TEST(BraidinferInput, NonFiniteWeightIsAnInputError) {
  ModelNormWeights w;
  w.layers.push_back(qk_layer(0, std::nullopt, NamedWeights{"k", {1.0, std::nan(""), 1.0}}));
  EXPECT_THROW(score_norm_weights(w, default_thresholds(), Scorer::Braidinfer), InputError);
}

}  // namespace
}  // namespace fusecheck::check
