// Error metrics between a path's values and the reference's at one tap (DESIGN.md,
// "Metrics"), the gates that judge them, and the end-to-end figures (KL, top-1) and
// rank correlation the run reports. Definitions: docs/amplification.md and
// docs/results-format.md.
#pragma once

#include <array>
#include <cstdint>
#include <limits>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include "harness/core/dtype.h"
#include "harness/core/taps.h"

namespace fusecheck::run {

inline constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
inline constexpr double kInf = std::numeric_limits<double>::infinity();

// Element-wise tolerance atol + rtol*|ref| for the share-outside metric, per dtype:
// PyTorch assert_close's defaults (REFERENCE.md section 4), so "outside" means what
// users of torch.testing already expect.
struct Tolerance {
  double atol = 1e-5;
  double rtol = 1.3e-6;
};
Tolerance default_tolerance(DType low_precision);

struct TapMetrics {
  double max_abs = kNaN;
  double max_rel = kNaN;
  double rel_l2 = kNaN;
  double cosine = kNaN;
  double ulp_p50 = kNaN, ulp_p99 = kNaN, ulp_max = kNaN;
  double frac_outside = kNaN;
  double nan_count = 0, inf_count = 0;
  double ref_nonfinite = 0;
  double ref_norm = kNaN;
  double noise_floor_ratio = kNaN;  // filled by the driver when ref64 ran
  double headroom = kNaN;
  double overflow_count = 0, saturation_count = 0;
};

// Every field by name, in the order results files list them (one dataset per field).
struct MetricField {
  std::string_view name;
  double TapMetrics::*member;
};
extern const std::array<MetricField, 16> kMetricFields;

// Metrics of `path` against `ref` (same shape; throws std::logic_error otherwise).
// `dtype` is the path's low-precision format: ULP distances and headroom use it.
TapMetrics compute_metrics(const TapMatrix& ref, const TapMatrix& path, DType dtype,
                           const Tolerance& tol);

// compute_metrics in two phases, so that one large tap (the logits: ~78M values) can keep
// many threads busy and still give the same bits: sums() adds the squares and products in
// element order (one thread, the only order-dependent part); then range(k), for every k in
// [0, parts()), on any threads, covers one of `parts` disjoint element ranges (maxima,
// counts, the ULP histogram); finish() merges those exactly into compute_metrics' result,
// bit for bit. Both matrices must outlive the object.
class TapMetricsInParts {
 public:
  TapMetricsInParts(const TapMatrix& ref, const TapMatrix& path, DType dtype, const Tolerance& tol, int parts);
  ~TapMetricsInParts();
  TapMetricsInParts(const TapMetricsInParts&) = delete;
  TapMetricsInParts& operator=(const TapMetricsInParts&) = delete;
  int parts() const { return static_cast<int>(parts_.size()); }
  void sums();
  void range(int k);  // after sums(); distinct k may run concurrently
  TapMetrics finish() const;

 private:
  struct Part;
  const TapMatrix* ref_;
  const TapMatrix* path_;
  DType dtype_;
  Tolerance tol_;
  std::vector<std::unique_ptr<Part>> parts_;
  double ref_sq_ = 0, diff_sq_ = 0, path_sq_ = 0, dot_ = 0, rel_floor_ = 0;
  bool summed_ = false;
};

// ||path - ref|| / ||ref||, NaN when ||ref|| == 0 (no relative error of nothing).
double relative_l2(const TapMatrix& ref, const TapMatrix& path);

// Distance in units in the last place of `dtype` after rounding both values to it
// once; |a| and |b| are ordered like the integers of their bit patterns, so crossing
// zero counts the ULPs on both sides. Infinite or NaN input: UINT64_MAX.
std::uint64_t ulp_distance(double a, double b, DType dtype);

// Pass/fail thresholds at one tap; NaN = that metric is not gated. Whatever the
// thresholds, a cell fails when the path has NaN/Inf, the reference is not finite, or
// the reference is all zeros (a check that cannot fail is no check).
struct GateThresholds {
  double rel_l2 = kNaN;             // max
  double max_abs = kNaN;            // max
  double max_rel = kNaN;            // max
  double cosine_min = kNaN;         // min
  double ulp_p99 = kNaN;            // max
  double frac_outside = kNaN;       // max
  double noise_floor_ratio = kNaN;  // max (only where ref64 ran)
};
// Defaults for a path whose low-precision dtype is `dtype` (reasons in docs/scenarios.md).
GateThresholds default_gates(DType dtype);
bool gate_passes(const TapMetrics& m, const GateThresholds& g);

// Next-token agreement between two logits matrices [positions x vocab].
struct NextTokenAgreement {
  std::vector<double> kl;  // KL(softmax(ref) || softmax(path)) per position, nats
  double kl_mean = kNaN;
  double kl_p99 = kNaN;
  double top1_agreement = kNaN;
  // Per position, for a margin-aware agreement (calibration's outcome rule): the
  // reference's top-1 minus top-2 logit (nats), and 1 when the path's argmax matches.
  std::vector<double> ref_margin;
  std::vector<int> top1_match;
};
NextTokenAgreement next_token_agreement(const TapMatrix& ref_logits,
                                        const TapMatrix& path_logits);
// The agreement from its per-position figures (the device route computes those): the
// summaries next_token_agreement derives from them, the same way.
NextTokenAgreement next_token_from_positions(std::vector<double> kl, std::vector<double> ref_margin,
                                             std::vector<int> top1_match);

// q-quantile (0..1) by linear interpolation between order statistics; NaN when empty.
double quantile(std::vector<double> values, double q);

// Spearman rank correlation over pairs where both sides are finite (ties get average
// ranks); NaN with fewer than 3 pairs or when one side is constant.
double spearman(std::span<const double> a, std::span<const double> b);

}  // namespace fusecheck::run
