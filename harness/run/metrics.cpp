// Tap metrics, gates, next-token agreement and rank correlation (see metrics.h).
#include "harness/run/metrics.h"

#include "harness/run/metrics_rules.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>
#include <numeric>
#include <stdexcept>
#include <type_traits>

namespace fusecheck::run {

const std::array<MetricField, 16> kMetricFields = {{
    {"max_abs", &TapMetrics::max_abs},
    {"max_rel", &TapMetrics::max_rel},
    {"rel_l2", &TapMetrics::rel_l2},
    {"cosine", &TapMetrics::cosine},
    {"ulp_p50", &TapMetrics::ulp_p50},
    {"ulp_p99", &TapMetrics::ulp_p99},
    {"ulp_max", &TapMetrics::ulp_max},
    {"frac_outside", &TapMetrics::frac_outside},
    {"nan_count", &TapMetrics::nan_count},
    {"inf_count", &TapMetrics::inf_count},
    {"ref_nonfinite", &TapMetrics::ref_nonfinite},
    {"ref_norm", &TapMetrics::ref_norm},
    {"noise_floor_ratio", &TapMetrics::noise_floor_ratio},
    {"headroom", &TapMetrics::headroom},
    {"overflow_count", &TapMetrics::overflow_count},
    {"saturation_count", &TapMetrics::saturation_count},
}};

Tolerance default_tolerance(DType low_precision) {
  switch (low_precision) {
    case DType::BF16: return {1e-5, 1.6e-2};
    case DType::F16: return {1e-5, 1e-3};
    case DType::F32: return {1e-5, 1.3e-6};
    case DType::F64: return {1e-7, 1e-7};
  }
  throw std::logic_error("default_tolerance: bad dtype");
}

namespace {

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

// The histogram of a tap's ULP distances (bins and quantile: metrics_rules.h, shared with
// the device route).
class UlpHistogram {
 public:
  void add(std::uint64_t d) { add(d, 1); }
  // `count` distances equal to d at once (a caller that counts small distances itself).
  void add(std::uint64_t d, std::uint64_t count) {
    if (count == 0) return;
    bins_[rules::ulp_bin(d)] += count;
    total_ += count;
    max_ = std::max(max_, d);
  }
  double quantile(double q) const { return rules::ulp_quantile(bins_.data(), total_, max_, q); }
  double max() const { return total_ ? static_cast<double>(max_) : kNaN; }
  void merge(const UlpHistogram& o) {
    for (std::size_t i = 0; i < bins_.size(); ++i) bins_[i] += o.bins_[i];
    total_ += o.total_;
    max_ = std::max(max_, o.max_);
  }

 private:
  std::array<std::uint64_t, rules::kUlpBins> bins_{};
  std::uint64_t total_ = 0;
  std::uint64_t max_ = 0;
};

}  // namespace

std::uint64_t ulp_distance(double a, double b, DType dtype) {
  if (!std::isfinite(a) || !std::isfinite(b)) return UINT64_MAX;
  const std::int64_t ia = ordered_bits(a, dtype);
  const std::int64_t ib = ordered_bits(b, dtype);
  return static_cast<std::uint64_t>(ia > ib ? ia - ib : ib - ia);
}

namespace {

// The sums of one tap, in element order over the elements where both sides are finite
// (ref_sq: where the reference is). A non-finite element adds +0, which leaves each sum
// as skipping it did: the squares' sums are never negative, and dot, starting at +0, can
// never become -0 (x + y is -0 only when both are).
struct TapSums {
  double ref_sq = 0, diff_sq = 0, path_sq = 0, dot = 0;
  void add(double ri, double xi) {
    const bool ref_ok = std::isfinite(ri);
    const bool both_ok = ref_ok && std::isfinite(xi);
    const double d = std::abs(xi - ri);
    ref_sq += ref_ok ? ri * ri : 0.0;
    diff_sq += both_ok ? d * d : 0.0;
    path_sq += both_ok ? xi * xi : 0.0;
    dot += both_ok ? xi * ri : 0.0;
  }
};
TapSums sum_tap(const double* r, const double* x, Eigen::Index n) {
  TapSums s;  // a local that does not escape the loop: its sums stay in registers
  for (Eigen::Index i = 0; i < n; ++i) s.add(r[i], x[i]);
  return s;
}

// Everything of one tap but its sums, over a range of elements: maxima, integer counts
// and the ULP histogram, which merge exactly in any order.
struct TapExtremes {
  double max_abs = 0, max_rel = 0, max_mag = 0;
  std::uint64_t outside = 0, saturated = 0, ref_nonfinite = 0, nan = 0, inf = 0;
  UlpHistogram ulps;
  void merge(const TapExtremes& o) {
    max_abs = std::max(max_abs, o.max_abs);
    max_rel = std::max(max_rel, o.max_rel);
    max_mag = std::max(max_mag, o.max_mag);
    outside += o.outside, saturated += o.saturated, ref_nonfinite += o.ref_nonfinite;
    nan += o.nan, inf += o.inf;
    ulps.merge(o.ulps);
  }
};

// Counts small ULP distances, the common case, in four interleaved counter sets before
// they reach the histogram: back-to-back increments of one counter wait on each other.
class NearUlps {
 public:
  static constexpr std::uint64_t kNear = 16;
  // Adds distance u of element i (whose index picks the set).
  void add(std::uint64_t u, Eigen::Index i, UlpHistogram& far) {
    if (u < kNear) {
      ++near_[i & 3][u];
    } else {
      far.add(u);
    }
  }
  void flush(UlpHistogram& h) const {
    for (std::uint64_t u = 0; u < kNear; ++u) h.add(u, near_[0][u] + near_[1][u] + near_[2][u] + near_[3][u]);
  }

