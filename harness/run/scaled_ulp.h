// The scaled ULP distance of invariance mode (docs/invariance.md "Reading the distance"):
// |x - y| counted in ULPs of the tap row's scale (the storage dtype's ULP at the largest
// |value| of that row), not of the values themselves. A reduction order that moves every
// value by about one rounding of the row's magnitude reads ~1 however close to zero a
// value is; the bit distance of a value near zero that changes sign reads ~2e9 for the
// same move. Reading garbage (another row, a stale buffer) reads ~2^mantissa-bits.
#pragma once

#include <array>
#include <cstdint>
#include <string>

#include "harness/core/dtype.h"

namespace fusecheck::run {

// The spacing of `dtype`'s values at `scale` (>= 0): 2^(exponent(scale) - mantissa bits),
// the subnormal spacing below the smallest normal (a row of zeros has that scale).
double ulp_at(double scale, DType dtype);

// |x - y| / ulp_at(scale); infinite when either side is not finite.
double scaled_ulp(double x, double y, double scale, DType dtype);

// Whether x and y lie on opposite sides of zero (-0 against +0 does not count: both are zero).
bool crosses_zero(double x, double y);

// Histogram of scaled distances: bin 0 holds d < 1, bin i in 1..30 holds [2^(i-1), 2^i),
// bin 31 holds d >= 2^30 and the infinite ones.
inline constexpr int kScaledUlpBins = 32;
using ScaledUlpHistogram = std::array<std::int64_t, kScaledUlpBins>;
int scaled_ulp_bin(double d);
// "<1", "1", "2-3", ..., "512-1023", "2^10-2^11", ..., ">=2^30".
std::string scaled_ulp_bin_label(int bin);
// The non-empty bins as "label:count" joined by spaces ("1:9870 2-3:120"); "none" when empty.
std::string scaled_ulp_histogram_text(const ScaledUlpHistogram& h);
// Every bin's count in bin order, comma-joined (the HDF5 attribute).
std::string scaled_ulp_histogram_csv(const ScaledUlpHistogram& h);

}  // namespace fusecheck::run
