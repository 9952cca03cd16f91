// The FP8 GEMMs of the fp8-w8a8 recipe (docs/recipes.md, "fp8-w8a8"): per-output-channel
// E4M3 weights quantized once at load, activations quantized per token (row) with a
// dynamic scale, the product of the E4M3 values accumulated in FP32 and dequantized by
// a_scale * (w_scale * acc), as llm-compressor's FP8_DYNAMIC checkpoints run in vLLM.
// Host only; the later CUDA twin must match the codes and scales bit for bit.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include <fmt/core.h>

#include "harness/core/error.h"
#include "harness/core/fp8.h"
#include "reference/kv_fp8.h"
#include "reference/ops.h"

namespace fusecheck::ref {

// The counts the FP8 KV cache keeps (values, clipped, flushed to zero, scales, headroom)
// serve every E4M3 tensor: weights and GEMM inputs too.
using Fp8Stats = KvFp8Stats;

// Smallest scale a row gets: vLLM's dynamic per-token quantization clamps amax / 448 to
// 1 / (448 * 512) (_FP8_MIN_SCALING_FACTOR, layers/quantization/input_quant_fp8.py) so an all-zero row
// (padding, a pruned channel) stores zeros instead of dividing by zero. Rows with
// amax >= 2^-9 never see it.
inline constexpr float kFp8MinRowScale = 1.0f / (kE4m3Max * 512.0f);

// Replaces every row of `m` by its E4M3 values e4m3(x / s_row) (unscaled) and returns the
// scales s_row = max(amax_row / 448, kFp8MinRowScale), FP32. Counts into `stats`. NaN or
// Inf in a row is an InputError naming `what` and the row: FP8 has no Inf and a NaN scale
// would turn the whole row into NaN.
inline std::vector<float> quantize_rows_e4m3(Mat<float>& m, Fp8Stats& stats, const std::string& what) {
  std::vector<float> scales(static_cast<std::size_t>(m.rows()));
  for (Index i = 0; i < m.rows(); ++i) {
    float amax = 0;
    for (Index j = 0; j < m.cols(); ++j) {
      const float x = m(i, j);
      if (!std::isfinite(x)) {
        throw InputError("", fmt::format("fp8-w8a8: {} row {} holds {}: an E4M3 row scale needs "
                                         "finite values", what, i, x));
      }
      amax = std::max(amax, std::fabs(x));
    }
    const float s = std::max(amax / kE4m3Max, kFp8MinRowScale);
    scales[static_cast<std::size_t>(i)] = s;
    stats.scale_min = std::min<double>(stats.scale_min, s);
    stats.scale_max = std::max<double>(stats.scale_max, s);
    for (Index j = 0; j < m.cols(); ++j) {
      const float x = m(i, j);
      const float scaled = x / s;  // IEEE FP32 division, as the quantization kernel does
      const std::uint8_t code = float_to_e4m3(scaled);
      ++stats.n_values;
      const double a = std::fabs(static_cast<double>(scaled));
      if (a > stats.max_abs_scaled) stats.max_abs_scaled = a;
      if (a > kE4m3ClipAbove) ++stats.n_clipped;
      if (x != 0 && (code & 0x7f) == 0) ++stats.n_flushed;
      m(i, j) = e4m3_to_float(code);
    }
  }
  return scales;
}

// y = a_scale[t] * (w_scale[o] * sum_i a8[t,i] * w8[o,i]): `in` quantized per row here
// (counted into `input_stats`), `w_e4m3` rows already E4M3 values with `w_scale` per row.
// Each product of two E4M3 values is exact in FP32 (4-bit significands); the sum is
// Eigen's FP32 GEMM (its order is not emulated, as for every GEMM of a recipe).
inline Mat<float> fp8_scaled_gemm(const Mat<float>& in, const Mat<float>& w_e4m3,
                                  const std::vector<float>& w_scale, Fp8Stats& input_stats,
                                  const std::string& what) {
  Mat<float> a = in;
  const std::vector<float> a_scale = quantize_rows_e4m3(a, input_stats, what);
  Mat<float> y = a * w_e4m3.transpose();
  for (Index t = 0; t < y.rows(); ++t) {
    for (Index o = 0; o < y.cols(); ++o) {
      y(t, o) = a_scale[static_cast<std::size_t>(t)] * (w_scale[static_cast<std::size_t>(o)] * y(t, o));
    }
  }
  return y;
}

}  // namespace fusecheck::ref
