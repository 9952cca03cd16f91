// The device kernels of the fp8-w8a8 GEMMs (see w8a8.h): per-row E4M3 quantization and the
// dequantizing epilogue in the twin's operation order.
#include "kernels/fused/w8a8.h"

#include <climits>
#include <cstdint>
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

// The row's scale from each thread's amax and finiteness (every thread of the block calls it;
// every thread gets s): max(amax / 448, floor) with IEEE FP32 division, as the twin's
// std::max(amax / kE4m3Max, kFp8MinRowScale). A NaN scale for a row holding NaN or Inf
// turns its outputs NaN: a missed check() still cannot look finite.
__device__ __forceinline__ float row_scale(float amax, int non_finite, int row, float* scales, int* bad_row) {
  __shared__ float warp_amax[kQuantThreads / 32];
  amax = warp_max(amax);
  if ((threadIdx.x & 31) == 0) warp_amax[threadIdx.x >> 5] = amax;
  const int bad = __syncthreads_or(non_finite);  // also orders the shared writes
  amax = 0.0f;
  for (int w = 0; w < static_cast<int>(blockDim.x >> 5); ++w) amax = fmaxf(amax, warp_amax[w]);
  const float s = bad ? __int_as_float(0x7fffffff) : fmaxf(amax / 448.0f, kW8a8MinRowScale);
  if (threadIdx.x == 0) {
    scales[row] = s;
    if (bad) atomicMin(bad_row, row);
  }
  return s;
}

// One block per row, any width: amax, scale, then each code __nv_fp8_e4m3(x / s) (IEEE
// division, round to nearest even, saturating: __NV_SATFINITE, as harness/core/fp8.h).
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
  const float s = row_scale(amax, non_finite, row, scales, bad_row);
  __nv_fp8_e4m3* out = codes + static_cast<long>(row) * cols;
  for (int j = threadIdx.x; j < cols; j += blockDim.x) out[j] = __nv_fp8_e4m3(as_float(x[j]) / s);
}

// The same arithmetic for bf16 rows of 8k values (every GEMM input of the recipe): 16-byte
// loads, the row held in registers between the amax and the codes (one read of global
// memory; a decode row is latency-bound), eight codes stored as one 8-byte write.
constexpr int kChunksPerThread = 8;  // rows up to kQuantThreads * 8 * 8 = 16384 values
__global__ void __launch_bounds__(kQuantThreads)
    quantize_rows_bf16x8_kernel(const bf16* in, int cols, __nv_fp8_e4m3* codes, float* scales, int* bad_row) {
  const int row = blockIdx.x, chunks = cols / 8;
  const bf16* x = in + static_cast<long>(row) * cols;
  float v[kChunksPerThread][8];
  float amax = 0.0f;
  int non_finite = 0;
#pragma unroll
  for (int c = 0; c < kChunksPerThread; ++c) {
    const int chunk = threadIdx.x + c * blockDim.x;
    if (chunk < chunks) {
      to_float8(load8(x + 8 * chunk), v[c]);
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        non_finite |= !isfinite(v[c][i]);
        amax = fmaxf(amax, fabsf(v[c][i]));
      }
    }
  }
  const float s = row_scale(amax, non_finite, row, scales, bad_row);
  __nv_fp8_e4m3* out = codes + static_cast<long>(row) * cols;
#pragma unroll
  for (int c = 0; c < kChunksPerThread; ++c) {
    const int chunk = threadIdx.x + c * blockDim.x;
    if (chunk < chunks) {
      uint2 word;
      unsigned char* packed = reinterpret_cast<unsigned char*>(&word);
#pragma unroll
      for (int i = 0; i < 8; ++i) packed[i] = __nv_fp8_e4m3(v[c][i] / s).__x;
      *reinterpret_cast<uint2*>(out + 8 * chunk) = word;
    }
  }
}

int quant_threads(int work_items) {
  return work_items >= kQuantThreads ? kQuantThreads : ((work_items + 31) / 32) * 32;
}

void check_rows(int rows, int cols) {
  if (rows <= 0 || cols <= 0) {
    throw std::invalid_argument("quantize_rows_e4m3: rows and cols must be positive (got " + std::to_string(rows) +
                                " x " + std::to_string(cols) + ")");
  }
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
  check_rows(rows, cols);
  const bool vector = cols % 8 == 0 && cols / 8 <= kQuantThreads * kChunksPerThread &&
                      reinterpret_cast<std::uintptr_t>(in) % 16 == 0 && reinterpret_cast<std::uintptr_t>(codes) % 8 == 0;
  if (vector) {
    quantize_rows_bf16x8_kernel<<<rows, quant_threads(cols / 8), 0, stream>>>(in, cols, codes, scales, bad_row);
  } else {
    quantize_rows_kernel<bf16><<<rows, quant_threads(cols), 0, stream>>>(in, cols, codes, scales, bad_row);
  }
  CUDA_CHECK_LAUNCH();
}

void launch_quantize_rows_e4m3(const float* in, int rows, int cols, __nv_fp8_e4m3* codes, float* scales,
                               int* bad_row, cudaStream_t stream) {
  check_rows(rows, cols);
  quantize_rows_kernel<float><<<rows, quant_threads(cols), 0, stream>>>(in, cols, codes, scales, bad_row);
  CUDA_CHECK_LAUNCH();
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
