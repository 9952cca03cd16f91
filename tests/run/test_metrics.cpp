// Metrics, gates, next-token agreement and rank correlation on hand-computed cases.
#include <bit>
#include <cmath>
#include <cstdint>
#include <random>
#include <limits>

#include <gtest/gtest.h>

#include "harness/run/metrics.h"

namespace fusecheck::run {
namespace {

TapMatrix row(std::initializer_list<double> v) {
  TapMatrix m(1, static_cast<Eigen::Index>(v.size()));
  Eigen::Index i = 0;
  for (double x : v) m(0, i++) = x;
  return m;
}

const Tolerance kTol{1e-5, 1e-2};

TEST(Metrics, MaxAbsRelL2AndCosineMatchHandComputedValues) {
  // ref (3, 4), path (3, 4.5): diff (0, 0.5), |ref| = 5.
  const auto m = compute_metrics(row({3, 4}), row({3, 4.5}), DType::F32, kTol);
  EXPECT_DOUBLE_EQ(m.max_abs, 0.5);
  EXPECT_DOUBLE_EQ(m.max_rel, 0.125);
  EXPECT_DOUBLE_EQ(m.rel_l2, 0.1);
  EXPECT_DOUBLE_EQ(m.ref_norm, 5.0);
  EXPECT_NEAR(m.cosine, 27.0 / (5.0 * std::sqrt(29.25)), 1e-15);
  EXPECT_DOUBLE_EQ(m.frac_outside, 0.5);  // 0.5 > 1e-5 + 0.01 * 4
}

TEST(Metrics, MaxRelUsesAFloorForNearZeroReferenceElements) {
  // rms(ref) = sqrt((1e-12 + 4) / 2) ~ 1.414; floor = 1.414e-3, so the 1e-6 element's
  // error 1e-4 counts as 1e-4 / 1.414e-3, not 1e-4 / 1e-6.
  const auto m = compute_metrics(row({1e-6, 2}), row({1e-6 + 1e-4, 2}), DType::F32, kTol);
  EXPECT_NEAR(m.max_rel, 1e-4 / (1e-3 * std::sqrt((1e-12 + 4) / 2)), 1e-12);
}

TEST(Metrics, UlpDistanceCountsRepresentableStepsInTheDtype) {
  EXPECT_EQ(ulp_distance(1.0, 1.0078125, DType::BF16), 1u);   // bf16 step at 1 is 2^-7
  EXPECT_EQ(ulp_distance(1.0, 1.0078125, DType::F16), 8u);    // fp16 step is 2^-10
  EXPECT_EQ(ulp_distance(1.0, 1.0 + std::ldexp(1.0, -23), DType::F32), 1u);
  EXPECT_EQ(ulp_distance(-1.0, -1.0078125, DType::BF16), 1u);
  // Crossing zero: smallest positive subnormal to smallest negative is two steps.
  const double tiny = std::ldexp(1.0, -133);  // bf16 min subnormal
  EXPECT_EQ(ulp_distance(tiny, -tiny, DType::BF16), 2u);
  EXPECT_EQ(ulp_distance(0.0, -0.0, DType::BF16), 0u);
  EXPECT_EQ(ulp_distance(1.0, std::numeric_limits<double>::infinity(), DType::BF16), UINT64_MAX);
}

TEST(Metrics, UlpPercentilesOverATap) {
  // 100 elements: 98 exact, one 1 ULP off, one 3 ULPs off (bf16 at 1.0: step 2^-7).
  TapMatrix ref = TapMatrix::Constant(1, 100, 1.0);
  ref(0, 0) = 1.5;  // keep the reference non-constant
  TapMatrix path = ref;
  path(0, 10) = 1.0 + std::ldexp(1.0, -7);
  path(0, 20) = 1.0 + 3 * std::ldexp(1.0, -7);
  const auto m = compute_metrics(ref, path, DType::BF16, kTol);
  EXPECT_EQ(m.ulp_p50, 0);
  EXPECT_EQ(m.ulp_p99, 1);  // the 99th of 100 sorted values
  EXPECT_EQ(m.ulp_max, 3);
}

TEST(Metrics, NanAndInfAreCountedAndMakeTheErrorInfinite) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  const auto m = compute_metrics(row({1, 2, 3, 4}), row({1, nan, inf, 4}), DType::BF16, kTol);
  EXPECT_EQ(m.nan_count, 1);
  EXPECT_EQ(m.inf_count, 1);
  EXPECT_EQ(m.overflow_count, 1);
  EXPECT_TRUE(std::isinf(m.rel_l2));
  EXPECT_FALSE(gate_passes(m, default_gates(DType::BF16)));
}

TEST(Metrics, HeadroomIsMaxMagnitudeOverTheDtypeMaxFinite) {
  const auto m = compute_metrics(row({1, 32752}), row({1, 32752}), DType::F16, kTol);
  EXPECT_DOUBLE_EQ(m.headroom, 32752.0 / 65504.0);
  EXPECT_EQ(m.saturation_count, 0);
  const auto sat = compute_metrics(row({1, 65504}), row({1, 65504}), DType::F16, kTol);
  EXPECT_EQ(sat.saturation_count, 1);
}

TEST(Gates, AZeroReferenceNeverPasses) {
  const auto m = compute_metrics(row({0, 0}), row({0, 0}), DType::BF16, kTol);
  EXPECT_FALSE(gate_passes(m, default_gates(DType::BF16)));
}

TEST(Gates, ANonFiniteReferenceNeverPasses) {
  const auto m = compute_metrics(row({1, std::numeric_limits<double>::quiet_NaN()}), row({1, 1}), DType::BF16, kTol);
  EXPECT_EQ(m.ref_nonfinite, 1);
  EXPECT_FALSE(gate_passes(m, default_gates(DType::BF16)));
}

TEST(Gates, RelL2ThresholdSeparatesPassFromFail) {
  const auto m = compute_metrics(row({3, 4}), row({3, 4.5}), DType::F32, kTol);  // rel_l2 0.1
  GateThresholds g;
  g.rel_l2 = 0.11;
  EXPECT_TRUE(gate_passes(m, g));
  g.rel_l2 = 0.09;
  EXPECT_FALSE(gate_passes(m, g));
  GateThresholds c;
  c.cosine_min = 0.999;  // cosine is 0.9985
  EXPECT_FALSE(gate_passes(m, c));
}

TEST(NextToken, IdenticalLogitsGiveZeroKlAndFullAgreement) {
  TapMatrix logits(2, 3);
  logits << 1, 2, 3, -1, 0.5, 0.25;
  const auto a = next_token_agreement(logits, logits);
  EXPECT_NEAR(a.kl_mean, 0, 1e-15);
  EXPECT_DOUBLE_EQ(a.top1_agreement, 1.0);
}

TEST(NextToken, TwoClassKlMatchesHandComputedValue) {
  // p = (1/2, 1/2), q = (3/4, 1/4): KL = 0.5 ln(2/3) + 0.5 ln 2.
  TapMatrix ref(1, 2), path(1, 2);
  ref << 0, 0;
  path << std::log(3.0), 0;
  const auto a = next_token_agreement(ref, path);
  EXPECT_NEAR(a.kl[0], 0.5 * std::log(2.0 / 3.0) + 0.5 * std::log(2.0), 1e-15);
  EXPECT_DOUBLE_EQ(a.top1_agreement, 1.0);  // both argmax 0 (first on ties)
}

TEST(NextToken, TopOneDisagreementIsCounted) {
  TapMatrix ref(2, 2), path(2, 2);
  ref << 1, 0, 0, 1;
  path << 1, 0, 1, 0;
  EXPECT_DOUBLE_EQ(next_token_agreement(ref, path).top1_agreement, 0.5);
}

TEST(Quantile, InterpolatesBetweenOrderStatistics) {
  EXPECT_DOUBLE_EQ(quantile({4, 1, 3, 2}, 0.5), 2.5);
  EXPECT_DOUBLE_EQ(quantile({4, 1, 3, 2}, 1.0), 4);
  EXPECT_TRUE(std::isnan(quantile({}, 0.5)));
}

TEST(Spearman, MonotoneReversedTiedAndDegenerateCases) {
  const std::vector<double> a{1, 2, 3, 4, 5};
  EXPECT_DOUBLE_EQ(spearman(a, std::vector<double>{10, 20, 30, 40, 1000}), 1.0);
  EXPECT_DOUBLE_EQ(spearman(a, std::vector<double>{5, 4, 3, 2, 1}), -1.0);
  // Ties get average ranks: b ranks (1.5, 1.5, 3, 4, 5); Pearson of ranks by hand.
  const double r = spearman(a, std::vector<double>{1, 1, 2, 3, 4});
  EXPECT_NEAR(r, 9.5 / std::sqrt(10.0 * 9.5), 1e-12);
  EXPECT_TRUE(std::isnan(spearman(a, std::vector<double>{2, 2, 2, 2, 2})));
  EXPECT_TRUE(std::isnan(spearman(std::vector<double>{1, 2}, std::vector<double>{1, 2})));
}

}  // namespace
}  // namespace fusecheck::run

namespace fusecheck::run {
namespace {
// ulp_distance's bf16 fast path (float inputs rounded on their bits) against the exact
// one-rounding conversion from double, on floats near ties and across magnitudes.
TEST(UlpDistance, Bf16FastPathMatchesExactRounding) {
  std::mt19937_64 rng(5);
  auto ordered = [](double x) {
    const std::uint16_t b = double_to_bf16(x);
    const std::int64_t mag = b & 0x7FFF;
    return (b & 0x8000) ? -mag : mag;
  };
  for (int i = 0; i < 200000; ++i) {
    // Random float bit patterns (finite), half of them exact bf16 ties (low 16 bits 0x8000).
    std::uint32_t u = static_cast<std::uint32_t>(rng());
    if (i % 2) u = (u & 0xFFFF0000u) | 0x8000u;
    const float f = std::bit_cast<float>(u);
    if (!std::isfinite(f)) continue;
    const double a = f, b = 1.0;
    const std::int64_t want = std::abs(ordered(a) - ordered(b));
    ASSERT_EQ(ulp_distance(a, b, DType::BF16), static_cast<std::uint64_t>(want)) << f;
  }
}
}  // namespace
}  // namespace fusecheck::run
