// The rules of the tap metrics that both routes share (docs/gpu.md "Tap metrics on the
// device"): the ULP histogram's bins and quantile, the max_rel floor and the finishing
// formulas that turn sums, maxima and counts into TapMetrics' fields. Header only and
// free of Eigen, so that the CPU route (metrics.cpp) and the device route
// (kernels/metrics, inside the CUDA plug-in) compile the same definitions.
#pragma once

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>

namespace fusecheck::run::rules {

// ULP distances can reach 2^31 (bf16 across zero: 2^16); percentiles come from a histogram
// so the metric's memory does not grow with the tap: exact bins below 4096 ULPs,
// power-of-two bins above (the lower edge is reported).
inline constexpr std::size_t kUlpExactBins = 4096;
inline constexpr std::size_t kUlpBins = kUlpExactBins + 64;

inline std::size_t ulp_bin(std::uint64_t d) {
  return d < kUlpExactBins ? static_cast<std::size_t>(d) : kUlpExactBins + std::bit_width(d) - 1;
}

// The q-quantile of `total` distances binned by ulp_bin (NaN when none): the first bin at
// which ceil(q * total) distances are reached. `Count`: an unsigned 64-bit count type.
template <class Count>
double ulp_quantile(const Count* bins, std::uint64_t total, std::uint64_t max, double q) {
  if (total == 0) return std::numeric_limits<double>::quiet_NaN();
  const auto rank = static_cast<std::uint64_t>(std::ceil(q * static_cast<double>(total)));
  std::uint64_t seen = 0;
  for (std::size_t i = 0; i < kUlpBins; ++i) {
    seen += static_cast<std::uint64_t>(bins[i]);
    if (seen >= std::max<std::uint64_t>(rank, 1)) {
      return i < kUlpExactBins ? static_cast<double>(i) : std::ldexp(1.0, static_cast<int>(i - kUlpExactBins));
    }
  }
  return static_cast<double>(max);
}

// Near-zero reference elements would make any relative error meaningless; a floor at
// 1e-3 of the tap's RMS keeps max_rel about the elements that carry the signal.
inline double rel_floor_of(double ref_sq, std::int64_t n) {
  const double ref_rms = n ? std::sqrt(ref_sq / static_cast<double>(n)) : 0.0;
  return 1e-3 * ref_rms;
}

// What a pass over one tap gathers: sums over the elements where both sides are finite
// (ref_sq: where the reference is), maxima over them, counts, the ULP histogram's figures.
struct TapTotals {
  double ref_sq = 0, diff_sq = 0, path_sq = 0, dot = 0;
  double max_abs = 0, max_rel = 0, max_mag = 0;
  std::uint64_t outside = 0, saturated = 0, ref_nonfinite = 0, nan = 0, inf = 0;
  double ulp_p50 = std::numeric_limits<double>::quiet_NaN(), ulp_p99 = std::numeric_limits<double>::quiet_NaN();
  double ulp_max = std::numeric_limits<double>::quiet_NaN();  // NaN when no element was finite on both sides
};

// The fields of TapMetrics (or any struct with the same names) from a tap's totals over n
// elements; `max_finite`: the largest finite value of the path's format.
template <class M>
void finish_tap_metrics(const TapTotals& t, double rel_floor, std::int64_t n, double max_finite, M& m) {
  constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
  constexpr double kInf = std::numeric_limits<double>::infinity();
  m.ref_nonfinite = static_cast<double>(t.ref_nonfinite);
  m.nan_count = static_cast<double>(t.nan);
  m.inf_count = static_cast<double>(t.inf);
  m.overflow_count = static_cast<double>(t.inf);  // an infinite path value where the reference is finite
  m.saturation_count = static_cast<double>(t.saturated);
  const double bad = m.nan_count + m.inf_count;
  m.ref_norm = std::sqrt(t.ref_sq);
  m.max_abs = bad > 0 ? kInf : t.max_abs;
  m.max_rel = bad > 0 ? kInf : (rel_floor > 0 ? t.max_rel : kNaN);
  // Non-finite path values make the error unbounded, never small.
  m.rel_l2 = bad > 0 ? kInf : (m.ref_norm > 0 ? std::sqrt(t.diff_sq) / m.ref_norm : kNaN);
  m.cosine = (bad > 0 || m.ref_norm == 0 || t.path_sq == 0) ? kNaN : t.dot / (std::sqrt(t.path_sq) * m.ref_norm);
  m.ulp_p50 = t.ulp_p50;
  m.ulp_p99 = t.ulp_p99;
  m.ulp_max = bad > 0 ? kInf : t.ulp_max;
  m.frac_outside = n ? (static_cast<double>(t.outside) + bad) / static_cast<double>(n) : kNaN;
  m.headroom = t.max_mag / max_finite;
}

}  // namespace fusecheck::run::rules
