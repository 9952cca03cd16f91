// The tap metrics as harness/run/metrics.cpp computed them before issue 18's host work
// (commit 09167d7): a verbatim copy kept as the oracle that the faster compute_metrics
// and next_token_agreement must equal bit for bit (test_metrics_fast.cpp) and as the "before" of
// bench/run/bench_run_host.cpp. Not used by fusecheck itself.
#pragma once

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <vector>
#include <stdexcept>
#include <string>

#include "harness/run/metrics.h"

namespace fusecheck::run::before {

// Bit pattern of x rounded once to `dtype`, as a sign-magnitude integer.
inline std::int64_t ordered_bits(double x, DType dtype) {
  std::uint64_t bits = 0;
  std::uint64_t sign_bit = 0;
  switch (dtype) {
    case DType::BF16: {
      // Fast path for the common case, x already a float (FP32 references, bf16 paths):
      // round-to-nearest-even on the float's bits is then the one rounding. Finite x only
      // (ulp_distance filters the rest); a carry into the exponent rounds up correctly.
      const float f = static_cast<float>(x);
      if (static_cast<double>(f) == x) {
        const std::uint32_t u = std::bit_cast<std::uint32_t>(f);
        bits = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
      } else {
        bits = double_to_bf16(x);
      }
      sign_bit = 0x8000u;
      break;
    }
    case DType::F16: bits = double_to_fp16(x); sign_bit = 0x8000u; break;
    case DType::F32: bits = std::bit_cast<std::uint32_t>(static_cast<float>(x)); sign_bit = 0x80000000u; break;
    case DType::F64: bits = std::bit_cast<std::uint64_t>(x); sign_bit = 0x8000000000000000ull; break;
  }
  const auto magnitude = static_cast<std::int64_t>(bits & ~sign_bit);
  return (bits & sign_bit) ? -magnitude : magnitude;
}

// ULP distances can reach 2^31 (bf16 across zero: 2^16); percentiles are kept in a
// histogram so the metric's memory does not grow with the tap (logits are large):
// exact bins below 4096 ULPs, power-of-two bins above (the lower edge is reported).
class UlpHistogram {
 public:
  void add(std::uint64_t d) {
    if (d < kExact) {
      ++bins_[d];
    } else {
      ++bins_[kExact + std::bit_width(d) - 1];
    }
    ++total_;
    max_ = std::max(max_, d);
  }
  double quantile(double q) const {
    if (total_ == 0) return kNaN;
    const auto rank = static_cast<std::uint64_t>(std::ceil(q * static_cast<double>(total_)));
    std::uint64_t seen = 0;
    for (std::size_t i = 0; i < bins_.size(); ++i) {
      seen += bins_[i];
      if (seen >= std::max<std::uint64_t>(rank, 1)) {
        return i < kExact ? static_cast<double>(i) : std::ldexp(1.0, static_cast<int>(i - kExact));
      }
    }
    return static_cast<double>(max_);
  }
  double max() const { return total_ ? static_cast<double>(max_) : kNaN; }

