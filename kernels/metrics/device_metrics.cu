// The device passes of device_metrics.h. Tap totals: pass 1 sums the reference's finite
// squares (the max_rel floor needs its RMS), one block turns the per-block partials into
// the floor, pass 2 gathers everything else (sums per block, maxima and counts reduced per
// block then one integer atomic per block, the ULP histogram in shared memory per block),
// one block adds pass 2's partials in a fixed order. Next token: one block per row, three passes as metrics.cpp's
// agree_at. Every element's arithmetic is the CPU route's (harness/run/metrics.cpp).
#include "kernels/metrics/device_metrics.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <vector>

#include "kernels/common/cuda_check.h"
#include "kernels/common/device_buffer.h"

namespace fusecheck::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int kMaxBlocks = 1024;
constexpr int kSums = 9;  // partials per block: DevTapTotals' sums, in their order

__device__ __forceinline__ double load(const DevTensor& t, std::int64_t r, std::int64_t c) {
  const std::int64_t i = r * t.row_stride + c;
  switch (t.dtype) {
    case kDevF64: return static_cast<const double*>(t.data)[i];
    case kDevF32: return static_cast<const float*>(t.data)[i];
    case kDevBF16: return __bfloat162float(static_cast<const __nv_bfloat16*>(t.data)[i]);
    default: return __half2float(static_cast<const __half*>(t.data)[i]);
  }
}

// x rounded toward zero to float with the lost bits OR-ed into the last one (round to
// odd): rounding that once more to a format of at most 22 significant bits gives what one
// rounding of x to nearest would (bf16 and fp16 from double, without double rounding).
__device__ __forceinline__ float to_float_odd(double x) {
  const float f = __double2float_rz(x);
  unsigned u = __float_as_uint(f);
  if (static_cast<double>(f) != x) u |= 1u;
  return __uint_as_float(u);
}
// Float bits to bf16 bits, to nearest even (finite or infinite input).
__device__ __forceinline__ unsigned bf16_bits_of(float f) {
  const unsigned u = __float_as_uint(f);
  return (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
}

// metrics.cpp ordered_bits: x rounded once to `dtype`, as a sign-magnitude integer (finite x).
__device__ __forceinline__ long long ordered_bits(double x, int dtype) {
  unsigned long long bits = 0, sign_bit = 0;
  switch (dtype) {
    case kDevBF16: bits = bf16_bits_of(to_float_odd(x)); sign_bit = 0x8000u; break;
    case kDevF16: bits = __half_as_ushort(__float2half_rn(to_float_odd(x))); sign_bit = 0x8000u; break;
    case kDevF32: bits = __float_as_uint(__double2float_rn(x)); sign_bit = 0x80000000u; break;
    default: bits = static_cast<unsigned long long>(__double_as_longlong(x)); sign_bit = 0x8000000000000000ull; break;
  }
  const auto magnitude = static_cast<long long>(bits & ~sign_bit);
  return (bits & sign_bit) ? -magnitude : magnitude;
}

__device__ __forceinline__ int ulp_bin(unsigned long long d) {
  return d < kDevUlpExactBins ? static_cast<int>(d) : kDevUlpExactBins + (64 - __clzll(static_cast<long long>(d))) - 1;
}

// Block-wide sum of v in a fixed order (the same bits every call); result on thread 0.
__device__ double block_sum(double v, double* shared) {
  shared[threadIdx.x] = v;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) shared[threadIdx.x] += shared[threadIdx.x + s];
    __syncthreads();
  }
  const double out = shared[0];
  __syncthreads();
  return out;
}

// A non-negative double's bits compare as the double does; 0 for v <= 0 (or NaN), which
// leaves a maximum that starts at 0 unchanged.
__device__ __forceinline__ unsigned long long max_bits(double v) {
  return v > 0 ? static_cast<unsigned long long>(__double_as_longlong(v)) : 0ull;
}

// Block-wide maximum and sum of 64-bit integers (exact, any order); result on every thread.
// `shared` holds one entry per warp.
__device__ unsigned long long block_max_u64(unsigned long long v, unsigned long long* shared) {
  for (int o = 16; o > 0; o >>= 1) {
    const unsigned long long w = __shfl_down_sync(0xffffffffu, v, o);
    v = w > v ? w : v;
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  unsigned long long m = 0;
  for (int i = 0; i < static_cast<int>(blockDim.x / 32); ++i) m = shared[i] > m ? shared[i] : m;
  __syncthreads();
  return m;
}
__device__ unsigned long long block_sum_u64(unsigned long long v, unsigned long long* shared) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  unsigned long long t = 0;
  for (int i = 0; i < static_cast<int>(blockDim.x / 32); ++i) t += shared[i];
  __syncthreads();
  return t;
}

