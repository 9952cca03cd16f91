// FP8 E4M3 (harness/core/fp8.h) against a slow exact reference: all 256 codes, round to
// nearest even at every midpoint, subnormals, saturation above 448, NaN and signed zero.
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "harness/core/fp8.h"

namespace fusecheck {
namespace {

bool is_nan_code(std::uint8_t c) { return (c & 0x7f) == 0x7f; }

// The positive finite codes 0x00..0x7e are monotone in value: the slow reference picks
// the nearest by scanning them, ties to the even code, beyond 448 the largest.
std::uint8_t slow_encode(double x) {
  const std::uint8_t sign = std::signbit(x) ? 0x80 : 0;
  const double a = std::fabs(x);
  if (a >= kE4m3Max) return sign | kE4m3MaxCode;
  std::uint8_t best = 0;
  for (std::uint8_t c = 1; c <= kE4m3MaxCode; ++c) {
    const double d = std::fabs(e4m3_to_float(c) - a), best_d = std::fabs(e4m3_to_float(best) - a);
    if (d < best_d || (d == best_d && (c & 1) == 0)) best = c;
  }
  return sign | best;
}

TEST(Fp8E4m3, DecodesTheDocumentedValues) {
  EXPECT_EQ(e4m3_to_float(0x00), 0.0f);
  EXPECT_TRUE(std::signbit(e4m3_to_float(0x80)));
  EXPECT_EQ(e4m3_to_float(0x38), 1.0f);    // exponent 7 = bias
  EXPECT_EQ(e4m3_to_float(0x7e), 448.0f);  // largest finite
  EXPECT_EQ(e4m3_to_float(0xfe), -448.0f);
  EXPECT_EQ(e4m3_to_float(0x08), 0x1p-6f);  // smallest normal
  EXPECT_EQ(e4m3_to_float(0x01), 0x1p-9f);  // smallest subnormal
  EXPECT_EQ(e4m3_to_float(0x07), 7 * 0x1p-9f);
  EXPECT_EQ(e4m3_to_float(0x7d), 416.0f);
  EXPECT_TRUE(std::isnan(e4m3_to_float(0x7f)));
  EXPECT_TRUE(std::isnan(e4m3_to_float(0xff)));
}

TEST(Fp8E4m3, EveryCodeRoundTrips) {
  for (int c = 0; c < 256; ++c) {
    const auto code = static_cast<std::uint8_t>(c);
    const float v = e4m3_to_float(code);
    if (is_nan_code(code)) {
      EXPECT_TRUE(std::isnan(v)) << c;
      EXPECT_EQ(float_to_e4m3(v), code) << "NaN keeps its sign, code " << c;
    } else {
      EXPECT_EQ(float_to_e4m3(v), code) << "code " << c << " value " << v;
    }
  }
}

TEST(Fp8E4m3, MidpointsRoundToTheEvenCode) {
  // Between every pair of neighbouring finite codes: the exact midpoint goes to the even
  // code, one float ulp either side to the nearer one.
  for (std::uint8_t c = 0; c < kE4m3MaxCode; ++c) {
    for (std::uint8_t sign : {std::uint8_t{0}, std::uint8_t{0x80}}) {
      const float lo = e4m3_to_float(sign | c), hi = e4m3_to_float(sign | (c + 1));
      const float mid = (lo + hi) / 2;  // exact: 4 significant bits
      const std::uint8_t even = (c & 1) == 0 ? c : c + 1;
      EXPECT_EQ(float_to_e4m3(mid), sign | even) << "midpoint " << mid;
      EXPECT_EQ(float_to_e4m3(std::nextafter(mid, lo)), sign | c) << mid;
      EXPECT_EQ(float_to_e4m3(std::nextafter(mid, hi)), sign | (c + 1)) << mid;
    }
  }
  EXPECT_EQ(float_to_e4m3(1.0625f), 0x38);  // 1 + 1/16: tie between 1.0 and 1.125 -> 1.0
  EXPECT_EQ(float_to_e4m3(1.1875f), 0x3a);  // tie between 1.125 and 1.25 -> 1.25
}

TEST(Fp8E4m3, SubnormalsAndFlushToZero) {
  EXPECT_EQ(float_to_e4m3(0x1p-10f), 0x00);        // half the smallest subnormal: tie to 0
  EXPECT_EQ(float_to_e4m3(0x1.000002p-10f), 0x01);  // just above it
  EXPECT_EQ(float_to_e4m3(3 * 0x1p-10f), 0x02);    // tie between 1 and 2 quanta -> 2
  EXPECT_EQ(float_to_e4m3(15 * 0x1p-10f), 0x08);   // tie between 7 quanta and 2^-6 -> 2^-6
  EXPECT_EQ(float_to_e4m3(1e-30f), 0x00);
  EXPECT_EQ(float_to_e4m3(-1e-30f), 0x80);  // signed zero
  EXPECT_EQ(float_to_e4m3(std::numeric_limits<float>::denorm_min()), 0x00);
}

TEST(Fp8E4m3, SaturatesAbove448) {
  EXPECT_EQ(float_to_e4m3(448.0f), 0x7e);
  EXPECT_EQ(float_to_e4m3(449.0f), 0x7e);
  EXPECT_EQ(float_to_e4m3(464.0f), 0x7e);  // would round up to 480, the NaN slot
  EXPECT_EQ(float_to_e4m3(1e9f), 0x7e);
  EXPECT_EQ(float_to_e4m3(-1e9f), 0xfe);
  EXPECT_EQ(float_to_e4m3(std::numeric_limits<float>::max()), 0x7e);
  EXPECT_EQ(float_to_e4m3(std::numeric_limits<float>::infinity()), 0x7e);
  EXPECT_EQ(float_to_e4m3(-std::numeric_limits<float>::infinity()), 0xfe);
}

TEST(Fp8E4m3, NanStaysNanWithItsSign) {
  EXPECT_EQ(float_to_e4m3(std::numeric_limits<float>::quiet_NaN()), 0x7f);
  EXPECT_EQ(float_to_e4m3(-std::numeric_limits<float>::quiet_NaN()), 0xff);
  EXPECT_TRUE(std::isnan(round_to_e4m3(std::numeric_limits<float>::signaling_NaN())));
}

TEST(Fp8E4m3, MatchesTheSlowReferenceOnSeededValues) {
  std::mt19937_64 rng(17);
  std::uniform_real_distribution<double> log2_mag(-14.0, 10.0);
  for (int i = 0; i < 200000; ++i) {
    const float x = static_cast<float>((i & 1 ? -1 : 1) * std::exp2(log2_mag(rng)));
    ASSERT_EQ(float_to_e4m3(x), slow_encode(x)) << "x = " << x;
  }
}

}  // namespace
}  // namespace fusecheck
