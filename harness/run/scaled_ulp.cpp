// The scaled ULP distance and its histogram (see scaled_ulp.h).
#include "harness/run/scaled_ulp.h"

#include <algorithm>
#include <climits>
#include <cmath>

#include <fmt/core.h>

namespace fusecheck::run {

namespace {

struct Format {
  int mantissa_bits;  // stored fraction bits
  int min_exponent;   // exponent of the smallest normal
};

Format format_of(DType dtype) {
  switch (dtype) {
    case DType::BF16: return {7, -126};
    case DType::F16: return {10, -14};
    case DType::F32: return {23, -126};
    case DType::F64: return {52, -1022};
  }
  return {52, -1022};
}

}  // namespace

double ulp_at(double scale, DType dtype) {
  const Format f = format_of(dtype);
  const double s = std::fabs(scale);
  const int e = (s > 0 && std::isfinite(s)) ? std::ilogb(s) : INT_MIN;
  return std::ldexp(1.0, std::max(e, f.min_exponent) - f.mantissa_bits);
}

double scaled_ulp(double x, double y, double scale, DType dtype) {
  if (!std::isfinite(x) || !std::isfinite(y)) return HUGE_VAL;
  return std::fabs(x - y) / ulp_at(scale, dtype);
}

bool crosses_zero(double x, double y) {
  if (std::isnan(x) || std::isnan(y)) return false;
  if (x == 0 && y == 0) return false;
  return std::signbit(x) != std::signbit(y);
}

int scaled_ulp_bin(double d) {
  if (!(d < std::ldexp(1.0, kScaledUlpBins - 2))) return kScaledUlpBins - 1;  // also NaN and inf
  if (d < 1) return 0;
  return std::ilogb(d) + 1;
}

std::string scaled_ulp_bin_label(int bin) {
  if (bin <= 0) return "<1";
  if (bin >= kScaledUlpBins - 1) return fmt::format(">=2^{}", kScaledUlpBins - 2);
  const int lo = bin - 1;
  if (lo == 0) return "1";
  if (lo < 10) return fmt::format("{}-{}", 1 << lo, (1 << (lo + 1)) - 1);
  return fmt::format("2^{}-2^{}", lo, lo + 1);
}

std::string scaled_ulp_histogram_text(const ScaledUlpHistogram& h) {
  std::string s;
  for (int i = 0; i < kScaledUlpBins; ++i) {
    if (h[static_cast<std::size_t>(i)] == 0) continue;
    s += fmt::format("{}{}:{}", s.empty() ? "" : " ", scaled_ulp_bin_label(i), h[static_cast<std::size_t>(i)]);
  }
  return s.empty() ? "none" : s;
}

std::string scaled_ulp_histogram_csv(const ScaledUlpHistogram& h) {
  std::string s;
  for (std::int64_t v : h) s += (s.empty() ? "" : ",") + std::to_string(v);
  return s;
}

}  // namespace fusecheck::run
