// The robust timing comparison (see timing_compare.h and docs/nightly.md).
#include "harness/results/timing_compare.h"

#include <algorithm>
#include <cmath>

#include <fmt/core.h>

namespace fusecheck::results {

bool TimingStats::valid() const {
  return std::isfinite(median) && std::isfinite(lo) && std::isfinite(hi) && median > 0 &&
         lo > 0 && lo <= median && median <= hi;
}

std::optional<TimingStats> stats_from_samples(std::vector<double> samples) {
  if (samples.empty()) return std::nullopt;
  for (double s : samples) {
    if (!std::isfinite(s) || s <= 0) return std::nullopt;
  }
  std::sort(samples.begin(), samples.end());
  auto at = [&](double q) {
    // Nearest rank, rounding half up, so that p50 of an even count is the upper middle
    // and the same samples always give the same interval.
    auto idx = static_cast<std::size_t>(std::floor(q * static_cast<double>(samples.size() - 1) + 0.5));
    return samples[idx];
  };
  TimingStats s;
  s.median = at(0.5);
  s.lo = at(0.1);
  s.hi = at(0.9);
  s.repetitions = static_cast<int>(samples.size());
  return s;
}

std::string_view timing_verdict_name(TimingVerdict v) {
  switch (v) {
    case TimingVerdict::same: return "same";
    case TimingVerdict::faster: return "faster";
    case TimingVerdict::slower: return "slower";
    case TimingVerdict::ambiguous: return "ambiguous";
  }
  return "?";
}

TimingComparison compare_timing(const TimingStats& base, const TimingStats& fresh,
                                const TimingThresholds& t) {
  TimingComparison c;
  if (!base.valid() || !fresh.valid()) {
    c.verdict = TimingVerdict::ambiguous;
    c.reason = "no usable timing on one side";
    return c;
  }
  c.change = (fresh.median - base.median) / base.median;
  c.noise = std::max(base.noise(), fresh.noise());
  // Symmetric relative distance: the same magnitude whichever side is the reference.
  auto rel_gap = [](double a, double b) { return (a - b) / std::min(a, b); };
  const double centre_gap = std::abs(rel_gap(fresh.median, base.median));

  if (centre_gap <= t.same_floor_relative) {
    c.verdict = TimingVerdict::same;
    c.reason = fmt::format("centres within {:.1f}%", 100 * t.same_floor_relative);
    return c;
  }
  bool few = (base.repetitions > 0 && base.repetitions < t.min_repetitions) ||
             (fresh.repetitions > 0 && fresh.repetitions < t.min_repetitions);
  c.too_few = few;
  if (fresh.lo > base.hi && rel_gap(fresh.lo, base.hi) >= t.min_gap_relative &&
      fresh.lo - base.hi >= t.min_gap_absolute) {
    c.verdict = few ? TimingVerdict::ambiguous : TimingVerdict::slower;
  } else if (fresh.hi < base.lo && rel_gap(base.lo, fresh.hi) >= t.min_gap_relative &&
             base.lo - fresh.hi >= t.min_gap_absolute) {
    c.verdict = few ? TimingVerdict::ambiguous : TimingVerdict::faster;
  } else if (centre_gap <= c.noise) {
    c.verdict = TimingVerdict::same;
    c.reason = fmt::format("difference {:+.1f}% within noise {:.1f}%", 100 * c.change, 100 * c.noise);
    return c;
  } else {
    c.verdict = TimingVerdict::ambiguous;
    bool apart = fresh.lo > base.hi || fresh.hi < base.lo;
    c.reason = few ? fmt::format("{:+.1f}% but fewer than {} repetitions: no spread to judge by",
                                 100 * c.change, t.min_repetitions)
                   : fmt::format("difference {:+.1f}% beyond noise {:.1f}% but {}", 100 * c.change,
                                 100 * c.noise,
                                 apart ? "the gap between the intervals is under the minimum"
                                       : "the intervals overlap");
    return c;
  }
  if (few) {
    c.reason = fmt::format("{:+.1f}% but fewer than {} repetitions: no spread to judge by", 100 * c.change,
                           t.min_repetitions);
  } else {
    c.reason = fmt::format("{:+.1f}%, intervals apart (noise {:.1f}%)", 100 * c.change, 100 * c.noise);
  }
  return c;
}

}  // namespace fusecheck::results
