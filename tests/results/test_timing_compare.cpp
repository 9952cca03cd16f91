// The noise-aware timing verdicts: same within the measured spread, slower / faster only
// when the two runs' intervals are apart, ambiguous in between.
#include <gtest/gtest.h>

#include "harness/results/timing_compare.h"

namespace fusecheck::results {
namespace {

TimingStats around(double median, double half_width_rel, int reps = 50) {
  return {median, median * (1 - half_width_rel), median * (1 + half_width_rel), reps};
}

TEST(TimingCompare, ChangeWithinNoiseIsSame) {
  auto c = compare_timing(around(1.0, 0.05), around(1.03, 0.05));
  EXPECT_EQ(c.verdict, TimingVerdict::same) << c.reason;
  EXPECT_NEAR(c.change, 0.03, 1e-12);
}

TEST(TimingCompare, DisjointIntervalsAreSlower) {
  auto c = compare_timing(around(1.0, 0.02), around(1.3, 0.02));
  EXPECT_EQ(c.verdict, TimingVerdict::slower) << c.reason;
}

TEST(TimingCompare, DisjointIntervalsTheOtherWayAreFaster) {
  auto c = compare_timing(around(1.0, 0.02), around(0.7, 0.02));
  EXPECT_EQ(c.verdict, TimingVerdict::faster) << c.reason;
}

TEST(TimingCompare, OverlapWithDifferenceBeyondNoiseIsAmbiguous) {
  // Centres 12% apart, beyond both runs' noise (10% and 2%), but the new interval
  // [1.098, 1.142] starts inside the base's [0.9, 1.1]: no clear gap.
  auto c = compare_timing(around(1.0, 0.10), around(1.12, 0.02));
  EXPECT_EQ(c.verdict, TimingVerdict::ambiguous) << c.reason;
}

TEST(TimingCompare, LargeNoiseHidesALargeChange) {
  auto c = compare_timing(around(1.0, 0.4), around(1.3, 0.4));
  EXPECT_EQ(c.verdict, TimingVerdict::same) << c.reason;
}

TEST(TimingCompare, TinyGapBetweenQuietRunsIsNotAClearChange) {
  // Intervals apart by 0.45%, less than the 0.5% clock-jitter gap, centres 0.65% apart:
  // ambiguous, not slower.
  auto c = compare_timing(around(1.0, 0.001), around(1.0065, 0.001));
  EXPECT_EQ(c.verdict, TimingVerdict::ambiguous) << c.reason;
}

TEST(TimingCompare, GapUnderTheAbsoluteFloorIsNotAClearChange) {
  // A 5 us kernel 8% slower with 1% spread: 0.4 us, under one event tick plus jitter.
  TimingThresholds t;
  t.min_gap_absolute = 0.001;  // ms
  auto c = compare_timing(around(0.005, 0.01), around(0.0054, 0.01), t);
  EXPECT_EQ(c.verdict, TimingVerdict::ambiguous) << c.reason;
  EXPECT_EQ(compare_timing(around(0.5, 0.01), around(0.54, 0.01), t).verdict, TimingVerdict::slower);
}

TEST(TimingCompare, IdenticalCentresAreSameEvenWithoutSpread) {
  auto c = compare_timing(TimingStats{2.0, 2.0, 2.0, 1}, TimingStats{2.005, 2.005, 2.005, 1});
  EXPECT_EQ(c.verdict, TimingVerdict::same) << c.reason;
}

TEST(TimingCompare, SingleMeasurementCannotBeSlower) {
  auto c = compare_timing(TimingStats{2.0, 2.0, 2.0, 1}, TimingStats{3.0, 3.0, 3.0, 1});
  EXPECT_EQ(c.verdict, TimingVerdict::ambiguous) << c.reason;
}

TEST(TimingCompare, InvalidStatsAreAmbiguous) {
  auto c = compare_timing(TimingStats{0, 0, 0, 5}, around(1.0, 0.01));
  EXPECT_EQ(c.verdict, TimingVerdict::ambiguous);
}

TEST(TimingCompare, StatsFromSamplesUseMedianAndP10P90) {
  std::vector<double> s;
  for (int i = 1; i <= 11; ++i) s.push_back(i);  // 1..11
  auto st = stats_from_samples(s);
  ASSERT_TRUE(st);
  EXPECT_EQ(st->median, 6);
  EXPECT_EQ(st->lo, 2);
  EXPECT_EQ(st->hi, 10);
  EXPECT_EQ(st->repetitions, 11);
  EXPECT_FALSE(stats_from_samples({1.0, -1.0}));
}

}  // namespace
}  // namespace fusecheck::results
