// Per-tensor statistics: the seed's signed figures and our absolute ones of norm weights,
// and the super-weight entry gain of an MLP down projection.
#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <vector>

#include "harness/check/check.h"

namespace fusecheck::check {

namespace {

// The seed's rule: infinite when the median is 0 (and the max is not), 1 when both are.
double max_over_median(double max, double median) {
  if (median == 0) return max != 0 ? std::numeric_limits<double>::infinity() : 1.0;
  return max / median;
}

void fill_moments(std::span<const double> w, NormStats& s) {
  double sum = 0, sum_sq = 0;
  for (double v : w) {
    sum += v;
    sum_sq += v * v;
  }
  const double n = static_cast<double>(w.size());
  s.mean = sum / n;
  s.rms = std::sqrt(sum_sq / n);
}

}  // namespace

NormStats signed_stats(std::span<const double> w) {
  if (w.empty()) throw std::invalid_argument("signed_stats: empty tensor");
  NormStats s;
  s.numel = static_cast<std::int64_t>(w.size());
  s.max = *std::max_element(w.begin(), w.end());
  // torch.median returns the lower of the two middle values for an even count (no mean).
  std::vector<double> sorted(w.begin(), w.end());
  auto mid = sorted.begin() + static_cast<std::ptrdiff_t>((sorted.size() - 1) / 2);
  std::nth_element(sorted.begin(), mid, sorted.end());
  s.median = *mid;
  s.ratio = max_over_median(s.max, s.median);
  fill_moments(w, s);
  return s;
}

NormStats absolute_stats(std::span<const double> w) {
  if (w.empty()) throw std::invalid_argument("absolute_stats: empty tensor");
  NormStats s;
  s.numel = static_cast<std::int64_t>(w.size());
  std::vector<double> a(w.size());
  std::transform(w.begin(), w.end(), a.begin(), [](double v) { return std::fabs(v); });
  s.max = *std::max_element(a.begin(), a.end());
  const std::size_t n = a.size();
  auto upper = a.begin() + static_cast<std::ptrdiff_t>(n / 2);
  std::nth_element(a.begin(), upper, a.end());
  if (n % 2 == 1) {
    s.median = *upper;
  } else {
    // After nth_element everything before `upper` is <= it: the lower middle is their max.
    const double lower = *std::max_element(a.begin(), upper);
    s.median = 0.5 * (lower + *upper);
  }
  s.ratio = max_over_median(s.max, s.median);
  fill_moments(w, s);
  double sum_abs = 0;
  for (double v : w) sum_abs += std::fabs(v);
  s.mean = sum_abs / static_cast<double>(n);
  // An all-zero tensor has no channel that stands out: gain 1.
  s.peak_gain = s.rms > 0 ? s.max / s.rms : 1.0;
  return s;
}

double super_weight_entry_gain(double largest, double sum_sq, std::int64_t numel) {
  if (numel < 2) return 1.0;
  const double others_sq = std::max(0.0, sum_sq - largest * largest);
  const double scale = std::sqrt(others_sq / static_cast<double>(numel - 1));
  return scale > 0 ? largest / scale : 1.0;
}

}  // namespace fusecheck::check
