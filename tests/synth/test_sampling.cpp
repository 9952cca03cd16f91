// Building blocks of the synthetic generator: the normal quantile and sampler, the norm
// weight plans (exact median, fitted mean/std), and the norm overrides.
#include <algorithm>
#include <cmath>
#include <numeric>

#include <gtest/gtest.h>

#include "harness/checkpoint/synth.h"
#include "harness/core/error.h"

namespace fusecheck {
namespace {

double mean_of(const std::vector<double>& v) { return std::accumulate(v.begin(), v.end(), 0.0) / v.size(); }
double sample_std(const std::vector<double>& v) {
  const double m = mean_of(v);
  double ss = 0;
  for (double x : v) ss += (x - m) * (x - m);
  return std::sqrt(ss / (v.size() - 1));
}

TEST(NormalQuantile, MatchesKnownValues) {
  // Reference values of the standard normal quantile (Abramowitz-Stegun tables / mpmath).
  EXPECT_NEAR(normal_quantile(0.975), 1.959963984540054, 1e-13);
  EXPECT_NEAR(normal_quantile(0.5), 0.0, 1e-15);
  EXPECT_NEAR(normal_quantile(0.001), -3.090232306167813, 1e-12);
  EXPECT_NEAR(normal_quantile(1e-10), -6.361340902404056, 1e-10);
}

TEST(NormalSampler, HasUnitVarianceZeroMeanAndTails) {
  // Every 2^12-th point of the 32-bit grid: a deterministic, evenly spread sample.
  double sum = 0, sumsq = 0;
  std::size_t n = 0, beyond3 = 0;
  for (std::uint64_t b = 0; b < (std::uint64_t{1} << 32); b += 4096 + 1) {
    const double z = standard_normal_from_bits(static_cast<std::uint32_t>(b));
    sum += z;
    sumsq += z * z;
    beyond3 += std::abs(z) > 3.0;
    ++n;
  }
  const double mean = sum / n, var = sumsq / n - mean * mean;
  EXPECT_NEAR(mean, 0.0, 2e-3);  // a grid, not random: error is interpolation, not noise
  EXPECT_NEAR(var, 1.0, 2e-3);
  EXPECT_NEAR(static_cast<double>(beyond3) / n, 0.0027, 0.0003);  // two-sided P(|z| > 3)
}

TEST(NormalSampler, IsMonotoneAndSymmetricInItsBits) {
  float previous = -1e9f;
  for (std::uint64_t b = 0; b < (std::uint64_t{1} << 32); b += 65537) {
    const float z = standard_normal_from_bits(static_cast<std::uint32_t>(b));
    EXPECT_GT(z, previous);
    previous = z;
  }
  EXPECT_LT(standard_normal_from_bits(0), -6.0f);
  EXPECT_EQ(standard_normal_from_bits(0), -standard_normal_from_bits(0xffffffffu));
  EXPECT_EQ(standard_normal_from_bits(0x12345678u), -standard_normal_from_bits(~0x12345678u));
}

TEST(ChunkSeed, DependsOnSeedTensorAndChunk) {
  const auto base = chunk_seed(0, "model.norm.weight", 0);
  EXPECT_NE(base, chunk_seed(1, "model.norm.weight", 0));
  EXPECT_NE(base, chunk_seed(0, "model.norm.weigh", 0));
  EXPECT_NE(base, chunk_seed(0, "model.norm.weight", 1));
  EXPECT_EQ(base, chunk_seed(0, "model.norm.weight", 0));
}

TEST(NormPlan, MedianIsExactAndOutliersArePlanted) {
  std::mt19937_64 rng(7);
  const NormPlan plan{.median = 1.5, .spread = 0.2, .outliers = {44.5, 24.5}};
  auto w = draw_norm_weights(plan, 128, rng);
  ASSERT_EQ(w.size(), 128u);
  std::sort(w.begin(), w.end());
  EXPECT_EQ(w[63], 1.5);
  EXPECT_EQ(w[64], 1.5);
  EXPECT_EQ(w[127], 44.5);
  EXPECT_EQ(w[126], 24.5);
  EXPECT_LT(w[125], 1.5 * std::exp(0.2 * 4.0));  // the bulk stays lognormal-sized
  EXPECT_GT(w[0], 0.0);
}

TEST(NormPlan, FitHitsTargetMeanAndSampleStd) {
  for (std::uint64_t seed : {0, 1, 2, 3, 99}) {
    std::mt19937_64 rng(seed);
    const NormPlan plan{.median = 2.28125, .spread = 0.2, .outliers = {96.5}, .target_mean = 3.56,
                        .target_std = 9.13, .fit_channels = 6};
    const auto w = draw_norm_weights(plan, 128, rng);
    EXPECT_NEAR(mean_of(w), 3.56, 1e-9) << seed;
    EXPECT_NEAR(sample_std(w), 9.13, 1e-9) << seed;
    EXPECT_EQ(*std::max_element(w.begin(), w.end()), 96.5);
  }
}

TEST(NormPlan, ExcessScaleMovesPlantedChannelsAboutTheMedian) {
  std::mt19937_64 rng(3);
  const NormPlan plan{.median = 2.0, .spread = 0.1, .outliers = {42.0}, .excess_scale = 0.5};
  const auto w = draw_norm_weights(plan, 64, rng);
  EXPECT_EQ(*std::max_element(w.begin(), w.end()), 22.0);  // 2 + (42 - 2) / 2
}

std::vector<NormPlan> three_layers() {
  return {NormPlan{.median = 2.0, .spread = 0.2, .outliers = {96.0, 40.0}},
          NormPlan{.median = 1.5, .spread = 0.2, .outliers = {41.5}},
          NormPlan{.median = 1.0, .spread = 0.2}};
}

double planted_max(const NormPlan& p) {
  double top = p.median;
  for (double v : p.outliers) top = std::max(top, p.median + (v - p.median) * p.excess_scale);
  return top;
}

TEST(NormOverride, MaxAloneRescalesThePatternSoTheLargestBecomesIt) {
  NormOverride o;
  o.max = 11.0;
  const auto plans = apply_norm_override(three_layers(), o, 128, "--k-norm-*");
  EXPECT_DOUBLE_EQ(planted_max(plans[0]), 11.0);
  EXPECT_DOUBLE_EQ(planted_max(plans[1]), 1.5 + 40.0 * (9.0 / 94.0));
  EXPECT_EQ(plans[2].outliers.size(), 0u);
}

TEST(NormOverride, MaxAtTheMedianGivesRatioOne) {
  NormOverride o;
  o.max = 2.0;
  const auto plans = apply_norm_override(three_layers(), o, 128, "--k-norm-*");
  EXPECT_DOUBLE_EQ(planted_max(plans[0]), 2.0);
  EXPECT_DOUBLE_EQ(planted_max(plans[1]), 1.5);
}

TEST(NormOverride, LayersAndChannelsReplaceThePattern) {
  NormOverride o;
  o.max = 200.0;
  o.outlier_layers = 2;
  o.outlier_channels = 4;
  const auto plans = apply_norm_override(three_layers(), o, 128, "--k-norm-*");
  ASSERT_EQ(plans[0].outliers.size(), 4u);
  ASSERT_EQ(plans[1].outliers.size(), 4u);
  EXPECT_EQ(plans[2].outliers.size(), 0u);
  EXPECT_EQ(plans[0].outliers[0], 200.0);
  EXPECT_EQ(plans[1].outliers[0], 200.0);
  EXPECT_GT(plans[1].outliers[3], (200.0 + 1.5) / 2);  // ramp stops above half way
}

TEST(NormOverride, AllLayersWithoutMaxUsesTheProfilesLargest) {
  NormOverride o;
  o.outlier_layers = NormOverride::kAllLayers;
  const auto plans = apply_norm_override(three_layers(), o, 128, "--k-norm-*");
  for (const NormPlan& p : plans) EXPECT_EQ(p.outliers, std::vector<double>{96.0});
}

TEST(NormOverride, BadValuesAreInputErrors) {
  NormOverride below;
  below.max = 0.5;  // under the median of the layer it rescales
  EXPECT_THROW(apply_norm_override(three_layers(), below, 128, "--k-norm-*"), InputError);
  NormOverride too_many;
  too_many.outlier_channels = 64;  // would take the median out of the bulk
  EXPECT_THROW(apply_norm_override(three_layers(), too_many, 128, "--k-norm-*"), InputError);
  NormOverride layers;
  layers.outlier_layers = 4;
  EXPECT_THROW(apply_norm_override(three_layers(), layers, 128, "--k-norm-*"), InputError);
}

}  // namespace
}  // namespace fusecheck
