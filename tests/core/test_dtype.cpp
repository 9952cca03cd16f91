// bf16 and fp16 conversions (harness/core/dtype.h) against a slow exact reference: every
// 16-bit pattern round-trips, ties go to even, subnormals, Inf, NaN and overflow behave as
// IEEE round-to-nearest-even, and the double conversions round once (no double rounding).
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>

#include <gtest/gtest.h>

#include "harness/core/dtype.h"

namespace fusecheck {
namespace {

struct Format {
  const char* name;
  std::uint16_t max_pattern;  // largest finite positive pattern
  std::uint16_t inf_pattern;
  double (*value)(std::uint16_t);
};

double bf16_value(std::uint16_t b) { return bf16_to_float(b); }
double fp16_value(std::uint16_t b) { return fp16_to_float(b); }
const Format kBf16{"bf16", 0x7f7f, 0x7f80, bf16_value};
const Format kFp16{"fp16", 0x7bff, 0x7c00, fp16_value};

// Slow exact reference: binary search over the (monotone) positive patterns for the
// nearest value, ties to the even pattern; beyond max + half an ulp, Inf (the tie there
// goes to Inf, whose pattern is even). Differences are exact in double for these inputs.
std::uint16_t slow_round(double x, const Format& f) {
  const std::uint16_t sign = std::signbit(x) ? 0x8000 : 0;
  const double a = std::fabs(x);
  const double max = f.value(f.max_pattern);
  const double ulp_at_max = max - f.value(f.max_pattern - 1);
  if (a >= max + ulp_at_max / 2) return sign | f.inf_pattern;
  std::uint16_t lo = 0, hi = f.max_pattern;  // value(lo) <= a <= value(hi)
  while (hi - lo > 1) {
    const std::uint16_t mid = static_cast<std::uint16_t>((lo + hi) / 2);
    (f.value(mid) <= a ? lo : hi) = mid;
  }
  if (a <= f.value(lo)) return sign | lo;
  const double below = a - f.value(lo), above = f.value(hi) - a;
  if (below < above) return sign | lo;
  if (above < below) return sign | hi;
  return sign | ((lo & 1) == 0 ? lo : hi);
}

bool is_nan_pattern(std::uint16_t b, const Format& f) {
  return (b & f.inf_pattern) == f.inf_pattern && (b & ~(f.inf_pattern | 0x8000)) != 0;
}

float from_bits(std::uint32_t u) { return std::bit_cast<float>(u); }

TEST(Bf16, EveryBitPatternRoundTripsThroughFloatAndDouble) {
  for (std::uint32_t b = 0; b < 0x10000; ++b) {
    const auto bits = static_cast<std::uint16_t>(b);
    const float f = bf16_to_float(bits);
    if (std::isnan(f)) {
      EXPECT_TRUE(is_nan_pattern(float_to_bf16(f), kBf16)) << std::hex << b;
      EXPECT_EQ(float_to_bf16(f) & 0x8000, bits & 0x8000) << "NaN keeps its sign";
      EXPECT_TRUE(is_nan_pattern(double_to_bf16(f), kBf16)) << std::hex << b;
      continue;
    }
    ASSERT_EQ(float_to_bf16(f), bits) << std::hex << b;
    ASSERT_EQ(double_to_bf16(static_cast<double>(f)), bits) << std::hex << b;
  }
}

TEST(Bf16, TiesRoundToEven) {
  EXPECT_EQ(float_to_bf16(from_bits(0x3f808000)), 0x3f80);  // 1 + 2^-8: halfway, down to even
  EXPECT_EQ(float_to_bf16(from_bits(0x3f818000)), 0x3f82);  // halfway from odd: up to even
  EXPECT_EQ(float_to_bf16(from_bits(0x3f808001)), 0x3f81);  // just above the tie
  EXPECT_EQ(float_to_bf16(from_bits(0x3f807fff)), 0x3f80);  // just below
  EXPECT_EQ(float_to_bf16(from_bits(0xbf808000)), 0xbf80);  // negative ties too
}

TEST(Bf16, SubnormalsRoundOnTheSubnormalGrid) {
  EXPECT_EQ(float_to_bf16(from_bits(0x00000001)), 0x0000);  // far below half a quantum
  EXPECT_EQ(float_to_bf16(from_bits(0x00008000)), 0x0000);  // exactly half: to even 0
  EXPECT_EQ(float_to_bf16(from_bits(0x00018000)), 0x0002);  // 1.5 quanta: to even 2
  EXPECT_EQ(float_to_bf16(from_bits(0x007fffff)), 0x0080);  // rounds up into the normals
  EXPECT_EQ(float_to_bf16(from_bits(0x80000001)), 0x8000);  // keeps the sign of zero
}

TEST(Bf16, InfNanAndOverflow) {
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(float_to_bf16(inf), 0x7f80);
  EXPECT_EQ(float_to_bf16(-inf), 0xff80);
  EXPECT_TRUE(is_nan_pattern(float_to_bf16(std::numeric_limits<float>::quiet_NaN()), kBf16));
  // A signalling NaN whose payload sits only in the dropped bits must not become Inf.
  EXPECT_TRUE(is_nan_pattern(float_to_bf16(from_bits(0x7f800001)), kBf16));
  EXPECT_EQ(float_to_bf16(std::numeric_limits<float>::max()), 0x7f80);  // overflows to Inf
  EXPECT_EQ(float_to_bf16(from_bits(0x7f7f7fff)), 0x7f7f);  // below the top tie: max
  EXPECT_EQ(float_to_bf16(from_bits(0x7f7f8000)), 0x7f80);  // the top tie goes to Inf
  EXPECT_EQ(double_to_bf16(1e300), 0x7f80);
  EXPECT_EQ(double_to_bf16(-1e300), 0xff80);
  EXPECT_DOUBLE_EQ(dtype_max_finite(DType::BF16), bf16_to_float(0x7f7f));
}

TEST(Bf16, FloatConversionMatchesTheSlowReferenceOnRandomAndEdgeValues) {
  std::mt19937 gen(20240501);  // seeded: reproducible
  for (int i = 0; i < 400000; ++i) {
    const std::uint32_t u = gen();
    const float f = from_bits(u);
    if (std::isnan(f)) continue;
    ASSERT_EQ(float_to_bf16(f), slow_round(f, kBf16)) << std::hex << u;
  }
  // Every float within 2 of a tie, around each exponent (ties have low half 0x8000).
  for (std::uint32_t hi = 0; hi < 0x7f80; hi += 0x11) {
    for (std::uint32_t lo : {0x7ffeu, 0x7fffu, 0x8000u, 0x8001u, 0x8002u, 0x0000u, 0xffffu}) {
      const float f = from_bits((hi << 16) | lo);
      ASSERT_EQ(float_to_bf16(f), slow_round(f, kBf16)) << std::hex << ((hi << 16) | lo);
    }
  }
}

TEST(Bf16, DoubleConversionRoundsOnceNotTwice) {
  // 1 + 2^-8 + 2^-30: above the bf16 tie, but float rounding first lands on the tie.
  const double x = 1.0 + std::ldexp(1.0, -8) + std::ldexp(1.0, -30);
  EXPECT_EQ(double_to_bf16(x), 0x3f81);
  EXPECT_EQ(float_to_bf16(static_cast<float>(x)), 0x3f80) << "double rounding, for contrast";
  std::mt19937_64 gen(7);
  std::uniform_real_distribution<double> mantissa(1.0, 2.0);
  std::uniform_int_distribution<int> exponent(-140, 130);
  for (int i = 0; i < 200000; ++i) {
    const double v = std::ldexp(mantissa(gen), exponent(gen)) * (i % 2 ? -1 : 1);
    ASSERT_EQ(double_to_bf16(v), slow_round(v, kBf16)) << v;
  }
}

TEST(Fp16, EveryBitPatternRoundTripsThroughFloatAndDouble) {
  for (std::uint32_t b = 0; b < 0x10000; ++b) {
    const auto bits = static_cast<std::uint16_t>(b);
    const float f = fp16_to_float(bits);
    if (std::isnan(f)) {
      EXPECT_TRUE(is_nan_pattern(float_to_fp16(f), kFp16)) << std::hex << b;
      EXPECT_TRUE(is_nan_pattern(double_to_fp16(f), kFp16)) << std::hex << b;
      continue;
    }
    ASSERT_EQ(float_to_fp16(f), bits) << std::hex << b;
    ASSERT_EQ(double_to_fp16(static_cast<double>(f)), bits) << std::hex << b;
  }
}

TEST(Fp16, TiesRoundToEven) {
  EXPECT_EQ(float_to_fp16(1.0f + std::ldexp(1.0f, -11)), 0x3c00);      // halfway: to even
  EXPECT_EQ(float_to_fp16(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02);  // from odd: up
  EXPECT_EQ(float_to_fp16(-(1.0f + std::ldexp(1.0f, -11))), 0xbc00);
  EXPECT_EQ(float_to_fp16(std::nextafter(1.0f + std::ldexp(1.0f, -11), 2.0f)), 0x3c01);
}

TEST(Fp16, SubnormalsAndTheBoundaryWithNormals) {
  EXPECT_EQ(float_to_fp16(std::ldexp(1.0f, -24)), 0x0001);      // smallest subnormal
  EXPECT_EQ(float_to_fp16(std::ldexp(1.0f, -25)), 0x0000);      // half of it: to even 0
  EXPECT_EQ(float_to_fp16(3 * std::ldexp(1.0f, -25)), 0x0002);  // 1.5 quanta: to even 2
  EXPECT_EQ(float_to_fp16(std::ldexp(1.0f, -14)), 0x0400);      // smallest normal
  // Halfway between the largest subnormal (0x03ff) and the smallest normal: to even 0x0400.
  EXPECT_EQ(float_to_fp16(std::ldexp(1.0f, -14) - std::ldexp(1.0f, -25)), 0x0400);
  EXPECT_EQ(float_to_fp16(-std::ldexp(1.0f, -26)), 0x8000);
}

TEST(Fp16, OverflowBoundaryAt65520) {
  EXPECT_EQ(float_to_fp16(65504.0f), 0x7bff);
  EXPECT_EQ(float_to_fp16(65519.996f), 0x7bff);
  EXPECT_EQ(float_to_fp16(65520.0f), 0x7c00);  // the top tie goes to Inf (even pattern)
  EXPECT_EQ(float_to_fp16(-65520.0f), 0xfc00);
  EXPECT_EQ(double_to_fp16(std::nextafter(65520.0, 0.0)), 0x7bff);
  EXPECT_EQ(double_to_fp16(65520.0), 0x7c00);
  EXPECT_EQ(float_to_fp16(1e20f), 0x7c00);
  EXPECT_EQ(float_to_fp16(std::numeric_limits<float>::infinity()), 0x7c00);
  EXPECT_TRUE(is_nan_pattern(float_to_fp16(std::numeric_limits<float>::quiet_NaN()), kFp16));
  EXPECT_TRUE(is_nan_pattern(double_to_fp16(std::numeric_limits<double>::quiet_NaN()), kFp16));
  EXPECT_EQ(dtype_max_finite(DType::F16), 65504.0);
}

TEST(Fp16, ConversionsMatchTheSlowReferenceOnRandomValues) {
  std::mt19937_64 gen(99);
  std::uniform_real_distribution<double> mantissa(1.0, 2.0);
  std::uniform_int_distribution<int> exponent(-27, 17);
  for (int i = 0; i < 300000; ++i) {
    const double v = std::ldexp(mantissa(gen), exponent(gen)) * (i % 2 ? -1 : 1);
    ASSERT_EQ(double_to_fp16(v), slow_round(v, kFp16)) << v;
    const float f = static_cast<float>(v);
    ASSERT_EQ(float_to_fp16(f), slow_round(f, kFp16)) << f;
  }
  // A double just above an fp16 tie that float rounding moves onto the tie.
  const double x = 1.0 + std::ldexp(1.0, -11) + std::ldexp(1.0, -40);
  EXPECT_EQ(double_to_fp16(x), 0x3c01);
}

}  // namespace
}  // namespace fusecheck