 private:
  std::uint64_t near_[4][kNear] = {};
};

// The element loop for any values (all but max_rel, see max_rel_of), one instantiation per
// dtype so that the ULP distance's rounding is inlined rather than switched on per element;
// adds the sums in element order when `sums` is set.
template <DType D>
void extremes_scalar(const double* r, const double* x, Eigen::Index n, double max_finite, const Tolerance& tol,
                     TapExtremes& e, TapSums* sums) {
  NearUlps near;
  double max_abs = 0, max_mag = 0;
  std::uint64_t outside = 0, saturated = 0;
  const double atol = tol.atol, rtol = tol.rtol;
  for (Eigen::Index i = 0; i < n; ++i) {
    const double ri = r[i], xi = x[i];
    if (sums) sums->add(ri, xi);
    if (!std::isfinite(ri) || !std::isfinite(xi)) [[unlikely]] {
      if (!std::isfinite(ri)) {
        ++e.ref_nonfinite;
      } else if (std::isnan(xi)) {
        ++e.nan;
      } else {
        ++e.inf;
      }
      continue;
    }
    const double d = std::abs(xi - ri);
    max_abs = std::max(max_abs, d);
    const double abs_ri = std::abs(ri);
    outside += d > atol + rtol * abs_ri ? 1 : 0;
    const double abs_xi = std::abs(xi);
    max_mag = std::max(max_mag, abs_xi);
    saturated += abs_xi >= max_finite ? 1 : 0;
    const std::int64_t ia = ordered_bits(xi, D), ib = ordered_bits(ri, D);
    near.add(static_cast<std::uint64_t>(ia > ib ? ia - ib : ib - ia), i, e.ulps);
  }
  near.flush(e.ulps);
  e.max_abs = std::max(e.max_abs, max_abs);
  e.max_mag = std::max(e.max_mag, max_mag);
  e.outside += outside;
  e.saturated += saturated;
}

// The common case, vectorized: a block of values that are all finite and, for bf16, floats
// (FP32 references, bf16 paths), where the ULP distance is integer arithmetic on the
// float's bits (ordered_bits' fast path) and every maximum is of non-negative doubles,
// which order like the integers of their bits. So the block computes exactly what
// extremes_scalar does, in SIMD where the CPU has AVX2 (one binary: target clones).
// Not under AddressSanitizer, whose instrumentation and ifunc resolvers do not mix well.
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FUSECHECK_NO_SIMD_CLONES
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define FUSECHECK_NO_SIMD_CLONES
#endif
#if defined(__x86_64__) && defined(__GNUC__) && !defined(FUSECHECK_NO_SIMD_CLONES)
#define FUSECHECK_SIMD_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define FUSECHECK_SIMD_CLONES
#endif

constexpr int kBlock = 1024;  // a block's values and ULP distances stay in L1

struct BlockParams {
  double max_finite, atol, rtol;
};
// Maxima as the bits of non-negative doubles.
struct BlockExtremes {
  std::int64_t max_abs = 0, max_mag = 0;
  std::int64_t outside = 0, saturated = 0;
};

inline std::int64_t bits_of(double v) { return std::bit_cast<std::int64_t>(v); }

// ordered_bits(v, D) for a finite v (a float for bf16), branch-free. For bf16 in 32-bit
// lanes (the values are within +-2^15, their distances within 2^16), which vectorize
// without widening; for f32 in 64-bit ones (distances reach 2^32).
template <DType D>
using PlainOrdered = std::conditional_t<D == DType::BF16, std::int32_t, std::int64_t>;
template <DType D>
using PlainUlp = std::conditional_t<D == DType::BF16, std::uint32_t, std::uint64_t>;

template <DType D>
[[gnu::always_inline]] inline PlainOrdered<D> plain_ordered_bits(double v) {
  const std::uint32_t u = std::bit_cast<std::uint32_t>(static_cast<float>(v));
  if constexpr (D == DType::BF16) {
    // No carry out of 32 bits: a finite float's bits plus 0x8000 stay below 2^32.
    const std::uint32_t bits = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
    const auto magnitude = static_cast<std::int32_t>(bits & 0x7FFFu);
    const auto negative = static_cast<std::int32_t>((bits >> 15) & 1u);
    return (magnitude ^ -negative) + negative;  // -magnitude when negative
  } else {
    const auto magnitude = static_cast<std::int64_t>(u & 0x7FFFFFFFu);
    return (u & 0x80000000u) ? -magnitude : magnitude;
  }
}

// False (and nothing computed) when some value of the block is not plain.
template <DType D>
[[gnu::always_inline]] inline bool block_body(const double* __restrict r, const double* __restrict x, int n,
                                              const BlockParams& p, PlainUlp<D>* __restrict ulp,
                                              BlockExtremes& out) {
  constexpr double kMax = std::numeric_limits<double>::max();
  unsigned plain = 1;
  for (int i = 0; i < n; ++i) {
    const double ri = r[i], xi = x[i];
    // Bitwise, not short-circuit, so that the loop vectorizes; false for NaN.
    unsigned ok = static_cast<unsigned>(std::fabs(ri) <= kMax) & static_cast<unsigned>(std::fabs(xi) <= kMax);
    if constexpr (D == DType::BF16) {
      ok &= static_cast<unsigned>(static_cast<double>(static_cast<float>(ri)) == ri) &
            static_cast<unsigned>(static_cast<double>(static_cast<float>(xi)) == xi);
    }
    plain &= ok;
  }
  if (!plain) return false;
  std::int64_t max_abs = 0, max_mag = 0, outside = 0, saturated = 0;
  for (int i = 0; i < n; ++i) {
    const double ri = r[i], xi = x[i];
    const double d = std::fabs(xi - ri);
    max_abs = std::max(max_abs, bits_of(d));
    outside += d > p.atol + p.rtol * std::fabs(ri) ? 1 : 0;
    const double abs_xi = std::fabs(xi);
    max_mag = std::max(max_mag, bits_of(abs_xi));
    saturated += abs_xi >= p.max_finite ? 1 : 0;
    const PlainOrdered<D> ia = plain_ordered_bits<D>(xi), ib = plain_ordered_bits<D>(ri);
    ulp[i] = static_cast<PlainUlp<D>>(ia > ib ? ia - ib : ib - ia);
  }
  out = {max_abs, max_mag, outside, saturated};
  return true;
}

FUSECHECK_SIMD_CLONES bool block_bf16(const double* r, const double* x, int n, const BlockParams& p,
                                      std::uint32_t* ulp, BlockExtremes& out) {
  return block_body<DType::BF16>(r, x, n, p, ulp, out);
}
FUSECHECK_SIMD_CLONES bool block_f32(const double* r, const double* x, int n, const BlockParams& p,
                                     std::uint64_t* ulp, BlockExtremes& out) {
  return block_body<DType::F32>(r, x, n, p, ulp, out);
}

// max over the elements where both sides are finite of |x - r| / max(|r|, rel_floor), as
// the bits of a non-negative double: the one figure that needs the whole tap's RMS first.
// Meaningless when rel_floor is 0 (0/0), as max_rel then is (it is reported as NaN).
FUSECHECK_SIMD_CLONES std::int64_t max_rel_bits(const double* __restrict r, const double* __restrict x,
                                                Eigen::Index n, double rel_floor) {
  constexpr double kMax = std::numeric_limits<double>::max();
  std::int64_t max_rel = 0;
  for (Eigen::Index i = 0; i < n; ++i) {
    const double ri = r[i], xi = x[i];
    const bool ok = (std::fabs(ri) <= kMax) & (std::fabs(xi) <= kMax);
    const double abs_ri = std::fabs(ri);
    const double q = std::fabs(xi - ri) / (abs_ri < rel_floor ? rel_floor : abs_ri);
    max_rel = std::max(max_rel, ok ? bits_of(q) : std::int64_t(0));
  }
  return max_rel;
}

// extremes_scalar's figures (and the sums, when `sums` is set), block by block,
// vectorized where the block is plain; the sums and the histogram of a plain block are
// added in one scalar pass over it, whose additions wait on each other while the counts go on.
template <DType D>
void extremes_of(const double* r, const double* x, Eigen::Index n, double max_finite, const Tolerance& tol,
                 TapExtremes& e, TapSums* sums) {
  if constexpr (D != DType::BF16 && D != DType::F32) {
    extremes_scalar<D>(r, x, n, max_finite, tol, e, sums);
  } else {
    const BlockParams p{max_finite, tol.atol, tol.rtol};
    alignas(64) PlainUlp<D> ulp[kBlock];
    NearUlps near;
    for (Eigen::Index begin = 0; begin < n; begin += kBlock) {
      const int m = static_cast<int>(std::min<Eigen::Index>(kBlock, n - begin));
      const double* rb = r + begin;
      const double* xb = x + begin;
      BlockExtremes b;
      bool plain = false;
      if constexpr (D == DType::BF16) {
        plain = block_bf16(rb, xb, m, p, ulp, b);
      } else {
        plain = block_f32(rb, xb, m, p, ulp, b);
      }
      if (!plain) {
        extremes_scalar<D>(rb, xb, m, max_finite, tol, e, sums);
        continue;
      }
      e.max_abs = std::max(e.max_abs, std::bit_cast<double>(b.max_abs));
      e.max_mag = std::max(e.max_mag, std::bit_cast<double>(b.max_mag));
      e.outside += static_cast<std::uint64_t>(b.outside);
      e.saturated += static_cast<std::uint64_t>(b.saturated);
      if (sums) {
        double ref_sq = sums->ref_sq, diff_sq = sums->diff_sq, path_sq = sums->path_sq, dot = sums->dot;
        for (int i = 0; i < m; ++i) {
          const double ri = rb[i], xi = xb[i];
          const double d = std::abs(xi - ri);
          ref_sq += ri * ri;
          diff_sq += d * d;
          path_sq += xi * xi;
          dot += xi * ri;
          near.add(ulp[i], i, e.ulps);
        }
        sums->ref_sq = ref_sq, sums->diff_sq = diff_sq, sums->path_sq = path_sq, sums->dot = dot;
      } else {
        for (int i = 0; i < m; ++i) near.add(ulp[i], i, e.ulps);
      }
    }
    near.flush(e.ulps);
  }
}

void extremes_any(DType dtype, const double* r, const double* x, Eigen::Index n, const Tolerance& tol,
                  TapExtremes& e, TapSums* sums) {
  const double max_finite = dtype_max_finite(dtype);
  switch (dtype) {
    case DType::BF16: extremes_of<DType::BF16>(r, x, n, max_finite, tol, e, sums); break;
    case DType::F16: extremes_of<DType::F16>(r, x, n, max_finite, tol, e, sums); break;
    case DType::F32: extremes_of<DType::F32>(r, x, n, max_finite, tol, e, sums); break;
    case DType::F64: extremes_of<DType::F64>(r, x, n, max_finite, tol, e, sums); break;
  }
}

double rel_floor_of(double ref_sq, Eigen::Index n) { return rules::rel_floor_of(ref_sq, n); }

TapMetrics finish_metrics(const TapSums& s, const TapExtremes& e, double rel_floor, Eigen::Index n, DType dtype) {
  rules::TapTotals t;
  t.ref_sq = s.ref_sq, t.diff_sq = s.diff_sq, t.path_sq = s.path_sq, t.dot = s.dot;
  t.max_abs = e.max_abs, t.max_rel = e.max_rel, t.max_mag = e.max_mag;
  t.outside = e.outside, t.saturated = e.saturated, t.ref_nonfinite = e.ref_nonfinite, t.nan = e.nan, t.inf = e.inf;
  t.ulp_p50 = e.ulps.quantile(0.50);
  t.ulp_p99 = e.ulps.quantile(0.99);
  t.ulp_max = e.ulps.max();
  TapMetrics m;
  rules::finish_tap_metrics(t, rel_floor, n, dtype_max_finite(dtype), m);
  return m;
}

void check_shapes(const TapMatrix& ref, const TapMatrix& path) {
  if (ref.rows() != path.rows() || ref.cols() != path.cols()) {
    throw std::logic_error("compute_metrics: shape mismatch (" + std::to_string(ref.rows()) + "x" +
                           std::to_string(ref.cols()) + " vs " + std::to_string(path.rows()) +
                           "x" + std::to_string(path.cols()) + ")");
  }
}

}  // namespace

struct TapMetricsInParts::Part {
  TapExtremes extremes;
};

TapMetricsInParts::TapMetricsInParts(const TapMatrix& ref, const TapMatrix& path, DType dtype, const Tolerance& tol,
                                     int parts)
    : ref_(&ref), path_(&path), dtype_(dtype), tol_(tol) {
  check_shapes(ref, path);
  const Eigen::Index n = ref.size();
  parts = static_cast<int>(std::clamp<Eigen::Index>(parts, 1, std::max<Eigen::Index>(n, 1)));
  for (int k = 0; k < parts; ++k) parts_.push_back(std::make_unique<Part>());
}

TapMetricsInParts::~TapMetricsInParts() = default;

void TapMetricsInParts::sums() {
  const TapSums s = sum_tap(ref_->data(), path_->data(), ref_->size());
  ref_sq_ = s.ref_sq, diff_sq_ = s.diff_sq, path_sq_ = s.path_sq, dot_ = s.dot;
  rel_floor_ = rel_floor_of(ref_sq_, ref_->size());
  summed_ = true;
}

void TapMetricsInParts::range(int k) {
  if (!summed_) throw std::logic_error("TapMetricsInParts::range before sums()");
  const Eigen::Index n = ref_->size(), parts = static_cast<Eigen::Index>(parts_.size());
  const Eigen::Index begin = n * k / parts, end = n * (k + 1) / parts;
  const double* r = ref_->data() + begin;
  const double* x = path_->data() + begin;
  TapExtremes& e = parts_[static_cast<std::size_t>(k)]->extremes;
  extremes_any(dtype_, r, x, end - begin, tol_, e, nullptr);
  e.max_rel = std::max(e.max_rel, std::bit_cast<double>(max_rel_bits(r, x, end - begin, rel_floor_)));
}

TapMetrics TapMetricsInParts::finish() const {
  TapExtremes e;
  for (const auto& p : parts_) e.merge(p->extremes);
  TapSums s;
  s.ref_sq = ref_sq_, s.diff_sq = diff_sq_, s.path_sq = path_sq_, s.dot = dot_;
  return finish_metrics(s, e, rel_floor_, ref_->size(), dtype_);
}

// One thread: the sums ride along the first pass (their additions wait on each other, the
// rest of the pass fills the wait); max_rel, which needs the sums' RMS, takes a second.
TapMetrics compute_metrics(const TapMatrix& ref, const TapMatrix& path, DType dtype,
                           const Tolerance& tol) {
  check_shapes(ref, path);
  const Eigen::Index n = ref.size();
  TapExtremes e;
  TapSums s;
  extremes_any(dtype, ref.data(), path.data(), n, tol, e, &s);
  const double rel_floor = rel_floor_of(s.ref_sq, n);
  e.max_rel = std::bit_cast<double>(max_rel_bits(ref.data(), path.data(), n, rel_floor));
  return finish_metrics(s, e, rel_floor, n, dtype);
}

double relative_l2(const TapMatrix& ref, const TapMatrix& path) {
  const double ref_norm = ref.norm();
  if (!(ref_norm > 0)) return kNaN;
  return (path - ref).norm() / ref_norm;
}

GateThresholds default_gates(DType dtype) {
  GateThresholds g;
  switch (dtype) {
    // bf16 rounds to 2^-9 relative: a layer rounds a handful of times (inputs of each
    // GEMM, outputs, the residual stream) and a shallow stack adds its layers' errors:
    // 5e-2 (~25 u) sits above that and far below a divergence (errors of order 1).
    case DType::BF16: g.rel_l2 = 5e-2; break;
    // fp16 has 8x finer rounding than bf16 (2^-12): the same margin, scaled.
    case DType::F16: g.rel_l2 = 1e-2; break;
    // FP32 paths differ from ref32/ref64 by summation order only: ~1e-7 per op, and
    // 1e-4 leaves room for long reductions and depth.
    case DType::F32:
    case DType::F64: g.rel_l2 = 1e-4; break;
  }
  return g;
}

bool gate_passes(const TapMetrics& m, const GateThresholds& g) {
  if (m.nan_count > 0 || m.inf_count > 0 || m.ref_nonfinite > 0) return false;
  if (!(m.ref_norm > 0)) return false;
  // `!(value <= limit)` so that a NaN metric fails a gate set on it.
  auto above = [](double value, double limit) { return !std::isnan(limit) && !(value <= limit); };
  if (above(m.rel_l2, g.rel_l2)) return false;
  if (above(m.max_abs, g.max_abs)) return false;
  if (above(m.max_rel, g.max_rel)) return false;
  if (above(m.ulp_p99, g.ulp_p99)) return false;
  if (above(m.frac_outside, g.frac_outside)) return false;
  if (!std::isnan(g.noise_floor_ratio) && !std::isnan(m.noise_floor_ratio) &&
      above(m.noise_floor_ratio, g.noise_floor_ratio)) {
    return false;
  }
  if (!std::isnan(g.cosine_min) && !(m.cosine >= g.cosine_min)) return false;
  return true;
}

namespace {

// One position's figures, in three passes over its two rows where there were ten (and two
// row-sized vectors of log-probabilities): every value is computed by the same operations
// in the same order as before (each row's max and first argmax as std::max_element finds
// them, the top-2 margin, the shifted exp sums, then KL with log p = x - lse recomputed
// rather than stored), so the results are bit for bit the same (test_metrics_fast.cpp).
struct PositionAgreement {
  double kl = 0, margin = 0;
  int top1_match = 0;
};
PositionAgreement agree_at(const double* ref_row, const double* path_row, Eigen::Index n) {
  PositionAgreement out;
  // Pass 1: both rows' max (its first position) and the reference's top two.
  Eigen::Index top_ref = 0, top_path = 0;
  double first = -kInf, second = -kInf;
  bool path_finite = true;
  for (Eigen::Index i = 0; i < n; ++i) {
    const double r = ref_row[i], x = path_row[i];
    if (ref_row[top_ref] < r) top_ref = i;
    if (path_row[top_path] < x) top_path = i;
    if (r > first) {
      second = first;
      first = r;
    } else if (r > second) {
      second = r;
    }
    path_finite = path_finite && std::isfinite(x);
  }
  out.margin = n > 1 ? first - second : 0.0;
  if (!path_finite) {
    out.kl = kInf;  // a position with NaN/Inf logits predicts nothing
    return out;
  }
  // Pass 2: the shifted exp sums (log-sum-exp of each row).
  const double mx_ref = ref_row[top_ref], mx_path = path_row[top_path];
  double sum_ref = 0, sum_path = 0;
  for (Eigen::Index i = 0; i < n; ++i) {
    sum_ref += std::exp(ref_row[i] - mx_ref);
    sum_path += std::exp(path_row[i] - mx_path);
  }
  const double lse_ref = mx_ref + std::log(sum_ref), lse_path = mx_path + std::log(sum_path);
  // Pass 3: KL(softmax(ref) || softmax(path)).
  double kl = 0;
  for (Eigen::Index i = 0; i < n; ++i) {
    const double lp_ref = ref_row[i] - lse_ref, lp_path = path_row[i] - lse_path;
    kl += std::exp(lp_ref) * (lp_ref - lp_path);
  }
  out.kl = std::max(kl, 0.0);  // rounding can give -1e-17 for identical rows
  out.top1_match = top_ref == top_path ? 1 : 0;
  return out;
}

}  // namespace

NextTokenAgreement next_token_agreement(const TapMatrix& ref_logits,
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
  // Positions are independent; a 512 x 151936 logits pair is ~2.3e8 exp() calls.
#ifdef _OPENMP
#pragma omp parallel for schedule(static)
#endif
  for (Eigen::Index r = 0; r < rows; ++r) {
    const auto i = static_cast<std::size_t>(r);
    const PositionAgreement p = agree_at(ref_logits.data() + r * vocab, path_logits.data() + r * vocab, vocab);
    a.kl[i] = p.kl;
    a.ref_margin[i] = p.margin;
    a.top1_match[i] = p.top1_match;
  }
  return next_token_from_positions(std::move(a.kl), std::move(a.ref_margin), std::move(a.top1_match));
}

NextTokenAgreement next_token_from_positions(std::vector<double> kl, std::vector<double> ref_margin,
                                             std::vector<int> top1_match) {
  NextTokenAgreement a;
  a.kl = std::move(kl);
  a.ref_margin = std::move(ref_margin);
  a.top1_match = std::move(top1_match);
  if (a.kl.empty()) return a;
  const double agree = static_cast<double>(std::accumulate(a.top1_match.begin(), a.top1_match.end(), 0));
  a.kl_mean = std::accumulate(a.kl.begin(), a.kl.end(), 0.0) / static_cast<double>(a.kl.size());
  a.kl_p99 = quantile(a.kl, 0.99);
  a.top1_agreement = agree / static_cast<double>(a.kl.size());
  return a;
}

double quantile(std::vector<double> values, double q) {
  if (values.empty()) return kNaN;
  std::sort(values.begin(), values.end());
  const double pos = q * static_cast<double>(values.size() - 1);
  const auto lo = static_cast<std::size_t>(std::floor(pos));
  const auto hi = std::min(lo + 1, values.size() - 1);
  const double frac = pos - static_cast<double>(lo);
  if (frac == 0) return values[lo];
  return values[lo] + frac * (values[hi] - values[lo]);
}

namespace {
std::vector<double> average_ranks(const std::vector<double>& v) {
  std::vector<std::size_t> order(v.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](std::size_t i, std::size_t j) { return v[i] < v[j]; });
  std::vector<double> ranks(v.size());
  for (std::size_t i = 0; i < order.size();) {
    std::size_t j = i;
    while (j + 1 < order.size() && v[order[j + 1]] == v[order[i]]) ++j;
    const double rank = (static_cast<double>(i) + static_cast<double>(j)) / 2.0 + 1.0;
    for (std::size_t k = i; k <= j; ++k) ranks[order[k]] = rank;
    i = j + 1;
  }
  return ranks;
}
}  // namespace

double spearman(std::span<const double> a, std::span<const double> b) {
  std::vector<double> xa, xb;
  for (std::size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    if (std::isfinite(a[i]) && std::isfinite(b[i])) {
      xa.push_back(a[i]);
      xb.push_back(b[i]);
    }
  }
  if (xa.size() < 3) return kNaN;
  const auto ra = average_ranks(xa), rb = average_ranks(xb);
  const double n = static_cast<double>(ra.size());
  const double ma = std::accumulate(ra.begin(), ra.end(), 0.0) / n;
  const double mb = std::accumulate(rb.begin(), rb.end(), 0.0) / n;
  double cov = 0, va = 0, vb = 0;
  for (std::size_t i = 0; i < ra.size(); ++i) {
    cov += (ra[i] - ma) * (rb[i] - mb);
    va += (ra[i] - ma) * (ra[i] - ma);
    vb += (rb[i] - mb) * (rb[i] - mb);
  }
  if (va == 0 || vb == 0) return kNaN;
  return cov / std::sqrt(va * vb);
}

}  // namespace fusecheck::run
