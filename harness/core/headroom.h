// Headroom: overflow headroom at one rounding point of a recipe (values seen before
// rounding, accumulated over calls). Emulated paths record it (reference/rounding.h) and
// report it through Path::headroom; the run records it in the results file.
#pragma once

#include <cmath>
#include <cstdint>

namespace fusecheck {

// Overflow headroom at one point: values seen before rounding, accumulated over calls.
struct Headroom {
  double max_abs = 0;        // largest |x| before rounding (NaN/Inf inputs excluded)
  double max_finite = 0;     // largest finite value of the recipe's format
  std::int64_t n_values = 0;
  std::int64_t n_overflow = 0;      // finite values that rounded (or would round) to +-Inf
  std::int64_t n_saturated = 0;     // values that rounded (or would round) to +-max_finite
  std::int64_t n_nonfinite_in = 0;  // NaN or Inf already in the input
  std::int64_t n_flushed = 0;       // FP8 points only: nonzero values stored as zero
  bool rounded = false;      // whether the recipe rounds at this point

  double ratio() const { return max_finite > 0 ? max_abs / max_finite : 0; }
  // Counts x, whose rounding to the format is `r` (decided on the rounded value itself,
  // so the ties at the top of the range are exact).
  void add(float x, float r) {
    ++n_values;
    if (!std::isfinite(x)) {
      ++n_nonfinite_in;
      return;
    }
    const double a = std::fabs(static_cast<double>(x));
    if (a > max_abs) max_abs = a;
    if (std::isinf(r)) {
      ++n_overflow;
    } else if (std::fabs(static_cast<double>(r)) == max_finite) {
      ++n_saturated;
    }
  }
};

}  // namespace fusecheck
