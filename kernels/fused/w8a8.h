// The FP8 GEMMs of the fp8-w8a8 recipe (docs/recipes.md, "fp8-w8a8") on sm_89+ (measured
// on sm_90): per-row E4M3 quantization on the device (activations per token at every call,
// weights per output channel once at load), bit for bit the codes and scales of the
// emulated twin (reference/w8a8.h: s = max(amax / 448, 1 / (448 * 512)) in FP32, code
// e4m3(x / s) with IEEE division, round to nearest even, saturating: __nv_fp8_e4m3's
// conversion), and the GEMM on cuBLASLt FP8 (E4M3 x E4M3, FP32 accumulation):
//   twin order (Fp8Gemm::run):   acc = A8 . W8^T in FP32 with unit scales (cuBLASLt, D FP32),
//                                then one epilogue kernel y = a_s[m] * (w_s[n] * acc)
//                                [+ bias[n]] in FP32 and the output rounding (bf16 RNE, or
//                                none for an FP32 output). Only the FP32 summation order of
//                                acc differs from the twin.
//   cuBLASLt scaling (run_outer_scaled): CUBLASLT_MATMUL_MATRIX_SCALE_OUTER_VEC_32F (cuBLAS
//                                12.9+), per-row / per-column scales applied inside cuBLASLt,
//                                bf16 output; cuBLASLt does not document its multiplication
//                                order (tests and bench_w8a8 measure it against the twin's).
// cuBLASLt FP8 layout rules, refused with a clear error before any launch: the "TN" form only
// (both operands K-major, as stored here), K a multiple of 16, N a multiple of 16 (the
// output's leading dimension), every pointer 16-byte aligned. Not yet wired into FusedLayer /
// fused-cuda (issue 17 follow-up): a standalone kernel set with its own tests and benchmark.
#pragma once

#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <cmath>
#include <map>
#include <string>
#include <tuple>

#include "kernels/common/device_buffer.h"

namespace fusecheck::fused {

// vLLM's floor on a dynamic row scale (reference/w8a8.h, kFp8MinRowScale): 1 / (448 * 512).
inline constexpr float kW8a8MinRowScale = 1.0f / (448.0f * 512.0f);

// Writes codes [rows x cols] = e4m3(in / s_row) and scales[rows] = s_row.
// A row holding NaN or Inf gets a NaN scale (its outputs turn NaN, never silently finite)
// and its index is recorded in *bad_row (atomicMin; the caller sets it to INT_MAX first,
// see Fp8RowCheck). Any cols >= 1; no alignment needed.
void launch_quantize_rows_e4m3(const __nv_bfloat16* in, int rows, int cols, __nv_fp8_e4m3* codes,
                               float* scales, int* bad_row, cudaStream_t stream);
void launch_quantize_rows_e4m3(const float* in, int rows, int cols, __nv_fp8_e4m3* codes, float* scales,
                               int* bad_row, cudaStream_t stream);

// The device flag of the row quantization: arm() before the launches it should watch, then
// check() (synchronizes `stream`) throws InputError naming `what` and the first bad row.
// Activations are quantized at every call; a caller checks when it synchronizes anyway.
class Fp8RowCheck {
 public:
  Fp8RowCheck();
  void arm(cudaStream_t stream);
  int* flag() { return flag_.data(); }
  void check(const std::string& what, cudaStream_t stream) const;