 private:
  static constexpr std::size_t kExact = 4096;
  std::array<std::uint64_t, kExact + 64> bins_{};
  std::uint64_t total_ = 0;
  std::uint64_t max_ = 0;
};

inline std::uint64_t ulp_distance(double a, double b, DType dtype) {
  if (!std::isfinite(a) || !std::isfinite(b)) return UINT64_MAX;
  const std::int64_t ia = ordered_bits(a, dtype);
  const std::int64_t ib = ordered_bits(b, dtype);
  return static_cast<std::uint64_t>(ia > ib ? ia - ib : ib - ia);
}

inline TapMetrics compute_metrics(const TapMatrix& ref, const TapMatrix& path, DType dtype,
                           const Tolerance& tol) {
  if (ref.rows() != path.rows() || ref.cols() != path.cols()) {
    throw std::logic_error("compute_metrics: shape mismatch (" + std::to_string(ref.rows()) + "x" +
                           std::to_string(ref.cols()) + " vs " + std::to_string(path.rows()) +
                           "x" + std::to_string(path.cols()) + ")");
  }
  TapMetrics m;
  const Eigen::Index n = ref.size();
  const double* r = ref.data();
  const double* x = path.data();
  const double max_finite = dtype_max_finite(dtype);

  double ref_sq = 0, diff_sq = 0, path_sq = 0, dot = 0;
  for (Eigen::Index i = 0; i < n; ++i) {
    if (std::isfinite(r[i])) ref_sq += r[i] * r[i];
  }
  const double ref_rms = n ? std::sqrt(ref_sq / static_cast<double>(n)) : 0.0;
  // Near-zero reference elements would make any relative error meaningless; a floor at
  // 1e-3 of the tap's RMS keeps max_rel about the elements that carry the signal.
  const double rel_floor = 1e-3 * ref_rms;

  UlpHistogram ulps;
  double max_abs = 0, max_rel = 0, max_mag = 0, outside = 0;
  for (Eigen::Index i = 0; i < n; ++i) {
    const double ri = r[i], xi = x[i];
    if (!std::isfinite(ri)) {
      m.ref_nonfinite += 1;
      continue;
    }
    if (std::isnan(xi)) {
      m.nan_count += 1;
      continue;
    }
    if (std::isinf(xi)) {
      m.inf_count += 1;
      m.overflow_count += 1;
      continue;
    }
    const double d = std::abs(xi - ri);
    diff_sq += d * d;
    path_sq += xi * xi;
    dot += xi * ri;
    max_abs = std::max(max_abs, d);
    max_rel = std::max(max_rel, d / std::max(std::abs(ri), rel_floor));
    if (d > tol.atol + tol.rtol * std::abs(ri)) outside += 1;
    max_mag = std::max(max_mag, std::abs(xi));
    if (std::abs(xi) >= max_finite) m.saturation_count += 1;
    ulps.add(ulp_distance(xi, ri, dtype));
  }
  const double bad = m.nan_count + m.inf_count;
  m.ref_norm = std::sqrt(ref_sq);
  m.max_abs = bad > 0 ? kInf : max_abs;
  m.max_rel = bad > 0 ? kInf : (rel_floor > 0 ? max_rel : kNaN);
  // Non-finite path values make the error unbounded, never small.
  m.rel_l2 = bad > 0 ? kInf : (m.ref_norm > 0 ? std::sqrt(diff_sq) / m.ref_norm : kNaN);
  m.cosine = (bad > 0 || m.ref_norm == 0 || path_sq == 0)
                 ? kNaN
                 : dot / (std::sqrt(path_sq) * m.ref_norm);
  m.ulp_p50 = ulps.quantile(0.50);
  m.ulp_p99 = ulps.quantile(0.99);
  m.ulp_max = bad > 0 ? kInf : ulps.max();
  m.frac_outside = n ? (outside + bad) / static_cast<double>(n) : kNaN;
  m.headroom = max_mag / max_finite;
  return m;
}

namespace detail {
// log softmax of one row, in double, shifted by the row max so exp never overflows.
inline void log_softmax(const double* row, Eigen::Index n, std::vector<double>& out) {
  out.resize(static_cast<std::size_t>(n));
  const double mx = *std::max_element(row, row + n);
  double sum = 0;
  for (Eigen::Index i = 0; i < n; ++i) sum += std::exp(row[i] - mx);
  const double lse = mx + std::log(sum);
  for (Eigen::Index i = 0; i < n; ++i) out[static_cast<std::size_t>(i)] = row[i] - lse;
}
// Largest minus second-largest value of a row (0 for a one-entry row): how far the
// reference's prediction is from a tie, in nats of log-probability.
inline double top2_margin(const double* row, Eigen::Index n) {
  double first = -kInf, second = -kInf;
  for (Eigen::Index i = 0; i < n; ++i) {
    if (row[i] > first) {
      second = first;
      first = row[i];
    } else if (row[i] > second) {
      second = row[i];
    }
  }
  return n > 1 ? first - second : 0.0;
}
}  // namespace detail

inline NextTokenAgreement next_token_agreement(const TapMatrix& ref_logits,
                                        const TapMatrix& path_logits) {
  if (ref_logits.rows() != path_logits.rows() || ref_logits.cols() != path_logits.cols()) {
    throw std::logic_error("next_token_agreement: shape mismatch");
  }
  NextTokenAgreement a;
  const Eigen::Index rows = ref_logits.rows(), vocab = ref_logits.cols();
  if (rows == 0 || vocab == 0) return a;
  a.kl.assign(static_cast<std::size_t>(rows), 0.0);
  a.ref_margin.assign(static_cast<std::size_t>(rows), 0.0);
  a.top1_match.assign(static_cast<std::size_t>(rows), 0);
  // Positions are independent; a 512 x 151936 logits pair is ~1e8 exp() calls.
#ifdef _OPENMP
#pragma omp parallel
#endif
  {
    std::vector<double> lp_ref, lp_path;
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
    for (Eigen::Index r = 0; r < rows; ++r) {
      const auto i = static_cast<std::size_t>(r);
      const double* ref_row = ref_logits.data() + r * vocab;
      const double* path_row = path_logits.data() + r * vocab;
      a.ref_margin[i] = detail::top2_margin(ref_row, vocab);
      if (!std::all_of(path_row, path_row + vocab, [](double v) { return std::isfinite(v); })) {
        a.kl[i] = kInf;  // a position with NaN/Inf logits predicts nothing
        continue;
      }
      detail::log_softmax(ref_row, vocab, lp_ref);
      detail::log_softmax(path_row, vocab, lp_path);
      double kl = 0;
      for (std::size_t k = 0; k < lp_ref.size(); ++k) kl += std::exp(lp_ref[k]) * (lp_ref[k] - lp_path[k]);
      a.kl[i] = std::max(kl, 0.0);  // rounding can give -1e-17 for identical rows
      const auto top_ref = std::max_element(ref_row, ref_row + vocab) - ref_row;
      const auto top_path = std::max_element(path_row, path_row + vocab) - path_row;
      a.top1_match[i] = top_ref == top_path ? 1 : 0;
    }
  }
  const double agree = static_cast<double>(std::accumulate(a.top1_match.begin(), a.top1_match.end(), 0));
  a.kl_mean = std::accumulate(a.kl.begin(), a.kl.end(), 0.0) / static_cast<double>(a.kl.size());
  a.kl_p99 = quantile(a.kl, 0.99);
  a.top1_agreement = agree / static_cast<double>(rows);
  return a;
}

}  // namespace fusecheck::run::before
