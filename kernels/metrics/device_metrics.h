// Tap metrics computed where the taps are (issue 18; docs/gpu.md "Tap metrics on the
// device"): the device passes behind harness/run/compute_metrics' numbers, over two (or,
// with the FP64 truth, three) device tensors of any of the path dtypes, with FP64
// accumulation; next_token_agreement's per-position figures over two logits tensors; and
// the conversion of a device tensor into a path's input buffer with one rounding. Plain
// types only (no Eigen, no harness headers), so nvcc compiles it alone; device_taps.h
// turns the totals into the harness' types with the CPU route's own formulas.
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_runtime.h>

namespace fusecheck::cuda {

// Codes of harness/core/dtype.h's DType (F32, F16, BF16, F64), as ints.
enum DevDType : int { kDevF32 = 0, kDevF16 = 1, kDevBF16 = 2, kDevF64 = 3 };

// [rows x cols], row r at data + r * row_stride elements.
struct DevTensor {
  const void* data = nullptr;
  int dtype = kDevF32;
  std::int64_t rows = 0, cols = 0, row_stride = 0;
};

// The ULP histogram's bins: harness/run/metrics_rules.h kUlpExactBins (4096) + 64.
inline constexpr int kDevUlpExactBins = 4096;
inline constexpr int kDevUlpBins = kDevUlpExactBins + 64;

// What the passes gather. Sums in FP64 added in a fixed order (per-block partials, then
// one block's fixed tree), so a call gives the same bits every time; maxima as the bit patterns of
// non-negative doubles; counts exact.
struct DevTapTotals {
  // Over elements where both are finite (ref_sq: where the reference is), as metrics.cpp.
  double ref_sq, diff_sq, path_sq, dot;
  // Over every element (relative_l2's norms): path - ref, ref; with a truth: path - truth,
  // ref - truth, truth.
  double plain_diff_sq, plain_ref_sq, truth_path_sq, truth_ref_sq, truth_sq;
  double rel_floor;
  unsigned long long max_abs, max_rel, max_mag;
  unsigned long long outside, saturated, ref_nonfinite, nan, inf, ulp_max;
  unsigned long long ulp_bins[kDevUlpBins];
};

// Totals of `path` against `ref` (same shape; `truth` optional). `path_dtype`: the format
// whose ULPs, largest finite value (`max_finite`) and saturation count. Synchronizes `s`.
// Where one call's device time goes (bench_device_metrics): ms between events around the
// memsets, pass 1 with the floor, pass 2, the partials' sum and the copy back.
struct DevTotalsProfile {
  float memset_ms = 0, ref_sq_ms = 0, totals_ms = 0, add_ms = 0, copy_ms = 0;
};
void device_tap_totals(const DevTensor& ref, const DevTensor& path, const DevTensor* truth, int path_dtype,
                       double max_finite, double atol, double rtol, DevTapTotals& out, cudaStream_t s,
                       DevTotalsProfile* profile = nullptr);

// Per row of two logits tensors [rows x vocab]: KL(softmax(ref) || softmax(path)) (+Inf
// where the path's row is not finite), the reference's top-1 minus top-2 value, 1 where
// the first argmax agrees. Host arrays of `rows` entries. Synchronizes `s`.
void device_next_token_rows(const DevTensor& ref, const DevTensor& path, double* kl, double* margin,
                            int* top1_match, cudaStream_t s);

// `src`'s values rounded once (to nearest, ties to even) into dense [rows x cols] of
// `dst_dtype` (F32, BF16 or F64) at `dst`. Asynchronous on `s`.
void convert_rows(const DevTensor& src, int dst_dtype, void* dst, cudaStream_t s);

}  // namespace fusecheck::cuda
