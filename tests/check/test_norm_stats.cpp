// Per-tensor statistics: the seed's signed figures (torch's lower median) and ours.
#include <cmath>
#include <limits>
#include <vector>

#include <gtest/gtest.h>

#include "harness/check/check.h"

namespace fusecheck::check {
namespace {

TEST(SignedStats, UsesSignedMaxAndTorchLowerMedian) {
  const std::vector<double> w{-3.0, 1.0, 2.0, 0.5};
  const NormStats s = signed_stats(w);
  EXPECT_EQ(s.max, 2.0);
  EXPECT_EQ(s.median, 0.5);  // sorted -3, 0.5, 1, 2: torch returns the lower middle, no mean
  EXPECT_EQ(s.ratio, 4.0);
}

TEST(SignedStats, NegativeOutlierIsInvisibleToTheSignedMax) {
  const std::vector<double> w{-100.0, 1.0, 1.5, 1.25, 1.0};
  const NormStats s = signed_stats(w);
  EXPECT_EQ(s.max, 1.5);
  EXPECT_EQ(s.median, 1.0);
}

TEST(SignedStats, RatioIsInfiniteOverZeroMedianAndOneWhenBothZero) {
  const std::vector<double> zero_median{0.0, 0.0, 0.0, 5.0};
  EXPECT_TRUE(std::isinf(signed_stats(zero_median).ratio));
  const std::vector<double> all_zero{0.0, 0.0, 0.0};
  EXPECT_EQ(signed_stats(all_zero).ratio, 1.0);
}

TEST(AbsoluteStats, UsesMagnitudesAndTheTrueMedian) {
  const std::vector<double> w{-3.0, 1.0, 2.0, 0.5};
  const NormStats s = absolute_stats(w);
  EXPECT_EQ(s.max, 3.0);
  EXPECT_EQ(s.median, 1.5);  // |w| sorted 0.5, 1, 2, 3: mean of the middle two
  EXPECT_EQ(s.ratio, 2.0);
  EXPECT_DOUBLE_EQ(s.mean, 6.5 / 4);
  EXPECT_DOUBLE_EQ(s.rms, std::sqrt(14.25 / 4));
  EXPECT_DOUBLE_EQ(s.peak_gain, 3.0 / std::sqrt(14.25 / 4));
}

TEST(AbsoluteStats, OddCountTakesTheMiddleValue) {
  const std::vector<double> w{5.0, -1.0, 2.0};
  EXPECT_EQ(absolute_stats(w).median, 2.0);
}

TEST(AbsoluteStats, AllZeroTensorHasRatioAndGainOne) {
  const std::vector<double> w(6, 0.0);
  const NormStats s = absolute_stats(w);
  EXPECT_EQ(s.ratio, 1.0);
  EXPECT_EQ(s.peak_gain, 1.0);
}

TEST(AbsoluteStats, ConstantTensorHasNoAmplification) {
  const std::vector<double> w(128, 2.5);
  const NormStats s = absolute_stats(w);
  EXPECT_DOUBLE_EQ(s.ratio, 1.0);
  EXPECT_DOUBLE_EQ(s.peak_gain, 1.0);
}

TEST(NormStats, EmptyTensorIsRejected) {
  const std::vector<double> empty;
  EXPECT_THROW(signed_stats(empty), std::invalid_argument);
  EXPECT_THROW(absolute_stats(empty), std::invalid_argument);
}

TEST(StatusFromScore, SeedBoundariesAreHalfOpen) {
  const StatusCutoffs c;
  EXPECT_EQ(status_from_score(0.8, c), Status::Compatible);  // 0.8 itself is COMPATIBLE
  EXPECT_EQ(status_from_score(std::nextafter(0.8, 0.0), c), Status::Warning);
  EXPECT_EQ(status_from_score(0.5, c), Status::Warning);     // 0.5 itself is WARNING
  EXPECT_EQ(status_from_score(std::nextafter(0.5, 0.0), c), Status::Incompatible);
}

TEST(StatusExitCode, MatchesTheSeed) {
  EXPECT_EQ(status_exit_code(Status::Compatible), 0);
  EXPECT_EQ(status_exit_code(Status::Warning), 1);
  EXPECT_EQ(status_exit_code(Status::Incompatible), 2);
}

}  // namespace
}  // namespace fusecheck::check