__global__ void ref_sq_kernel(DevTensor ref, double* partials) {
  __shared__ double shared[kThreads];
  double s = 0;
  for (std::int64_t r = blockIdx.x; r < ref.rows; r += gridDim.x) {
    for (std::int64_t c = threadIdx.x; c < ref.cols; c += blockDim.x) {
      const double v = load(ref, r, c);
      if (isfinite(v)) s += v * v;
    }
  }
  s = block_sum(s, shared);
  if (threadIdx.x == 0) partials[blockIdx.x] = s;
}

// Sum of partials[b * stride + k] over b < blocks, in a fixed order on one block of
// kThreads threads: thread t adds b = t, t + kThreads, ... in turn, then block_sum's tree.
// The same bits every call (a single thread's serial sum was as deterministic, but at
// hundreds of dependent global loads it took longer than the passes it finished).
__device__ double sum_partials(const double* partials, int blocks, int stride, int k, double* shared) {
  double s = 0;
  for (int b = threadIdx.x; b < blocks; b += blockDim.x) s += partials[static_cast<std::size_t>(b) * stride + k];
  return block_sum(s, shared);
}

// One block of kThreads.
__global__ void floor_kernel(const double* partials, int blocks, std::int64_t n, DevTapTotals* out) {
  __shared__ double shared[kThreads];
  const double s = sum_partials(partials, blocks, 1, 0, shared);
  if (threadIdx.x == 0) {
    out->ref_sq = s;
    // rules::rel_floor_of
    out->rel_floor = n ? 1e-3 * sqrt(s / static_cast<double>(n)) : 0.0;
  }
}

