// device_taps.h: device totals finished with the CPU route's formulas.
#include "kernels/metrics/device_taps.h"

#include <bit>
#include <cstring>
#include <limits>
#include <memory>
#include <stdexcept>

#include "harness/core/dtype.h"
#include "harness/run/metrics_rules.h"
#include "kernels/common/cuda_check.h"

namespace fusecheck::cuda {

static_assert(kDevUlpBins == static_cast<int>(run::rules::kUlpBins) &&
              kDevUlpExactBins == static_cast<int>(run::rules::kUlpExactBins));
static_assert(kDevF32 == static_cast<int>(DType::F32) && kDevF16 == static_cast<int>(DType::F16) &&
              kDevBF16 == static_cast<int>(DType::BF16) && kDevF64 == static_cast<int>(DType::F64));

DevTensor dev_tensor(const DeviceTap& t) {
  if (!t.data || t.rows < 0 || t.cols < 0 || t.row_stride < t.cols) {
    throw std::invalid_argument("device tap: null data or a row stride below its width");
  }
  return {t.data, static_cast<int>(t.dtype), t.rows, t.cols, t.row_stride};
}

namespace {
void check_same_shape(const DeviceTap& a, const DeviceTap& b, const char* what) {
  if (a.rows != b.rows || a.cols != b.cols) {
    throw std::invalid_argument(std::string(what) + ": shape mismatch (" + std::to_string(a.rows) + "x" +
                                std::to_string(a.cols) + " vs " + std::to_string(b.rows) + "x" +
                                std::to_string(b.cols) + ")");
  }
}
double from_bits(unsigned long long b) { return std::bit_cast<double>(b); }
// relative_l2 (metrics.cpp): NaN unless the reference's norm is > 0.
double rel_l2_of(double diff_sq, double ref_sq) {
  const double ref_norm = std::sqrt(ref_sq);
  if (!(ref_norm > 0)) return std::numeric_limits<double>::quiet_NaN();
  return std::sqrt(diff_sq) / ref_norm;
}
}  // namespace

DeviceTapSummary tap_summary(const DeviceTap& ref, const DeviceTap& path, const DeviceTap* truth, DType dtype,
                             double atol, double rtol, cudaStream_t s) {
  check_same_shape(ref, path, "tap_metrics");
  if (truth) check_same_shape(ref, *truth, "tap_metrics truth");
  const DevTensor t = truth ? dev_tensor(*truth) : DevTensor{};
  const double max_finite = dtype_max_finite(dtype);
  auto totals = std::make_unique<DevTapTotals>();
  device_tap_totals(dev_tensor(ref), dev_tensor(path), truth ? &t : nullptr, static_cast<int>(dtype), max_finite,
                    atol, rtol, *totals, s);
  const DevTapTotals& d = *totals;
  run::rules::TapTotals tt;
  tt.ref_sq = d.ref_sq, tt.diff_sq = d.diff_sq, tt.path_sq = d.path_sq, tt.dot = d.dot;
  tt.max_abs = from_bits(d.max_abs), tt.max_rel = from_bits(d.max_rel), tt.max_mag = from_bits(d.max_mag);
  tt.outside = d.outside, tt.saturated = d.saturated, tt.ref_nonfinite = d.ref_nonfinite, tt.nan = d.nan,
  tt.inf = d.inf;
  std::uint64_t total = 0;
  for (unsigned long long b : d.ulp_bins) total += b;
  tt.ulp_p50 = run::rules::ulp_quantile(d.ulp_bins, total, d.ulp_max, 0.50);
  tt.ulp_p99 = run::rules::ulp_quantile(d.ulp_bins, total, d.ulp_max, 0.99);
  tt.ulp_max = total ? static_cast<double>(d.ulp_max) : std::numeric_limits<double>::quiet_NaN();
  DeviceTapSummary m{};
  const std::int64_t n = ref.rows * ref.cols;
  run::rules::finish_tap_metrics(tt, d.rel_floor, n, max_finite, m);
  m.plain_rel_l2 = rel_l2_of(d.plain_diff_sq, d.plain_ref_sq);
  constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
  m.truth_rel_l2_path = truth ? rel_l2_of(d.truth_path_sq, d.truth_sq) : kNaN;
  m.truth_rel_l2_ref = truth ? rel_l2_of(d.truth_ref_sq, d.truth_sq) : kNaN;
  return m;
}

DeviceNextToken next_token(const DeviceTap& ref_logits, const DeviceTap& path_logits, cudaStream_t s) {
  check_same_shape(ref_logits, path_logits, "next_token");
  DeviceNextToken out;
  const auto rows = static_cast<std::size_t>(ref_logits.rows);
  out.kl.assign(rows, 0.0);
  out.ref_margin.assign(rows, 0.0);
  out.top1_match.assign(rows, 0);
  if (rows == 0 || ref_logits.cols == 0) return out;
  device_next_token_rows(dev_tensor(ref_logits), dev_tensor(path_logits), out.kl.data(), out.ref_margin.data(),
                         out.top1_match.data(), s);
  return out;
}

TapMatrix tap_to_host(const DeviceTap& t, cudaStream_t s) {
  const DevTensor d = dev_tensor(t);
  TapMatrix m(t.rows, t.cols);
  if (m.size() == 0) return m;
  const std::size_t es = dtype_size(t.dtype);
  std::vector<unsigned char> raw(static_cast<std::size_t>(m.size()) * es);
  CUDA_CHECK(cudaMemcpy2DAsync(raw.data(), static_cast<std::size_t>(t.cols) * es, d.data,
                               static_cast<std::size_t>(t.row_stride) * es, static_cast<std::size_t>(t.cols) * es,
                               static_cast<std::size_t>(t.rows), cudaMemcpyDeviceToHost, s));
  CUDA_CHECK(cudaStreamSynchronize(s));
  double* out = m.data();
  const auto n = static_cast<std::ptrdiff_t>(m.size());
  const unsigned char* p = raw.data();
#pragma omp parallel for schedule(static)
  for (std::ptrdiff_t i = 0; i < n; ++i) {
    switch (t.dtype) {
      case DType::F64: { double v; std::memcpy(&v, p + i * 8, 8); out[i] = v; break; }
      case DType::F32: { float v; std::memcpy(&v, p + i * 4, 4); out[i] = v; break; }
      case DType::BF16: { std::uint16_t b; std::memcpy(&b, p + i * 2, 2); out[i] = bf16_to_float(b); break; }
      case DType::F16: { std::uint16_t b; std::memcpy(&b, p + i * 2, 2); out[i] = fp16_to_float(b); break; }
    }
  }
  return m;
}

void copy_input(const DeviceTap& src, DType dst, void* dst_data, cudaStream_t s) {
  if (dst == DType::F16) throw std::logic_error("copy_input: no F16 path buffers");
  convert_rows(dev_tensor(src), static_cast<int>(dst), dst_data, s);
}

}  // namespace fusecheck::cuda