 private:
  cuda::DeviceBuffer<int> flag_;
};

// A weight [n x k] (output channels x inputs, as stored) in E4M3 with one scale per
// output channel, quantized once at load.
struct Fp8Weight {
  int n = 0, k = 0;
  int ld = 0;  // row stride of codes: 0 or k, or k rounded up to 16 with zero codes (pad_fp8_weight_rows)
  cuda::DeviceBuffer<__nv_fp8_e4m3> codes;  // [n x stride()] row-major
  cuda::DeviceBuffer<float> scales;         // [n]
  int stride() const { return ld > 0 ? ld : k; }
};
// Quantizes `w` (device, bf16 [n x k]); synchronizes `stream` and throws InputError naming
// `what` and the channel when a row holds NaN or Inf.
Fp8Weight quantize_weight_e4m3(const __nv_bfloat16* w, int n, int k, const std::string& what, cudaStream_t stream);

// y[m, n] = a_s[m] * (w_s[n] * acc[m, n]) [+ bias[n]] in FP32 (no contraction), then bf16
// RNE (y_fp32 false) or stored as is. acc, y: [M x N] row-major; bias bf16 [N] or null.
void launch_w8a8_epilogue(const float* acc, const float* a_scales, const float* w_scales,
                          const __nv_bfloat16* bias, int M, int N, void* y, bool y_fp32, cudaStream_t stream);

// InputError (naming the shape or pointer) unless M, N, K > 0, K % 16 == 0, N % 16 == 0 and
// each pointer given is 16-byte aligned: cuBLASLt's FP8 requirements. Host only.
void check_fp8_gemm_layout(int M, int N, int K, const void* a, const void* w, const void* out);

// The bound an FP8 GEMM output y[m, n] is held to against the double reference scale * exact
// (scale = a_s[m] * w_s[n]; exact = the exact sum of the E4M3 products, abs_sum = the sum of
// their magnitudes): FP32 summation of K terms in any order, tree or split (gamma_K abs_sum,
// gamma_K = K u / (1 - K u), u = 2^-24), two epilogue roundings (2.01 u relative) and, for a
// bf16 output, one bf16 ulp (2^(floor(log2 |y|) - 7)). Used by tests/fused/test_w8a8 and
// bench_w8a8's validation. Host only.
inline double w8a8_reference_tolerance(int K, double scale, double abs_sum, double exact, bool bf16_out) {
  constexpr double u = 0x1p-24;
  const double gamma = K * u / (1 - K * u);
  double tol = std::fabs(scale) * (gamma * abs_sum * (1 + 2.01 * u) + 2.01 * u * std::fabs(exact));
  if (bf16_out) {
    const double a = std::fabs(scale * exact) + tol;
    tol += a > 0 ? std::ldexp(1.0, std::ilogb(a) - 7) : 0.0;
  }
  return tol;
}

// Whether this cuBLASLt build has per-row / per-column FP32 scale vectors
// (CUBLASLT_MATMUL_MATRIX_SCALE_OUTER_VEC_32F, cuBLAS 12.9+).
bool cublaslt_has_outer_vector_scales();

// cuBLASLt FP8 GEMMs, plans cached per shape. The constructor throws InputError on a device
// below compute capability 8.9 (require_fp8_device).
class Fp8Gemm {
 public:
  Fp8Gemm();
  ~Fp8Gemm();
  Fp8Gemm(const Fp8Gemm&) = delete;
  Fp8Gemm& operator=(const Fp8Gemm&) = delete;

  // acc [M x N] FP32 = A8 [M x K] . W8 [N x K]^T, unit scales (the twin-order variant's GEMM).
  void gemm_unit_scales(const __nv_fp8_e4m3* a, const __nv_fp8_e4m3* w, int M, int N, int K, float* acc,
                        cudaStream_t stream);
  // The twin-order variant: gemm_unit_scales into `acc` (caller's [M x N] FP32 scratch),
  // then launch_w8a8_epilogue into y.
  void run(const __nv_fp8_e4m3* a, const float* a_scales, const Fp8Weight& w, int M, const __nv_bfloat16* bias,
           float* acc, void* y, bool y_fp32, cudaStream_t stream);

  // cuBLASLt's own outer-vector scaling, bf16 y [M x N]. Empty when it runs; else why not
  // (toolkit without the mode, or no algorithm on this device: cuBLASLt's status).
  std::string outer_scaled_unsupported(int M, int N, int K);
  // Throws std::runtime_error with that reason when unsupported.
  void run_outer_scaled(const __nv_fp8_e4m3* a, const float* a_scales, const Fp8Weight& w, int M,
                        __nv_bfloat16* y, cudaStream_t stream);

 private:
  struct Plan {
    cublasLtMatmulDesc_t op = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
    cublasLtMatmulAlgo_t algo{};
    bool found = false;
    std::string why_not;
  };
  using Key = std::tuple<int, int, int, bool>;  // M, N, K, outer-vector scaled
  Plan& plan(const Key& key);

  cublasLtHandle_t handle_ = nullptr;
  cuda::DeviceBuffer<unsigned char> workspace_;
  std::map<Key, Plan> plans_;
};

}  // namespace fusecheck::fused