__global__ void totals_kernel(DevTensor ref, DevTensor path, DevTensor truth, bool has_truth, int path_dtype,
                              double max_finite, double atol, double rtol, double* partials, DevTapTotals* out) {
  __shared__ double shared[kThreads];
  __shared__ unsigned long long shared_u64[kThreads / 32];
  __shared__ unsigned bins[kDevUlpBins];
  for (int i = threadIdx.x; i < kDevUlpBins; i += blockDim.x) bins[i] = 0;
  __syncthreads();
  const double rel_floor = out->rel_floor;
  double sums[kSums] = {};  // [0] unused here (pass 1 has ref_sq)
  double max_abs = 0, max_rel = 0, max_mag = 0;
  unsigned long long outside = 0, saturated = 0, ref_nonfinite = 0, nan_count = 0, inf_count = 0, ulp_max = 0;
  for (std::int64_t r = blockIdx.x; r < ref.rows; r += gridDim.x) {
    for (std::int64_t c = threadIdx.x; c < ref.cols; c += blockDim.x) {
      const double ri = load(ref, r, c), xi = load(path, r, c);
      const double pd = xi - ri;
      sums[4] += pd * pd;
      sums[5] += ri * ri;
      if (has_truth) {
        const double ti = load(truth, r, c);
        const double tp = xi - ti, tr = ri - ti;
        sums[6] += tp * tp;
        sums[7] += tr * tr;
        sums[8] += ti * ti;
      }
      if (!isfinite(ri)) {
        ++ref_nonfinite;
        continue;
      }
      if (!isfinite(xi)) {
        if (isnan(xi)) {
          ++nan_count;
        } else {
          ++inf_count;
        }
        continue;
      }
      const double d = fabs(xi - ri);
      sums[1] += d * d;
      sums[2] += xi * xi;
      sums[3] += xi * ri;
      max_abs = fmax(max_abs, d);
      const double abs_ri = fabs(ri);
      outside += d > atol + rtol * abs_ri ? 1 : 0;
      const double abs_xi = fabs(xi);
      max_mag = fmax(max_mag, abs_xi);
      saturated += abs_xi >= max_finite ? 1 : 0;
      const double q = d / (abs_ri < rel_floor ? rel_floor : abs_ri);
      // NaN (0/0 with a zero floor) outranks every number, as metrics.cpp's max of bits.
      if (isnan(q)) {
        max_rel = q;
      } else if (!isnan(max_rel)) {
        max_rel = fmax(max_rel, q);
      }
      const long long ia = ordered_bits(xi, path_dtype), ib = ordered_bits(ri, path_dtype);
      const auto u = static_cast<unsigned long long>(ia > ib ? ia - ib : ib - ia);
      // Lanes of a warp with the same bin add once (a close path puts most elements in
      // bins 0-2: 32-way conflicts on one shared word otherwise).
      const int bin = ulp_bin(u);
      const unsigned peers = __match_any_sync(__activemask(), bin);
      if ((threadIdx.x & 31) == __ffs(peers) - 1) atomicAdd(&bins[bin], static_cast<unsigned>(__popc(peers)));
      ulp_max = u > ulp_max ? u : ulp_max;
    }
  }
  for (int k = 1; k < kSums; ++k) {
    const double s = block_sum(sums[k], shared);
    if (threadIdx.x == 0) partials[static_cast<std::size_t>(blockIdx.x) * kSums + k] = s;
  }
  // Maxima (as the bit patterns max_bits gives; a NaN max_rel as its magnitude
  // bits, above every number) and counts, reduced over the block first: one atomic per
  // block and field. Every thread's own atomics on the same ten addresses serialized the
  // whole grid (481 us for a 512 x 1024 tap on an H200, bench_device_metrics).
  const unsigned long long enc_rel =
      isnan(max_rel) ? static_cast<unsigned long long>(__double_as_longlong(max_rel)) & 0x7fffffffffffffffull
                     : max_bits(max_rel);
  const unsigned long long b_abs = block_max_u64(max_bits(max_abs), shared_u64);
  const unsigned long long b_rel = block_max_u64(enc_rel, shared_u64);
  const unsigned long long b_mag = block_max_u64(max_bits(max_mag), shared_u64);
  const unsigned long long b_ulp = block_max_u64(ulp_max, shared_u64);
  const unsigned long long b_out = block_sum_u64(outside, shared_u64);
  const unsigned long long b_sat = block_sum_u64(saturated, shared_u64);
  const unsigned long long b_rnf = block_sum_u64(ref_nonfinite, shared_u64);
  const unsigned long long b_nan = block_sum_u64(nan_count, shared_u64);
  const unsigned long long b_inf = block_sum_u64(inf_count, shared_u64);
  if (threadIdx.x == 0) {
    if (b_abs) atomicMax(&out->max_abs, b_abs);
    if (b_rel) atomicMax(&out->max_rel, b_rel);
    if (b_mag) atomicMax(&out->max_mag, b_mag);
    if (b_ulp) atomicMax(&out->ulp_max, b_ulp);
    if (b_out) atomicAdd(&out->outside, b_out);
    if (b_sat) atomicAdd(&out->saturated, b_sat);
    if (b_rnf) atomicAdd(&out->ref_nonfinite, b_rnf);
    if (b_nan) atomicAdd(&out->nan, b_nan);
    if (b_inf) atomicAdd(&out->inf, b_inf);
  }
  __syncthreads();
  for (int i = threadIdx.x; i < kDevUlpBins; i += blockDim.x) {
    if (bins[i]) atomicAdd(&out->ulp_bins[i], static_cast<unsigned long long>(bins[i]));
  }
}

// One block of kThreads.
__global__ void add_partials_kernel(const double* partials, int blocks, DevTapTotals* out) {
  __shared__ double shared[kThreads];
  double s[kSums] = {};
  for (int k = 1; k < kSums; ++k) s[k] = sum_partials(partials, blocks, kSums, k, shared);
  if (threadIdx.x == 0) {
    out->diff_sq = s[1], out->path_sq = s[2], out->dot = s[3];
    out->plain_diff_sq = s[4], out->plain_ref_sq = s[5];
    out->truth_path_sq = s[6], out->truth_ref_sq = s[7], out->truth_sq = s[8];
  }
}

int blocks_for(std::int64_t rows) {
  return static_cast<int>(std::clamp<std::int64_t>(rows, 1, kMaxBlocks));
}

// --- next token -------------------------------------------------------------------------

constexpr int kRowThreads = 512;

struct ArgMax {
  double v;
  std::int64_t i;
};
// Larger value wins, ties to the smaller index: a left-to-right scan's first maximum.
__device__ __forceinline__ ArgMax better(ArgMax a, ArgMax b) { return (b.v > a.v || (b.v == a.v && b.i < a.i)) ? b : a; }

