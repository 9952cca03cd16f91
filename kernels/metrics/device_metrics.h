// A tap's error metrics computed where the taps are: the element-wise part of
// harness/run/metrics.cpp `compute_metrics` (rel L2, max abs/rel, cosine, share outside
// atol + rtol|ref|, NaN/Inf counts, headroom) over two FP64 device arrays, with FP64
// accumulation, so that only a summary of a few doubles crosses to the host. The
// formulas and the skipping rules (non-finite reference elements, NaN/Inf path elements)
// are the CPU route's; sums run in another order, so results agree with it to ~1e-15
// relative, not bit for bit. The ULP histogram (ulp_p50/p99/max) is not computed here.
// Not yet wired into fusecheck run: taps cross the plug-in ABI as host matrices, so the
// harness needs an ABI capability to leave them on the device (see docs/gpu.md).
#pragma once

#include <cstddef>

#include <cuda_runtime.h>

namespace fusecheck::cuda {

struct DeviceTapMetrics {
  double max_abs, max_rel, rel_l2, cosine, frac_outside;
  double nan_count, inf_count, ref_nonfinite, ref_norm, headroom;
  double overflow_count, saturation_count;
};

// `max_finite`: the largest finite value of the path's low-precision format (headroom,
// saturation); atol, rtol: the share-outside tolerance. Synchronizes `s`.
DeviceTapMetrics device_tap_metrics(const double* ref, const double* path, std::size_t n, double max_finite,
                                    double atol, double rtol, cudaStream_t s);

}  // namespace fusecheck::cuda
