// device_tap_metrics: two passes over the elements (the reference's RMS first, which sets
// the max_rel floor, then every sum, maximum and count), each block reducing in FP64 and
// adding its partials with one atomic per quantity; the host finishes with the CPU
// route's formulas (harness/run/metrics.cpp).
#include "kernels/metrics/device_metrics.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "kernels/common/cuda_check.h"
#include "kernels/common/device_buffer.h"

namespace fusecheck::cuda {

namespace {

constexpr unsigned kFullMask = 0xffffffffu;
constexpr int kThreads = 256;

struct Accumulators {
  double ref_sq, diff_sq, path_sq, dot;
  unsigned long long max_abs, max_rel, max_mag;  // bit patterns of non-negative doubles
  unsigned long long nan_count, inf_count, ref_nonfinite, outside, saturated;
};

__device__ double warp_sum(double v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFullMask, v, o);
  return v;
}
// NaN never wins, as std::max(acc, NaN) keeps acc on the CPU.
__device__ double warp_max(double v) {
  for (int o = 16; o > 0; o >>= 1) {
    const double other = __shfl_xor_sync(kFullMask, v, o);
    if (other > v) v = other;
  }
  return v;
}
__device__ unsigned long long warp_count(unsigned long long v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFullMask, v, o);
  return v;
}

// Non-negative doubles order like their bit patterns, so an integer atomicMax is a max.
__device__ void atomic_max_nonnegative(unsigned long long* addr, double v) {
  if (v > 0) atomicMax(addr, static_cast<unsigned long long>(__double_as_longlong(v)));
}

__global__ void ref_sumsq_kernel(const double* ref, std::size_t n, Accumulators* acc) {
  double s = 0;
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    if (isfinite(ref[i])) s += ref[i] * ref[i];
  }
  s = warp_sum(s);
  if ((threadIdx.x & 31) == 0) atomicAdd(&acc->ref_sq, s);
}

__global__ void metrics_kernel(const double* ref, const double* path, std::size_t n, double max_finite, double atol,
                               double rtol, Accumulators* acc) {
  // Near-zero reference elements would make any relative error meaningless: the CPU
  // route's floor at 1e-3 of the tap's RMS.
  const double rel_floor = 1e-3 * sqrt(acc->ref_sq / static_cast<double>(n));
  double diff_sq = 0, path_sq = 0, dot = 0, max_abs = 0, max_rel = 0, max_mag = 0;
  unsigned long long nan_count = 0, inf_count = 0, ref_nonfinite = 0, outside = 0, saturated = 0;
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    const double ri = ref[i], xi = path[i];
    if (!isfinite(ri)) {
      ++ref_nonfinite;
      continue;
    }
    if (isnan(xi)) {
      ++nan_count;
      continue;
    }
    if (isinf(xi)) {
      ++inf_count;
      continue;
    }
    const double d = fabs(xi - ri);
    diff_sq += d * d;
    path_sq += xi * xi;
    dot += xi * ri;
    if (d > max_abs) max_abs = d;
    const double rel = d / fmax(fabs(ri), rel_floor);
    if (rel > max_rel) max_rel = rel;
    if (d > atol + rtol * fabs(ri)) ++outside;
    if (fabs(xi) > max_mag) max_mag = fabs(xi);
    if (fabs(xi) >= max_finite) ++saturated;
  }
  diff_sq = warp_sum(diff_sq), path_sq = warp_sum(path_sq), dot = warp_sum(dot);
  max_abs = warp_max(max_abs), max_rel = warp_max(max_rel), max_mag = warp_max(max_mag);
  nan_count = warp_count(nan_count), inf_count = warp_count(inf_count);
  ref_nonfinite = warp_count(ref_nonfinite), outside = warp_count(outside), saturated = warp_count(saturated);
  if ((threadIdx.x & 31) != 0) return;
  atomicAdd(&acc->diff_sq, diff_sq);
  atomicAdd(&acc->path_sq, path_sq);
  atomicAdd(&acc->dot, dot);
  atomic_max_nonnegative(&acc->max_abs, max_abs);
  atomic_max_nonnegative(&acc->max_rel, max_rel);
  atomic_max_nonnegative(&acc->max_mag, max_mag);
  atomicAdd(&acc->nan_count, nan_count);
  atomicAdd(&acc->inf_count, inf_count);
  atomicAdd(&acc->ref_nonfinite, ref_nonfinite);
  atomicAdd(&acc->outside, outside);
  atomicAdd(&acc->saturated, saturated);
}

double from_bits(unsigned long long bits) {
  double v;
  static_assert(sizeof v == sizeof bits);
  std::memcpy(&v, &bits, sizeof v);
  return v;
}

}  // namespace

DeviceTapMetrics device_tap_metrics(const double* ref, const double* path, std::size_t n, double max_finite,
                                    double atol, double rtol, cudaStream_t s) {
  constexpr double nan = std::numeric_limits<double>::quiet_NaN();
  constexpr double inf = std::numeric_limits<double>::infinity();
  DeviceBuffer<Accumulators> acc(1);
  CUDA_CHECK(cudaMemsetAsync(acc.data(), 0, sizeof(Accumulators), s));
  if (n > 0) {
    const int blocks = static_cast<int>(std::min<std::size_t>((n + kThreads - 1) / kThreads, 1024));
    ref_sumsq_kernel<<<blocks, kThreads, 0, s>>>(ref, n, acc.data());
    CUDA_CHECK_LAUNCH();
    metrics_kernel<<<blocks, kThreads, 0, s>>>(ref, path, n, max_finite, atol, rtol, acc.data());
    CUDA_CHECK_LAUNCH();
  }
  Accumulators a{};
  CUDA_CHECK(cudaMemcpyAsync(&a, acc.data(), sizeof a, cudaMemcpyDeviceToHost, s));
  CUDA_CHECK(cudaStreamSynchronize(s));

  // The CPU route's finishing formulas (harness/run/metrics.cpp compute_metrics).
  DeviceTapMetrics m{};
  m.nan_count = static_cast<double>(a.nan_count);
  m.inf_count = static_cast<double>(a.inf_count);
  m.overflow_count = m.inf_count;
  m.saturation_count = static_cast<double>(a.saturated);
  m.ref_nonfinite = static_cast<double>(a.ref_nonfinite);
  const double bad = m.nan_count + m.inf_count;
  const double ref_rms = n ? std::sqrt(a.ref_sq / static_cast<double>(n)) : 0.0;
  const double rel_floor = 1e-3 * ref_rms;
  m.ref_norm = std::sqrt(a.ref_sq);
  m.max_abs = bad > 0 ? inf : from_bits(a.max_abs);
  m.max_rel = bad > 0 ? inf : (rel_floor > 0 ? from_bits(a.max_rel) : nan);
  m.rel_l2 = bad > 0 ? inf : (m.ref_norm > 0 ? std::sqrt(a.diff_sq) / m.ref_norm : nan);
  m.cosine = (bad > 0 || m.ref_norm == 0 || a.path_sq == 0) ? nan : a.dot / (std::sqrt(a.path_sq) * m.ref_norm);
  m.frac_outside = n ? (static_cast<double>(a.outside) + bad) / static_cast<double>(n) : nan;
  m.headroom = from_bits(a.max_mag) / max_finite;
  return m;
}

}  // namespace fusecheck::cuda