__global__ void next_token_kernel(DevTensor ref, DevTensor path, double* kl_out, double* margin_out, int* match_out) {
  __shared__ double sd[kRowThreads];
  __shared__ ArgMax sa[kRowThreads], sb[kRowThreads];
  __shared__ double s_first[kRowThreads], s_second[kRowThreads];
  __shared__ int s_finite[kRowThreads];
  const std::int64_t n = ref.cols;
  for (std::int64_t r = blockIdx.x; r < ref.rows; r += gridDim.x) {
    // Pass 1: both rows' first argmax, the reference's top two, whether the path is finite.
    ArgMax best_ref{-INFINITY, n}, best_path{-INFINITY, n};
    double first = -INFINITY, second = -INFINITY;
    int finite = 1;
    for (std::int64_t c = threadIdx.x; c < n; c += blockDim.x) {
      const double rv = load(ref, r, c), xv = load(path, r, c);
      // As the CPU's scan from index 0: a NaN never wins, except at index 0, which then
      // stays (thread 0 holds it and is always the left side of a merge).
      if ((best_ref.i == n && (c == 0 || !isnan(rv))) || best_ref.v < rv) best_ref = {rv, c};
      if ((best_path.i == n && (c == 0 || !isnan(xv))) || best_path.v < xv) best_path = {xv, c};
      if (rv > first) {
        second = first;
        first = rv;
      } else if (rv > second) {
        second = rv;
      }
      finite &= isfinite(xv) ? 1 : 0;
    }
    sa[threadIdx.x] = best_ref, sb[threadIdx.x] = best_path;
    s_first[threadIdx.x] = first, s_second[threadIdx.x] = second, s_finite[threadIdx.x] = finite;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
      if (threadIdx.x < s) {
        const int o = threadIdx.x + s;
        if (sa[o].i != n) sa[threadIdx.x] = sa[threadIdx.x].i == n ? sa[o] : better(sa[threadIdx.x], sa[o]);
        if (sb[o].i != n) sb[threadIdx.x] = sb[threadIdx.x].i == n ? sb[o] : better(sb[threadIdx.x], sb[o]);
        const double f1 = s_first[threadIdx.x], f2 = s_first[o];
        s_first[threadIdx.x] = fmax(f1, f2);
        s_second[threadIdx.x] = fmax(fmin(f1, f2), fmax(s_second[threadIdx.x], s_second[o]));
        s_finite[threadIdx.x] &= s_finite[o];
      }
      __syncthreads();
    }
    const ArgMax top_ref = sa[0], top_path = sb[0];
    const double margin = n > 1 ? s_first[0] - s_second[0] : 0.0;
    const bool path_finite = s_finite[0] != 0;
    __syncthreads();
    if (!path_finite) {
      if (threadIdx.x == 0) kl_out[r] = INFINITY, margin_out[r] = margin, match_out[r] = 0;
      continue;
    }
    // Pass 2: the shifted exp sums (log-sum-exp of each row).
    const double mx_ref = top_ref.v, mx_path = top_path.v;
    double sum_ref = 0, sum_path = 0;
    for (std::int64_t c = threadIdx.x; c < n; c += blockDim.x) {
      sum_ref += exp(load(ref, r, c) - mx_ref);
      sum_path += exp(load(path, r, c) - mx_path);
    }
    sum_ref = block_sum(sum_ref, sd);
    sum_path = block_sum(sum_path, sd);
    const double lse_ref = mx_ref + log(sum_ref), lse_path = mx_path + log(sum_path);
    // Pass 3: KL(softmax(ref) || softmax(path)).
    double kl = 0;
    for (std::int64_t c = threadIdx.x; c < n; c += blockDim.x) {
      const double lp_ref = load(ref, r, c) - lse_ref, lp_path = load(path, r, c) - lse_path;
      kl += exp(lp_ref) * (lp_ref - lp_path);
    }
    kl = block_sum(kl, sd);
    if (threadIdx.x == 0) {
      kl_out[r] = kl < 0.0 ? 0.0 : kl;  // rounding can give -1e-17 for identical rows (NaN stays, as std::max)
      margin_out[r] = margin;
      match_out[r] = top_ref.i == top_path.i ? 1 : 0;
    }
  }
}

// --- conversion -------------------------------------------------------------------------

__global__ void convert_kernel(DevTensor src, int dst_dtype, void* dst) {
  const std::int64_t n = src.rows * src.cols;
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t r = i / src.cols, c = i % src.cols;
    const double v = load(src, r, c);
    switch (dst_dtype) {
      case kDevF64: static_cast<double*>(dst)[i] = v; break;
      case kDevF32: static_cast<float*>(dst)[i] = __double2float_rn(v); break;
      default: {
        // NaN stays a quiet NaN; everything else rounds once to nearest even.
        const unsigned short bits =
            isnan(v) ? static_cast<unsigned short>(0x7FC0u) : static_cast<unsigned short>(bf16_bits_of(to_float_odd(v)));
        static_cast<__nv_bfloat16*>(dst)[i] = __ushort_as_bfloat16(bits);
      }
    }
  }
}

}  // namespace

