// Exact bf16/fp16 conversions with round-to-nearest-even, written on the bit patterns so
// that the host emulation matches the GPU's __float2bfloat16_rn / __float2half_rn.
#include "harness/core/dtype.h"

#include <bit>
#include <cmath>
#include <stdexcept>

namespace fusecheck {

std::size_t dtype_size(DType t) {
  switch (t) {
    case DType::F32: return 4;
    case DType::F16: return 2;
    case DType::BF16: return 2;
    case DType::F64: return 8;
  }
  throw std::logic_error("dtype_size: bad dtype");
}

std::string_view dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "F32";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
    case DType::F64: return "F64";
  }
  throw std::logic_error("dtype_name: bad dtype");
}

std::optional<DType> dtype_from_name(std::string_view n) {
  if (n == "F32") return DType::F32;
  if (n == "F16") return DType::F16;
  if (n == "BF16") return DType::BF16;
  if (n == "F64") return DType::F64;
  return std::nullopt;
}

float bf16_to_float(std::uint16_t bits) {
  return std::bit_cast<float>(static_cast<std::uint32_t>(bits) << 16);
}

std::uint16_t float_to_bf16(float x) {
  std::uint32_t u = std::bit_cast<std::uint32_t>(x);
  if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x007fffffu) != 0) {
    return static_cast<std::uint16_t>((u >> 16) | 0x0040u);  // quiet NaN, sign kept
  }
  // Round to nearest even on the 16 dropped bits; carries into the exponent give Inf
  // exactly when IEEE rounding overflows.
  std::uint32_t lsb = (u >> 16) & 1u;
  u += 0x7fffu + lsb;
  return static_cast<std::uint16_t>(u >> 16);
}

float fp16_to_float(std::uint16_t h) {
  std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  std::uint32_t exp = (h >> 10) & 0x1fu;
  std::uint32_t man = h & 0x3ffu;
  if (exp == 0) {
    // Zero or subnormal: value = man * 2^-24, exact in float.
    float v = std::ldexp(static_cast<float>(man), -24);
    return sign ? -v : v;
  }
  if (exp == 31) {
    return std::bit_cast<float>(sign | 0x7f800000u | (man << 13));
  }
  return std::bit_cast<float>(sign | ((exp + 112u) << 23) | (man << 13));
}

namespace {
// Rounds a finite |x| (as double, exact for any float) to fp16 with RNE; returns bits
// without sign.
std::uint16_t fp16_magnitude(double a) {
  if (a >= 65520.0) return 0x7c00u;  // rounds to Inf (65504 + half ulp 16 -> ties to even Inf)
  if (a < std::ldexp(1.0, -14)) {
    // Subnormal range: quantum 2^-24.
    double q = std::nearbyint(a * std::ldexp(1.0, 24));  // default rounding mode: RNE
    return static_cast<std::uint16_t>(q);  // q == 1024 gives the smallest normal, correctly
  }
  int e = 0;
  double m = std::frexp(a, &e);  // a = m * 2^e, m in [0.5, 1)
  // 11 significant bits: scale mantissa to [1024, 2048).
  double q = std::nearbyint(m * 2048.0);
  if (q == 2048.0) {
    q = 1024.0;
    e += 1;
  }
  int biased = e - 1 + 15;
  if (biased >= 31) return 0x7c00u;
  return static_cast<std::uint16_t>((biased << 10) | (static_cast<int>(q) - 1024));
}

std::uint16_t bf16_from_double(double x) {
  if (std::isnan(x)) return 0x7fc0u;
  std::uint16_t sign = std::signbit(x) ? 0x8000u : 0;
  double a = std::fabs(x);
  if (std::isinf(a)) return sign | 0x7f80u;
  if (a == 0) return sign;
  if (a < std::ldexp(1.0, -126)) {
    double q = std::nearbyint(a * std::ldexp(1.0, 133));  // bf16 subnormal quantum 2^-133
    return sign | static_cast<std::uint16_t>(q);
  }
  int e = 0;
  double m = std::frexp(a, &e);
  double q = std::nearbyint(m * 256.0);  // 8 significant bits
  if (q == 256.0) {
    q = 128.0;
    e += 1;
  }
  int biased = e - 1 + 127;
  if (biased >= 255) return sign | 0x7f80u;
  return sign | static_cast<std::uint16_t>((biased << 7) | (static_cast<int>(q) - 128));
}
}  // namespace

std::uint16_t double_to_fp16(double x) {
  if (std::isnan(x)) return 0x7e00u;
  std::uint16_t sign = std::signbit(x) ? 0x8000u : 0;
  double a = std::fabs(x);
  if (std::isinf(a)) return sign | 0x7c00u;
  return sign | fp16_magnitude(a);
}

std::uint16_t float_to_fp16(float x) {
  if (std::isnan(x)) {
    std::uint32_t u = std::bit_cast<std::uint32_t>(x);
    return static_cast<std::uint16_t>(((u >> 16) & 0x8000u) | 0x7e00u | ((u >> 13) & 0x3ffu));
  }
  return double_to_fp16(static_cast<double>(x));
}

std::uint16_t double_to_bf16(double x) { return bf16_from_double(x); }

double dtype_max_finite(DType t) {
  switch (t) {
    case DType::F32: return std::numeric_limits<float>::max();
    case DType::F16: return 65504.0;
    case DType::BF16: return 3.3895313892515355e38;
    case DType::F64: return std::numeric_limits<double>::max();
  }
  throw std::logic_error("dtype_max_finite: bad dtype");
}

}  // namespace fusecheck
