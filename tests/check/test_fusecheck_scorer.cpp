// Our scorer: figures computed here from the vectors (ratios, peak gains, the q/k logit
// amplification, the model's rms), continuity, one extreme component reaching
// INCOMPATIBLE, the identity hash, and stories260K's published norm ratios.
#include <algorithm>
#include <cmath>
#include <limits>
#include <span>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "harness/check/check.h"
#include "harness/core/checkpoint.h"
#include "harness/core/error.h"
#include "harness/core/tensor.h"
#include "tests/check/check_fixtures.h"
#include "tests/common/test_support.h"

namespace fusecheck::check {
namespace {

using test::peaked;
using test::TinyModel;

// The ramps these tests reason with (results/thresholds/hand-written.json), fixed so that a
// calibrated default file does not change what the scorer's tests assert.
const Thresholds& reasoned() {
  static const Thresholds t = load_thresholds(test::source_dir() / "results" / "thresholds" / "hand-written.json");
  return t;
}

std::string test_name() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  return std::string(info->test_suite_name()) + "." + info->name();
}

CompatibilityResult check_fixture(const TinyModel& m, const std::string& suffix = "",
                                  Scorer scorer = Scorer::Fusecheck) {
  const auto dir = test::fixture_dir(test_name() + suffix);
  test::write_tiny_checkpoint(dir, m);
  return check_model(*Checkpoint::open(dir), reasoned(), scorer);
}

std::vector<double> as_double(const std::vector<float>& v) { return {v.begin(), v.end()}; }

double rms(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x * x;
  return std::sqrt(s / static_cast<double>(v.size()));
}

// A benign layer of plain weights: seeded norms near 1.
LayerNormWeights benign_layer(int i, int hidden = 64, int head_dim = 16) {
  const unsigned s = 10u * static_cast<unsigned>(i);
  LayerNormWeights l;
  l.layer = i;
  l.attn_norm = NamedWeights{"attn" + std::to_string(i), as_double(test::seeded_uniform(hidden, 0.8f, 1.2f, s + 1))};
  l.q_norm = NamedWeights{"q" + std::to_string(i), as_double(test::seeded_uniform(head_dim, 0.8f, 1.2f, s + 2))};
  l.k_norm = NamedWeights{"k" + std::to_string(i), as_double(test::seeded_uniform(head_dim, 0.8f, 1.2f, s + 3))};
  l.mlp_norm = NamedWeights{"mlp" + std::to_string(i), as_double(test::seeded_uniform(hidden, 0.8f, 1.2f, s + 4))};
  return l;
}

ModelNormWeights benign_model(int layers) {
  ModelNormWeights m;
  for (int i = 0; i < layers; ++i) m.layers.push_back(benign_layer(i));
  m.final_norm = NamedWeights{"final", as_double(test::seeded_uniform(64, 0.8f, 1.2f, 999))};
  return m;
}

double score_of(const ModelNormWeights& m) { return score_norm_weights(m, reasoned(), Scorer::Fusecheck).score; }

TEST(FusecheckScorer, BenignModelIsCompatibleWithScoreOne) {
  const auto r = score_norm_weights(benign_model(4), reasoned(), Scorer::Fusecheck);
  EXPECT_EQ(r.score, 1.0);
  EXPECT_EQ(r.status, Status::Compatible);
  EXPECT_EQ(r.layers.size(), 4u);
  ASSERT_TRUE(r.final_norm.has_value());
}

TEST(FusecheckScorer, QkAmplificationIsRmsOfTheChannelProducts) {
  ModelNormWeights m;
  LayerNormWeights l;
  l.q_norm = NamedWeights{"q", {1.0, 2.0, 0.5, 1.0}};
  l.k_norm = NamedWeights{"k", {3.0, 1.0, 4.0, 1.0}};
  m.layers.push_back(l);
  const auto r = score_norm_weights(m, reasoned(), Scorer::Fusecheck);
  EXPECT_DOUBLE_EQ(r.layers[0].qk_amplification, rms({3.0, 2.0, 2.0, 1.0}));
  EXPECT_DOUBLE_EQ(r.layers[0].amplification, r.layers[0].qk_amplification);
}

TEST(FusecheckScorer, MissingHalfOfTheQkPairCountsAsOnes) {
  ModelNormWeights m;
  LayerNormWeights l;
  l.k_norm = NamedWeights{"k", {3.0, 1.0, 4.0, 1.0}};
  m.layers.push_back(l);
  const auto r = score_norm_weights(m, reasoned(), Scorer::Fusecheck);
  EXPECT_DOUBLE_EQ(r.layers[0].qk_amplification, rms({3.0, 1.0, 4.0, 1.0}));
}

TEST(FusecheckScorer, MismatchedQkLengthsAreAnInputError) {
  ModelNormWeights m;
  LayerNormWeights l;
  l.q_norm = NamedWeights{"q", {1.0, 2.0}};
  l.k_norm = NamedWeights{"k", {3.0, 1.0, 4.0}};
  m.layers.push_back(l);
  EXPECT_THROW(score_norm_weights(m, reasoned(), Scorer::Fusecheck), InputError);
}

TEST(FusecheckScorer, LayerFigureIsTheLargestOfItsGainsAndQk) {
  ModelNormWeights m = benign_model(1);
  m.layers[0].mlp_norm->values.back() = 6.0;  // peak gain of mlp_norm dominates
  const auto r = score_norm_weights(m, reasoned(), Scorer::Fusecheck);
  const double mlp_gain = 6.0 / rms(m.layers[0].mlp_norm->values);
  EXPECT_DOUBLE_EQ(r.layers[0].find(NormRole::MlpNorm)->peak_gain, mlp_gain);
  EXPECT_DOUBLE_EQ(r.layers[0].amplification, mlp_gain);
}

TEST(FusecheckScorer, ModelFigureIsRmsOfLayerAndFinalNormFigures) {
  const ModelNormWeights m = benign_model(3);
  const auto r = score_norm_weights(m, reasoned(), Scorer::Fusecheck);
  double sum_sq = 0;
  for (const auto& l : r.layers) sum_sq += l.amplification * l.amplification;
  sum_sq += r.final_norm->peak_gain * r.final_norm->peak_gain;
  EXPECT_DOUBLE_EQ(r.estimated_amplification, std::sqrt(sum_sq / 4));
}

TEST(FusecheckScorer, UsesAbsoluteValues) {
  ModelNormWeights plus = benign_model(2), minus = benign_model(2);
  plus.layers[1].k_norm->values[5] = 96.5;
  minus.layers[1].k_norm->values[5] = -96.5;
  EXPECT_EQ(score_of(plus), score_of(minus));
  EXPECT_LT(score_of(minus), 0.8);
}

TEST(FusecheckScorer, OneExtremeComponentReachesIncompatible) {
  ModelNormWeights m = benign_model(28);
  m.layers[13].attn_norm->values[7] = 200.0;  // one channel of one hidden norm
  const auto r = score_norm_weights(m, reasoned(), Scorer::Fusecheck);
  EXPECT_EQ(r.status, Status::Incompatible);
  EXPECT_NE(r.reason.find("layer 13 attn_norm"), std::string::npos) << r.reason;
  EXPECT_NE(r.recommendations.back().find("[13]"), std::string::npos);
}

TEST(FusecheckScorer, ScoreIsTheMinimumOfItsComponents) {
  ModelNormWeights m = benign_model(3);
  m.layers[2].k_norm->values[0] = 40.0;
  const auto r = score_norm_weights(m, reasoned(), Scorer::Fusecheck);
  double lowest = 1.0;
  for (const auto& c : r.components) lowest = std::min(lowest, c.score);
  EXPECT_EQ(r.score, lowest);
  // The worst is layer 2's k_norm ratio; its score is the ramp's, computed here.
  const auto stats = absolute_stats(m.layers[2].k_norm->values);
  const double t = std::log(stats.ratio / 16.0) / std::log(64.0 / 16.0);
  EXPECT_DOUBLE_EQ(r.score, 0.8 * (1 - t) + 0.5 * t);
}

TEST(FusecheckScorer, ScoreIsContinuousAndMonotoneInAnOutlier) {
  ModelNormWeights m = benign_model(4);
  double previous = score_of(m);
  for (double peak = 1.0; peak < 2000.0; peak *= 1.002) {
    m.layers[1].k_norm->values[3] = peak;
    const double s = score_of(m);
    EXPECT_LE(s, previous + 1e-12) << "at " << peak;
    EXPECT_LT(previous - s, 2e-3) << "jump at " << peak;
    previous = s;
  }
  EXPECT_EQ(previous, 0.0);
}

TEST(FusecheckScorer, BraidinferJumpsWhereFusecheckDoesNot) {
  ModelNormWeights m = benign_model(4);
  auto at = [&](double peak, Scorer s) {
    for (auto& v : m.layers[1].k_norm->values) v = 0.5;
    m.layers[1].k_norm->values[3] = peak;
    return score_norm_weights(m, reasoned(), s).score;
  };
  // k ratio 15 -> 15.02: the seed's score falls by 0.2; ours barely moves.
  EXPECT_GT(at(7.5, Scorer::Braidinfer) - at(7.51, Scorer::Braidinfer), 0.19);
  EXPECT_LT(std::fabs(at(7.5, Scorer::Fusecheck) - at(7.51, Scorer::Fusecheck)), 1e-3);
}

TEST(FusecheckScorer, PublishedQwen3KNormStatsFlagLayerZero) {
  // Layer 0 k_norm: 127 channels at the median, one at 96.5 (ratio 42.3): between the
  // norm-ratio ramp's warn (16) and fail (64).
  ModelNormWeights m = benign_model(2);
  m.layers[0].k_norm->values.assign(128, 96.5 / 42.3);
  m.layers[0].k_norm->values[17] = 96.5;
  m.layers[0].q_norm->values = as_double(test::seeded_uniform(128, 0.8f, 1.2f, 5));
  const auto r = score_norm_weights(m, reasoned(), Scorer::Fusecheck);
  const double t = std::log(42.3 / 16.0) / std::log(4.0);
  EXPECT_NEAR(r.score, 0.8 * (1 - t) + 0.5 * t, 1e-9);
  EXPECT_EQ(r.status, Status::Warning);
  EXPECT_TRUE(r.layers[0].extreme);
  EXPECT_FALSE(r.layers[1].extreme);
}

// --- through a checkpoint ---

TEST(FusecheckCheckpoint, ReadsEveryNormTensorAndOnlyThose) {
  TinyModel m;
  m.layers.resize(3);
  const auto r = check_fixture(m);
  EXPECT_EQ(r.model.architecture, "qwen3");
  EXPECT_EQ(r.model.norm_tensors_read, 3 * 4 + 1);
  EXPECT_EQ(r.model.norm_bytes_read, static_cast<std::uint64_t>(4 * (3 * (2 * 16 + 2 * 8) + 16)));
  EXPECT_EQ(r.model.norm_sha256.size(), 64u);
  EXPECT_EQ(r.layers.size(), 3u);
  EXPECT_EQ(r.layers[0].norms.size(), 4u);
}

TEST(FusecheckCheckpoint, FiguresMatchTheVectorsWritten) {
  TinyModel m;
  m.layers.resize(2);
  m.layers[1].attn_norm = test::seeded_uniform(16, -3.0f, 3.0f, 77);
  m.layers[1].q_norm = test::seeded_uniform(8, 0.5f, 2.0f, 78);
  m.layers[1].k_norm = peaked(8, 1.5f, 30.0f);
  const auto r = check_fixture(m);
  const auto attn = absolute_stats(as_double(m.layers[1].attn_norm));
  const NormStats* got = r.layers[1].find(NormRole::AttnNorm);
  EXPECT_EQ(got->max, attn.max);
  EXPECT_EQ(got->median, attn.median);
  EXPECT_EQ(got->ratio, attn.ratio);
  std::vector<double> prod;
  for (int i = 0; i < 8; ++i) prod.push_back(double(m.layers[1].q_norm[i]) * double(m.layers[1].k_norm[i]));
  EXPECT_DOUBLE_EQ(r.layers[1].qk_amplification, rms(prod));
  EXPECT_EQ(r.layers[1].find(NormRole::KNorm)->ratio, 20.0);
}

TEST(FusecheckCheckpoint, HashFollowsNormBytesNotProjections) {
  TinyModel a;
  a.layers.resize(2);
  for (auto& l : a.layers) {
    l.attn_norm = test::seeded_uniform(16, 0.9f, 1.1f, 1);
    l.q_norm = test::seeded_uniform(8, 0.9f, 1.1f, 2);
    l.k_norm = test::seeded_uniform(8, 0.9f, 1.1f, 3);
    l.mlp_norm = test::seeded_uniform(16, 0.9f, 1.1f, 4);
  }
  a.final_norm = test::seeded_uniform(16, 0.9f, 1.1f, 5);
  TinyModel other_projections = a;
  other_projections.seed = 999;
  TinyModel other_norm = a;
  other_norm.layers[1].k_norm[2] = 1.5f;
  const auto h = check_fixture(a, "a").model.norm_sha256;
  EXPECT_EQ(check_fixture(other_projections, "b").model.norm_sha256, h);
  EXPECT_NE(check_fixture(other_norm, "c").model.norm_sha256, h);
}

// A model of `n` layers whose q and k norms are all `v[i]` in layer i: A_qk(i) = v[i]^2.
ModelNormWeights qk_layers(const std::vector<double>& v) {
  ModelNormWeights m;
  for (double x : v) {
    LayerNormWeights l;
    l.layer = static_cast<int>(m.layers.size());
    l.q_norm = NamedWeights{"q", std::vector<double>(4, x)};
    l.k_norm = NamedWeights{"k", std::vector<double>(4, x)};
    m.layers.push_back(l);
  }
  return m;
}

double qk_depth_of(const ModelNormWeights& m) {
  const auto r = score_norm_weights(m, reasoned(), Scorer::Fusecheck);
  const auto it = std::find_if(r.components.begin(), r.components.end(),
                               [](const Component& c) { return c.name == "model.qk_depth"; });
  EXPECT_NE(it, r.components.end());
  EXPECT_EQ(it->fail, reasoned().qk_depth_amplification.fail);
  return it == r.components.end() ? 0.0 : it->value;
}

// Layer i of n weighs 0.25 + 0.75 (1 - i/n)^2 (issue 22, fourth round).
double depth_weight(int i, int n) { return 0.25 + 0.75 * std::pow(1.0 - static_cast<double>(i) / n, 2.0); }

// q/k amplification 4, 0.25 (floored at 1) and 9 in layers 0, 1, 2 of 3, no final norm:
// the depth figure is exp((1 ln 4 + w_1 ln 1 + w_2 ln 9) / 3), w_2 = 0.25 + 0.75/9.
TEST(FusecheckScorer, QkDepthIsTheDepthWeightedGeometricMeanOfLayerAmplificationsFlooredAtOne) {
  EXPECT_NEAR(qk_depth_of(qk_layers({2.0, 0.5, 3.0})),
              std::exp((std::log(4.0) + (0.25 + 0.75 / 9.0) * std::log(9.0)) / 3.0), 1e-12);
}

// Issue 22, third and fourth rounds: the same outlier (A_qk 9) counts as in the plain
// geometric mean in the top layer, and less the less depth is left after it, never less than
// a quarter: layer i of 4 weighs 0.25 + 0.75 (1 - i/4)^2.
TEST(FusecheckScorer, QkDepthCountsALayerLessTheDeeperItSits) {
  double previous = std::numeric_limits<double>::infinity();
  for (int at = 0; at < 4; ++at) {
    std::vector<double> v(4, 1.0);
    v[static_cast<std::size_t>(at)] = 3.0;
    const double d = qk_depth_of(qk_layers(v));
    EXPECT_NEAR(d, std::exp(depth_weight(at, 4) * std::log(9.0) / 4.0), 1e-12) << "outlier in layer " << at;
    EXPECT_LT(d, previous) << "outlier in layer " << at;
    previous = d;
  }
  EXPECT_NEAR(qk_depth_of(qk_layers({3.0, 1.0, 1.0, 1.0})), std::pow(9.0, 0.25), 1e-12);  // plain mean's value
  EXPECT_NEAR(qk_depth_of(qk_layers({1.0, 1.0, 1.0, 3.0})), std::pow(9.0, (0.25 + 0.75 / 16.0) / 4.0), 1e-12);
  EXPECT_EQ(qk_depth_of(qk_layers({1.0, 1.0, 1.0, 1.0})), 1.0);
}

// Issue 22, fourth round: the final norm is one more stage of the depth product, at weight
// 1. Unit q/k weights in 4 layers and a final norm of 63 ones and one 15 (rms sqrt(288/64),
// peak gain 15 / that = 7.07): D = 7.07^(1/4). With q/k amplification 9 in layer 0 too, the
// two stages multiply: D = (9 * 7.07)^(1/4). A final norm of ones (gain 1) adds nothing.
TEST(FusecheckScorer, QkDepthCountsTheFinalNormAsOneMoreStage) {
  const double gain = 15.0 / std::sqrt(288.0 / 64.0);
  auto with_final = [](std::vector<double> qk, double peak) {
    ModelNormWeights m = qk_layers(qk);
    std::vector<double> f(64, 1.0);
    f[17] = peak;
    m.final_norm = NamedWeights{"model.norm.weight", f};
    return m;
  };
  EXPECT_NEAR(qk_depth_of(with_final({1.0, 1.0, 1.0, 1.0}, 15.0)), std::pow(gain, 0.25), 1e-12);
  EXPECT_NEAR(qk_depth_of(with_final({3.0, 1.0, 1.0, 1.0}, 15.0)), std::pow(9.0 * gain, 0.25), 1e-12);
  EXPECT_EQ(qk_depth_of(with_final({1.0, 1.0, 1.0, 1.0}, 1.0)), 1.0);
  // Read from a checkpoint: the same figure (F32 norms, so the stored values are these).
  TinyModel t;
  for (int i = 0; i < 4; ++i) t.layers.push_back({{}, std::vector<float>(8, 1.0f), std::vector<float>(8, i == 0 ? 9.0f : 1.0f), {}});
  t.final_norm = std::vector<float>(16, 1.0f);
  t.final_norm[3] = 15.0f;  // rms sqrt(240/16), gain 15 / sqrt(15) = sqrt(15)
  const auto r = check_fixture(t, "final-stage");
  const auto it = std::find_if(r.components.begin(), r.components.end(),
                               [](const Component& c) { return c.name == "model.qk_depth"; });
  ASSERT_NE(it, r.components.end());
  EXPECT_NEAR(it->value, std::pow(9.0 * std::sqrt(15.0), 0.25), 1e-9);
}

// The figure the scorer reports is the one calibration recomputes from per-layer figures.
TEST(FusecheckScorer, QkDepthIsQkDepthFigureOfTheLayersAmplifications) {
  const auto m = qk_layers({1.5, 2.0, 0.7, 3.0, 1.1});
  const auto r = score_norm_weights(m, reasoned(), Scorer::Fusecheck);
  std::vector<double> per_layer;
  for (const auto& l : r.layers) per_layer.push_back(l.qk_amplification);
  EXPECT_EQ(qk_depth_of(m), qk_depth_figure(per_layer));
}

TEST(FusecheckScorer, ManyModeratelyAmplifyingLayersFailOnDepthAlone) {
  // Every layer at q/k amplification 7: under the per-layer fail (32), past the depth fail
  // (the depth figure at least 7^(4.39/8) = 2.91: layer i of 8 weighs 0.25 + 0.75 (1 - i/8)^2,
  // 4.39 in all; the final norm's stage only adds).
  ModelNormWeights m = benign_model(8);
  for (auto& l : m.layers) {
    l.q_norm->values.assign(16, 1.0);
    l.k_norm->values.assign(16, 7.0);
  }
  Thresholds t = reasoned();
  t.qk_depth_amplification = {1.5, 2.0};
  const auto r = score_norm_weights(m, t, Scorer::Fusecheck);
  EXPECT_EQ(r.status, Status::Incompatible);
  EXPECT_NE(r.reason.find("model.qk_depth"), std::string::npos) << r.reason;
}

// The GPU sweep: a final-norm gain of 16.3 diverged where attn_norm gains up to 31.8 in
// every layer mostly did not, so the final norm has its own ramp (hidden_norm_gain's when a
// thresholds file has none).
TEST(FusecheckScorer, TheFinalNormGainIsScoredOnItsOwnRampWhenGiven) {
  ModelNormWeights m = benign_model(8);  // deep enough that the rms of the stage figures stays under its warn
  m.final_norm->values.assign(64, 1.0);
  m.final_norm->values[0] = 15.0;  // ratio 15, gain 15 / rms = 7.1: under the hand-written warns 16 and 8
  const auto hidden_ramp = score_norm_weights(m, reasoned(), Scorer::Fusecheck);
  EXPECT_EQ(hidden_ramp.status, Status::Compatible);
  Thresholds t = reasoned();
  t.final_norm_gain = {3.0, 6.0};
  const auto own_ramp = score_norm_weights(m, t, Scorer::Fusecheck);
  EXPECT_EQ(own_ramp.status, Status::Incompatible);
  EXPECT_NE(own_ramp.reason.find("final_norm.gain"), std::string::npos) << own_ramp.reason;
  const auto it = std::find_if(own_ramp.components.begin(), own_ramp.components.end(),
                               [](const Component& c) { return c.name == "final_norm.gain"; });
  ASSERT_NE(it, own_ramp.components.end());
  EXPECT_EQ(it->fail, 6.0);
}

TEST(FusecheckScorer, ASuperWeightFigureIsScoredOnlyWhenGiven) {
  ModelNormWeights m = benign_model(2);
  EXPECT_EQ(score_of(m), 1.0);
  SuperWeight w;
  w.layer = 1;
  w.figure = 5000;
  m.super_weights.push_back(w);
  const auto r = score_norm_weights(m, reasoned(), Scorer::Fusecheck);
  EXPECT_EQ(r.status, Status::Incompatible);
  EXPECT_NE(r.reason.find("layer 1 mlp.super_weight"), std::string::npos) << r.reason;
}

// A row-major F32 tensor over `values` (kept alive by the caller).
TensorView f32_view(const std::string& name, std::int64_t rows, std::int64_t cols, const std::vector<float>& values) {
  TensorView t;
  t.name = name;
  t.dtype = DType::F32;
  t.shape = {rows, cols};
  t.bytes = std::as_bytes(std::span<const float>(values));
  t.file = "memory";
  return t;
}

// down [6 x 10] of seeded values in [-1, 1] with 50 planted at [2, 7]; gate and up rows of
// equal norm (alternating +-0.5) except row 7, three times larger in each: the neuron's
// rows are 3 * 3 = 9 times a typical neuron's.
struct PlantedMlp {
  std::vector<float> down = test::seeded_uniform(60, -1.0f, 1.0f, 77);
  std::vector<float> gate, up;
  PlantedMlp() {
    down[2 * 10 + 7] = 50.0f;
    for (int r = 0; r < 10; ++r) {
      for (int c = 0; c < 6; ++c) {
        const float v = (c % 2 ? 0.5f : -0.5f) * (r == 7 ? 3.0f : 1.0f);
        gate.push_back(v);
        up.push_back(-v);
      }
    }
  }
};

TEST(SuperWeight, FindsThePlantedEntryAndTheNeuronFeedingIt) {
  const PlantedMlp mlp;
  const TensorView down = f32_view("down", 6, 10, mlp.down), gate = f32_view("gate", 10, 6, mlp.gate),
                   up = f32_view("up", 10, 6, mlp.up);
  DeepRead read;
  const SuperWeight w = find_super_weight(down, &gate, &up, 3, read);
  EXPECT_EQ(w.layer, 3);
  EXPECT_EQ(w.channel, 2);
  EXPECT_EQ(w.neuron, 7);
  EXPECT_EQ(w.value, 50.0);
  double others_sq = 0;  // the scale leaves the entry itself out
  for (float x : mlp.down) others_sq += x == 50.0f ? 0.0 : static_cast<double>(x) * x;
  EXPECT_EQ(w.numel, 60);
  EXPECT_NEAR(w.entry_gain, 50.0 / std::sqrt(others_sq / 59), 1e-9);
  EXPECT_NEAR(w.neuron_gain, 9.0, 1e-9);
  EXPECT_NEAR(w.figure, w.entry_gain * 9.0, 1e-9);
  EXPECT_EQ(read.tensors_read, 1);
  EXPECT_GT(read.rows_read, 2);
  EXPECT_GE(read.bytes_read, 60u * 4u);
}

// Measured against every entry, one huge entry's gain saturates at sqrt(numel) (the GPU
// sweep's planted 128, 512 and 2048 all read 1720-1773 in a 1024 x 3072 down_proj);
// against the others it grows with the entry.
TEST(SuperWeight, EntryGainKeepsGrowingPastSqrtNumel) {
  const std::int64_t numel = 1024 * 3072;
  const double bulk_sq = static_cast<double>(numel - 1) * 0.018 * 0.018;  // rms 0.018, as the sweep's
  double previous = 0;
  for (double entry : {32.0, 128.0, 512.0, 2048.0}) {
    const double gain = super_weight_entry_gain(entry, bulk_sq + entry * entry, numel);
    EXPECT_NEAR(gain, entry / 0.018, 1e-6 * entry / 0.018) << "entry " << entry;
    EXPECT_GT(gain, previous);
    previous = gain;
  }
  EXPECT_GT(previous, 50 * std::sqrt(static_cast<double>(numel)));  // 2048: far past the old ceiling
}

TEST(SuperWeight, EntryGainIsOneWithoutOtherEntries) {
  EXPECT_EQ(super_weight_entry_gain(3.0, 9.0, 1), 1.0);
  EXPECT_EQ(super_weight_entry_gain(3.0, 9.0, 4), 1.0);  // the others are all zero
}

TEST(SuperWeight, WithoutGateAndUpTheFigureIsTheEntryGain) {
  const PlantedMlp mlp;
  DeepRead read;
  const SuperWeight w = find_super_weight(f32_view("down", 6, 10, mlp.down), nullptr, nullptr, 0, read);
  EXPECT_EQ(w.neuron_gain, 1.0);
  EXPECT_EQ(w.figure, w.entry_gain);
  EXPECT_EQ(read.rows_read, 0);
}

TEST(SuperWeight, ANonFiniteEntryIsAnInputErrorNamingTheTensor) {
  PlantedMlp mlp;
  mlp.down[13] = std::numeric_limits<float>::quiet_NaN();
  DeepRead read;
  try {
    find_super_weight(f32_view("model.layers.0.mlp.down_proj.weight", 6, 10, mlp.down), nullptr, nullptr, 0, read);
    FAIL() << "no error";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("down_proj"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("element 13"), std::string::npos) << e.what();
  }
}

TEST(SuperWeight, GateRowsThatDoNotMatchTheDownProjectionAreAnInputError) {
  const PlantedMlp mlp;
  const std::vector<float> short_gate(9 * 6, 1.0f);
  DeepRead read;
  const TensorView gate = f32_view("gate", 9, 6, short_gate);
  EXPECT_THROW(find_super_weight(f32_view("down", 6, 10, mlp.down), &gate, nullptr, 0, read), InputError);
}

TEST(SuperWeight, CheckReadsTheDownProjectionsOnlyWhenDeep) {
  TinyModel m;
  m.layers.resize(3);
  const auto dir = test::fixture_dir(test_name());
  test::write_tiny_checkpoint(dir, m);
  const auto ckpt = Checkpoint::open(dir);
  const auto shallow = check_model(*ckpt, reasoned(), Scorer::Fusecheck);
  EXPECT_FALSE(shallow.deep.has_value());
  const auto deep = check_model(*ckpt, reasoned(), Scorer::Fusecheck, true);
  ASSERT_TRUE(deep.deep.has_value());
  EXPECT_EQ(deep.deep->layers.size(), 3u);
  EXPECT_EQ(deep.deep->tensors_read, 3);
  EXPECT_EQ(deep.deep->bytes_read - 3u * 16u * 24u * 4u,
            static_cast<std::uint64_t>(deep.deep->rows_read) * 16u * 4u);  // F32 rows of width hidden
  EXPECT_EQ(deep.model.norm_sha256, shallow.model.norm_sha256);  // the identity stays the norms'
  EXPECT_THROW(check_model(*ckpt, reasoned(), Scorer::Braidinfer, true), InputError);
}

TEST(FusecheckCheckpoint, Stories260KNormRatiosMatchThePublishedOnes) {
  const auto models = test::models_dir();
  if (!models) GTEST_SKIP() << test::models_dir_skip_reason();
  const auto r = check_model(*Checkpoint::open(*models / "stories260K.gguf"), reasoned(),
                             Scorer::Fusecheck);
  // models/README.md: max|w| / median|w| per layer, and output_norm 2.58.
  const double attn[5] = {2.57, 1.83, 2.07, 2.43, 1.78};
  const double ffn[5] = {1.27, 1.38, 1.19, 1.28, 1.28};
  ASSERT_EQ(r.layers.size(), 5u);
  double largest = 0;
  for (int i = 0; i < 5; ++i) {
    EXPECT_NEAR(r.layers[i].find(NormRole::AttnNorm)->ratio, attn[i], 0.006) << "layer " << i;
    EXPECT_NEAR(r.layers[i].find(NormRole::MlpNorm)->ratio, ffn[i], 0.006) << "layer " << i;
    EXPECT_EQ(r.layers[i].find(NormRole::QNorm), nullptr);
    largest = std::max({largest, r.layers[i].find(NormRole::AttnNorm)->ratio, r.layers[i].find(NormRole::MlpNorm)->ratio});
  }
  ASSERT_TRUE(r.final_norm.has_value());
  EXPECT_NEAR(r.final_norm->ratio, 2.58, 0.006);
  largest = std::max(largest, r.final_norm->ratio);
  EXPECT_NEAR(largest, 2.6, 0.05);
  EXPECT_EQ(r.status, Status::Compatible);
  EXPECT_EQ(r.model.norm_tensors_read, 11);
}

}  // namespace
}  // namespace fusecheck::check
