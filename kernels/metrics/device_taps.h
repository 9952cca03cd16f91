// Device taps in the harness' types (harness/core/path.h DeviceTap, DeviceTapSummary,
// DeviceNextToken) over device_metrics.h's passes: what the CUDA plug-in's ABI 1.3 entries
// (tap_metrics, next_token, copy_to_host) and its paths' device inputs call. The totals
// become metrics through harness/run/metrics_rules.h, the CPU route's own formulas.
#pragma once

#include <vector>

#include <cuda_runtime.h>

#include "harness/core/path.h"
#include "kernels/metrics/device_metrics.h"

namespace fusecheck::cuda {

DevTensor dev_tensor(const DeviceTap& t);

// compute_metrics' fields of `path` against `ref` (and the plain and truth relative L2s).
DeviceTapSummary tap_summary(const DeviceTap& ref, const DeviceTap& path, const DeviceTap* truth, DType dtype,
                             double atol, double rtol, cudaStream_t s);

// next_token_agreement's per-position figures of two logits taps.
DeviceNextToken next_token(const DeviceTap& ref_logits, const DeviceTap& path_logits, cudaStream_t s);

// A device tap's values as dense F64 rows (host). Synchronizes `s`.
TapMatrix tap_to_host(const DeviceTap& t, cudaStream_t s);

// A layer input on the device into a path's dense buffer of `dst` (F32, BF16, F64), each
// value rounded once to nearest even, as the host route's rounding from F64 does.
void copy_input(const DeviceTap& src, DType dst, void* dst_data, cudaStream_t s);

}  // namespace fusecheck::cuda
