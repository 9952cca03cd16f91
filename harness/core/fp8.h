// FP8 E4M3 (OCP 8-bit floating point, "E4M3FN"): 1 sign, 4 exponent bits (bias 7), 3
// mantissa bits; largest finite value 448, no infinity, NaN is S.1111.111 only. The
// encoder rounds to nearest, ties to even, and saturates: every finite value (and +-Inf)
// beyond 448 encodes as +-448, as engines store an FP8 KV cache (CUDA's
// __nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E4M3), vLLM, TensorRT-LLM) rather than
// as NaN. NaN stays NaN with its sign. Host only, exact, no rounding-mode dependence.
#pragma once

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>

namespace fusecheck {

inline constexpr float kE4m3Max = 448.0f;
inline constexpr std::uint8_t kE4m3MaxCode = 0x7e;  // S.1111.110
inline constexpr std::uint8_t kE4m3NanCode = 0x7f;  // S.1111.111

// Value of an E4M3 code (NaN for 0x7f and 0xff).
inline float e4m3_to_float(std::uint8_t code) {
  const bool negative = (code & 0x80) != 0;
  const int exponent = (code >> 3) & 0xf;
  const int mantissa = code & 0x7;
  float a;
  if (exponent == 0xf && mantissa == 0x7) {
    a = std::numeric_limits<float>::quiet_NaN();
  } else if (exponent == 0) {
    a = std::ldexp(static_cast<float>(mantissa), -9);  // subnormal: m * 2^-9
  } else {
    a = std::ldexp(static_cast<float>(8 + mantissa), exponent - 10);  // 1.m * 2^(e-7)
  }
  return negative ? -a : a;
}

namespace detail {
// Round m >= 0 (a float holding at most 24 significant bits) to the nearest integer,
// ties to even, without reading the floating-point environment.
inline int round_half_even(float m) {
  const float lower = std::floor(m);
  const float diff = m - lower;  // exact: m and lower share their exponent range
  int r = static_cast<int>(lower);
  if (diff > 0.5f || (diff == 0.5f && (r & 1) != 0)) ++r;
  return r;
}
}  // namespace detail

// E4M3 code of x: round to nearest even, saturating at +-448 (see the header comment).
inline std::uint8_t float_to_e4m3(float x) {
  const std::uint8_t sign = (std::bit_cast<std::uint32_t>(x) >> 24) & 0x80;
  if (std::isnan(x)) return sign | kE4m3NanCode;
  const float a = std::fabs(x);
  if (!(a <= kE4m3Max)) return sign | kE4m3MaxCode;  // finite overflow and Inf saturate
  if (a < 0x1p-6f) {
    // Subnormal range, quantum 2^-9; a rounded count of 8 is the smallest normal (0x08).
    return sign | static_cast<std::uint8_t>(detail::round_half_even(a * 512.0f));
  }
  int e2 = 0;
  std::frexp(a, &e2);  // a = f * 2^e2, f in [0.5, 1)
  int exponent = e2 - 1;                                               // in [-6, 8]
  int m = detail::round_half_even(std::ldexp(a, 3 - exponent));       // in [8, 16]
  if (m == 16) {
    m = 8;
    ++exponent;
  }
  // a <= 448 keeps exponent <= 8 and, at exponent 8, m <= 14: never the NaN code.
  return sign | static_cast<std::uint8_t>(((exponent + 7) << 3) | (m - 8));
}

// x after one round trip through E4M3 (what a value stored in an FP8 cache reads back as).
inline float round_to_e4m3(float x) { return e4m3_to_float(float_to_e4m3(x)); }

}  // namespace fusecheck