void device_tap_totals(const DevTensor& ref, const DevTensor& path, const DevTensor* truth, int path_dtype,
                       double max_finite, double atol, double rtol, DevTapTotals& out, cudaStream_t s,
                       DevTotalsProfile* profile) {
  // Stage marks for the profile (benchmarks only): events between the stages.
  cudaEvent_t marks[6] = {};
  auto mark = [&](int i) {
    if (!profile) return;
    CUDA_CHECK(cudaEventCreate(&marks[i]));
    CUDA_CHECK(cudaEventRecord(marks[i], s));
  };
  const int blocks = blocks_for(ref.rows);
  // A workspace per thread and device, kept: a run makes thousands of these calls, and
  // cudaFree synchronizes the whole device.
  struct Workspace {
    DeviceBuffer<DevTapTotals> acc{1};
    DeviceBuffer<double> partials{static_cast<std::size_t>(kMaxBlocks) * kSums};
  };
  thread_local std::map<int, Workspace> workspaces;
  int device = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  Workspace& w = workspaces[device];
  DeviceBuffer<DevTapTotals>& acc = w.acc;
  DeviceBuffer<double>& partials = w.partials;
  mark(0);
  CUDA_CHECK(cudaMemsetAsync(acc.data(), 0, sizeof(DevTapTotals), s));
  CUDA_CHECK(cudaMemsetAsync(partials.data(), 0, partials.bytes(), s));
  mark(1);
  ref_sq_kernel<<<blocks, kThreads, 0, s>>>(ref, partials.data());
  CUDA_CHECK_LAUNCH();
  floor_kernel<<<1, kThreads, 0, s>>>(partials.data(), blocks, ref.rows * ref.cols, acc.data());
  CUDA_CHECK_LAUNCH();
  mark(2);
  totals_kernel<<<blocks, kThreads, 0, s>>>(ref, path, truth ? *truth : DevTensor{}, truth != nullptr, path_dtype,
                                            max_finite, atol, rtol, partials.data(), acc.data());
  CUDA_CHECK_LAUNCH();
  mark(3);
  add_partials_kernel<<<1, kThreads, 0, s>>>(partials.data(), blocks, acc.data());
  CUDA_CHECK_LAUNCH();
  mark(4);
  CUDA_CHECK(cudaMemcpyAsync(&out, acc.data(), sizeof out, cudaMemcpyDeviceToHost, s));
  mark(5);
  CUDA_CHECK(cudaStreamSynchronize(s));
  if (profile) {
    float* fields[5] = {&profile->memset_ms, &profile->ref_sq_ms, &profile->totals_ms, &profile->add_ms, &profile->copy_ms};
    for (int i = 0; i < 5; ++i) CUDA_CHECK(cudaEventElapsedTime(fields[i], marks[i], marks[i + 1]));
    for (cudaEvent_t e : marks) CUDA_CHECK(cudaEventDestroy(e));
  }
}

void device_next_token_rows(const DevTensor& ref, const DevTensor& path, double* kl, double* margin,
                            int* top1_match, cudaStream_t s) {
  const auto rows = static_cast<std::size_t>(ref.rows);
  if (rows == 0) return;
  DeviceBuffer<double> d_kl(rows), d_margin(rows);
  DeviceBuffer<int> d_match(rows);
  next_token_kernel<<<blocks_for(ref.rows), kRowThreads, 0, s>>>(ref, path, d_kl.data(), d_margin.data(),
                                                                 d_match.data());
  CUDA_CHECK_LAUNCH();
  CUDA_CHECK(cudaMemcpyAsync(kl, d_kl.data(), rows * sizeof(double), cudaMemcpyDeviceToHost, s));
  CUDA_CHECK(cudaMemcpyAsync(margin, d_margin.data(), rows * sizeof(double), cudaMemcpyDeviceToHost, s));
  CUDA_CHECK(cudaMemcpyAsync(top1_match, d_match.data(), rows * sizeof(int), cudaMemcpyDeviceToHost, s));
  CUDA_CHECK(cudaStreamSynchronize(s));
}

void convert_rows(const DevTensor& src, int dst_dtype, void* dst, cudaStream_t s) {
  const std::int64_t n = src.rows * src.cols;
  if (n == 0) return;
  const int blocks = static_cast<int>(std::min<std::int64_t>((n + kThreads - 1) / kThreads, 4096));
  convert_kernel<<<blocks, kThreads, 0, s>>>(src, dst_dtype, dst);
  CUDA_CHECK_LAUNCH();
}

}  // namespace fusecheck::cuda
