// The device kernels of the fp8-w8a8 GEMMs (see w8a8.h): per-row E4M3 quantization and the
// dequantizing epilogue in the twin's operation order.
#include "kernels/fused/w8a8.h"

#include <climits>
#include <stdexcept>
#include <string>

#include "kernels/common/cuda_check.h"
#include "kernels/fused/fused_common.cuh"

namespace fusecheck::fused {

namespace {

constexpr int kQuantThreads = 256;
constexpr int kEpilogueThreads = 256;

__device__ __forceinline__ float as_float(bf16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float as_float(float x) { return x; }

// One block per row: the row's amax (and whether every value is finite), the scale, then
// the codes. The scale is max(amax / 448, floor) with IEEE FP32 division as the twin's
// std::max(amax / kE4m3Max, kFp8MinRowScale); each code is __nv_fp8_e4m3(x / s): IEEE
// division, round to nearest even, saturating (__NV_SATFINITE), as harness/core/fp8.h.
template <typename T>
__global__ void __launch_bounds__(kQuantThreads)
    quantize_rows_kernel(const T* in, int cols, __nv_fp8_e4m3* codes, float* scales, int* bad_row) {
  const int row = blockIdx.x;
  const T* x = in + static_cast<long>(row) * cols;
  float amax = 0.0f;
  int non_finite = 0;
  for (int j = threadIdx.x; j < cols; j += blockDim.x) {
    const float v = as_float(x[j]);
    non_finite |= !isfinite(v);
    amax = fmaxf(amax, fabsf(v));
  }
  __shared__ float warp_amax[kQuantThreads / 32];
  amax = warp_max(amax);
  if ((threadIdx.x & 31) == 0) warp_amax[threadIdx.x >> 5] = amax;
  const int bad = __syncthreads_or(non_finite);  // also orders the shared writes
  amax = 0.0f;
  for (int w = 0; w < static_cast<int>(blockDim.x >> 5); ++w) amax = fmaxf(amax, warp_amax[w]);
  // A NaN scale turns the row's outputs NaN: a missed check() still cannot look finite.
  const float s = bad ? __int_as_float(0x7fffffff) : fmaxf(amax / 448.0f, kW8a8MinRowScale);
  if (threadIdx.x == 0) {
    scales[row] = s;
    if (bad) atomicMin(bad_row, row);
  }
  __nv_fp8_e4m3* out = codes + static_cast<long>(row) * cols;
  for (int j = threadIdx.x; j < cols; j += blockDim.x) out[j] = __nv_fp8_e4m3(as_float(x[j]) / s);
}

template <typename T>
void launch_quantize(const T* in, int rows, int cols, __nv_fp8_e4m3* codes, float* scales, int* bad_row,
                     cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) {
    throw std::invalid_argument("quantize_rows_e4m3: rows and cols must be positive (got " + std::to_string(rows) +
                                " x " + std::to_string(cols) + ")");
  }
  const int threads = cols >= kQuantThreads ? kQuantThreads : ((cols + 31) / 32) * 32;
  quantize_rows_kernel<T><<<rows, threads, 0, stream>>>(in, cols, codes, scales, bad_row);
  CUDA_CHECK_LAUNCH();
}

// __fmul_rn / __fadd_rn: no FMA contraction, so each product and the sum round once, as the
// twin's separate FP32 operations do.
template <bool kFp32Out>
__global__ void __launch_bounds__(kEpilogueThreads)
    epilogue_kernel(const float* acc, const float* a_scales, const float* w_scales, const bf16* bias, int M, int N,
                    void* y) {
  const long count = static_cast<long>(M) * N;
  for (long i = blockIdx.x * static_cast<long>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<long>(gridDim.x) * blockDim.x) {
    const int m = static_cast<int>(i / N), n = static_cast<int>(i % N);
    float v = __fmul_rn(a_scales[m], __fmul_rn(w_scales[n], acc[i]));
    if (bias) v = __fadd_rn(v, __bfloat162float(bias[n]));
    if constexpr (kFp32Out) {
      static_cast<float*>(y)[i] = v;
    } else {
      static_cast<bf16*>(y)[i] = round_bf16(v);
    }
  }
}

}  // namespace

void launch_quantize_rows_e4m3(const bf16* in, int rows, int cols, __nv_fp8_e4m3* codes, float* scales,
                               int* bad_row, cudaStream_t stream) {
  launch_quantize(in, rows, cols, codes, scales, bad_row, stream);
}

void launch_quantize_rows_e4m3(const float* in, int rows, int cols, __nv_fp8_e4m3* codes, float* scales,
                               int* bad_row, cudaStream_t stream) {
  launch_quantize(in, rows, cols, codes, scales, bad_row, stream);
}

void launch_w8a8_epilogue(const float* acc, const float* a_scales, const float* w_scales, const bf16* bias, int M,
                          int N, void* y, bool y_fp32, cudaStream_t stream) {
  if (M <= 0 || N <= 0) throw std::invalid_argument("w8a8 epilogue: M and N must be positive");
  const long count = static_cast<long>(M) * N;
  const int blocks = static_cast<int>(std::min<long>((count + kEpilogueThreads - 1) / kEpilogueThreads, 8192));
  if (y_fp32) {
    epilogue_kernel<true><<<blocks, kEpilogueThreads, 0, stream>>>(acc, a_scales, w_scales, bias, M, N, y);
  } else {
    epilogue_kernel<false><<<blocks, kEpilogueThreads, 0, stream>>>(acc, a_scales, w_scales, bias, M, N, y);
  }
  CUDA_CHECK_LAUNCH();
}

}  // namespace fusecheck::fused
