// Noise-aware comparison of one timed item between two runs, in the manner of nvbench's
// robust compare: each run contributes a centre (median) and an interval that holds its
// measured spread; the verdict comes from how the intervals sit, not from a fixed
// percentage. The rule is written out in docs/nightly.md.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace fusecheck::results {

// One run's measurement of one timed item.
struct TimingStats {
  double median = 0;  // centre, any unit (both sides must use the same)
  double lo = 0;      // lower end of the spread interval (p10, or min)
  double hi = 0;      // upper end (p90, or max)
  int repetitions = 0;  // 0 when unknown

  // Relative half-width of the interval: the run's own noise.
  double noise() const { return median > 0 ? (hi - lo) / (2 * median) : 0; }
  bool valid() const;
};

// From raw samples: median and the p10..p90 interval (nearest-rank). Fewer than one
// sample, or a non-positive / non-finite one, gives nullopt.
std::optional<TimingStats> stats_from_samples(std::vector<double> samples);

enum class TimingVerdict { same, faster, slower, ambiguous };
std::string_view timing_verdict_name(TimingVerdict v);

struct TimingThresholds {
  // A gap between the two intervals smaller than this (relative) is not a clear change:
  // clock jitter alone moves intervals by a fraction of a percent (nvbench uses 0.5%).
  double min_gap_relative = 0.005;
  // ... nor is one smaller than this absolute amount, in the stats' unit (ms for run
  // results) per timed launch: CUDA events tick in 0.5 us steps and a launch jitters by
  // about as much, so a 5 us kernel "moving" by 0.4 us says nothing. The caller scales
  // it by the number of launches an aggregated row sums (see compare.cpp).
  double min_gap_absolute = 0.0;
  // Centres this close are the same whatever the spreads say (two quiet runs of the same
  // code differ by less than this on the GPU).
  double same_floor_relative = 0.005;
  // A side measured fewer times than this cannot support a clear change.
  int min_repetitions = 3;
};

struct TimingComparison {
  TimingVerdict verdict = TimingVerdict::ambiguous;
  double change = 0;  // (new - base) / base, of the medians
  double noise = 0;   // max of the two runs' relative noise
  bool too_few = false;  // a side has fewer than min_repetitions: no change can be judged
  std::string reason;
};

TimingComparison compare_timing(const TimingStats& base, const TimingStats& fresh,
                                const TimingThresholds& t = {});

}  // namespace fusecheck::results
