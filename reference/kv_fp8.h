// The FP8 KV cache of the fp8-kv recipes (docs/recipes.md, "fp8-kv"): one quantizer per
// layer and tensor (k_cache holds k_rope, v_cache holds v) that finds the scales (static:
// from the first append, the prefill, as engines calibrate; dynamic: from every append),
// stores each value as code = e4m3(x / s) and hands attention what it reads back,
// e4m3_value(code) * s in FP32, and counts clipping and flush-to-zero.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include <fmt/core.h>

#include "harness/core/error.h"
#include "harness/core/fp8.h"
#include "reference/ops.h"
#include "reference/recipe.h"

namespace fusecheck::ref {

// Round to nearest (ties to even) takes |x| <= 464 to 448 anyway; above it the unbounded
// rounding would leave the format (480, the NaN slot), so only those values are clipped.
// A static scale = amax / 448 can put amax itself at 448 * (1 + 2^-23) after the FP32
// division: that is rounding, not clipping.
inline constexpr float kE4m3ClipAbove = 464.0f;

// What one tensor of one layer saw since reset.
struct KvFp8Stats {
  std::int64_t n_values = 0;
  std::int64_t n_clipped = 0;    // finite |x / s| > kE4m3ClipAbove: saturated at +-448
  std::int64_t n_flushed = 0;    // x != 0 stored as (signed) zero
  std::int64_t n_nonfinite = 0;  // NaN or Inf in the input
  double max_abs_scaled = 0;     // largest finite |x / s|: headroom = this / 448
  double scale_min = std::numeric_limits<double>::infinity();
  double scale_max = 0;
  double headroom() const { return max_abs_scaled / kE4m3Max; }
};

class KvFp8Quantizer {
 public:
  KvFp8Quantizer(KvCacheFp8 cfg, int n_kv_heads) : cfg_(cfg), n_kv_heads_(n_kv_heads) {}

  // `rows`: one append (every sequence's new tokens) of [rows x n_kv_heads * head_dim],
  // replaced by what the cache reads back. `what` names the tensor in errors.
  void append(Mat<float>& rows, const std::string& what) {
    if (scales_.empty() || cfg_.timing == KvScaleTiming::dynamic) calibrate(rows, what);
    const Index groups = static_cast<Index>(scales_.size());
    const Index width = rows.cols() / groups;
    for (Index g = 0; g < groups; ++g) {
      const float s = scales_[static_cast<std::size_t>(g)];
      const float s_load = cfg_.drop_scale_on_load ? 1.0f : s;
      for (Index i = 0; i < rows.rows(); ++i) {
        for (Index j = g * width; j < (g + 1) * width; ++j) rows(i, j) = store(rows(i, j), s) * s_load;
      }
    }
  }

  const KvFp8Stats& stats() const { return stats_; }
  // The scales in use (one, or one per kv head); empty before the first append.
  const std::vector<float>& scales() const { return scales_; }

 private:
  // Scale per group = amax / 448 (x the delivery check's multiplier), in FP32.
  void calibrate(const Mat<float>& rows, const std::string& what) {
    const int groups = cfg_.granularity == KvScaleGranularity::per_head ? n_kv_heads_ : 1;
    const Index width = rows.cols() / groups;
    scales_.assign(static_cast<std::size_t>(groups), 0.0f);
    for (int g = 0; g < groups; ++g) {
      float amax = 0;
      for (Index i = 0; i < rows.rows(); ++i) {
        for (Index j = g * width; j < (g + 1) * width; ++j) {
          const float a = std::fabs(rows(i, j));
          amax = std::isnan(a) || a > amax ? a : amax;
          if (std::isnan(amax)) break;
        }
      }
      const float s = amax / kE4m3Max * cfg_.scale_multiplier;
      if (!(s > 0) || !std::isfinite(s)) {
        throw InputError("", fmt::format("fp8-kv: {} scale{} is {} (amax {}): an FP8 cache needs a "
                                         "finite scale above zero", what,
                                         groups > 1 ? fmt::format(" of kv head {}", g) : "", s, amax));
      }
      scales_[static_cast<std::size_t>(g)] = s;
      stats_.scale_min = std::min<double>(stats_.scale_min, s);
      stats_.scale_max = std::max<double>(stats_.scale_max, s);
    }
  }

  float store(float x, float s) {
    ++stats_.n_values;
    if (!std::isfinite(x)) ++stats_.n_nonfinite;
    const float scaled = x / s;  // IEEE division in FP32, as the CUDA kernel does
    const std::uint8_t code = float_to_e4m3(scaled);
    if (std::isfinite(scaled)) {
      const double a = std::fabs(static_cast<double>(scaled));
      if (a > stats_.max_abs_scaled) stats_.max_abs_scaled = a;
      if (a > kE4m3ClipAbove) ++stats_.n_clipped;
      if (x != 0 && (code & 0x7f) == 0) ++stats_.n_flushed;
    }
    return e4m3_to_float(code);
  }

  KvCacheFp8 cfg_;
  int n_kv_heads_ = 0;
  std::vector<float> scales_;
  KvFp8Stats stats_;
};

}  // namespace fusecheck::ref
