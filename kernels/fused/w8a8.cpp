// Host side of the fp8-w8a8 GEMMs (see w8a8.h): layout checks, the bad-row flag, weight
// quantization at load, and the cuBLASLt FP8 plans. Row-major Y [M x N] = A [M x K] . W^T is
// column-major Y^T [N x M] = W [K x N]^T . A^T [K x M]: cuBLASLt's A is the weight (TRANSA = T),
// its B the activations (TRANSB = N), the "TN" form FP8 requires.
#include <climits>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include <fmt/core.h>

#include "harness/core/error.h"
#include "kernels/common/cuda_check.h"
#include "kernels/fused/kv_fp8.h"
#include "kernels/fused/w8a8.h"

namespace fusecheck::fused {

namespace {

constexpr std::size_t kWorkspaceBytes = 32u << 20;

bool aligned16(const void* p) { return p == nullptr || reinterpret_cast<std::uintptr_t>(p) % 16 == 0; }

void set_attr(cublasLtMatmulDesc_t op, cublasLtMatmulDescAttributes_t attr, const void* value, std::size_t size) {
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op, attr, value, size));
}

}  // namespace

void check_fp8_gemm_layout(int M, int N, int K, const void* a, const void* w, const void* out) {
  if (M <= 0 || N <= 0 || K <= 0) {
    throw InputError("", fmt::format("fp8-w8a8 GEMM: M, N, K must be positive (got {} x {} x {})", M, N, K));
  }
  if (K % 16 != 0) {
    throw InputError("", fmt::format("fp8-w8a8 GEMM: cuBLASLt FP8 needs K a multiple of 16 (16-byte rows of E4M3); "
                                     "K = {} (M = {}, N = {})", K, M, N));
  }
  if (N % 16 != 0) {
    throw InputError("", fmt::format("fp8-w8a8 GEMM: N must be a multiple of 16 (16-byte output rows in bf16 and "
                                     "FP32); N = {} (M = {}, K = {})", N, M, K));
  }
  for (const auto& [p, name] : {std::pair{a, "activation codes"}, std::pair{w, "weight codes"}, std::pair{out, "output"}}) {
    if (!aligned16(p)) {
      throw InputError("", fmt::format("fp8-w8a8 GEMM: cuBLASLt FP8 needs 16-byte aligned pointers; the {} are at {}",
                                       name, p));
    }
  }
}

bool cublaslt_has_outer_vector_scales() {
#if CUBLAS_VERSION >= 120900
  return true;
#else
  return false;
#endif
}

Fp8RowCheck::Fp8RowCheck() : flag_(1) {}

void Fp8RowCheck::arm(cudaStream_t stream) {
  const int none = INT_MAX;
  CUDA_CHECK(cudaMemcpyAsync(flag_.data(), &none, sizeof(int), cudaMemcpyHostToDevice, stream));
  // The source is a stack variable: wait for the copy before it goes out of scope.
  CUDA_CHECK(cudaStreamSynchronize(stream));
}

void Fp8RowCheck::check(const std::string& what, cudaStream_t stream) const {
  int row = INT_MAX;
  CUDA_CHECK(cudaMemcpyAsync(&row, flag_.data(), sizeof(int), cudaMemcpyDeviceToHost, stream));
  CUDA_CHECK(cudaStreamSynchronize(stream));
  if (row != INT_MAX) {
    throw InputError("", fmt::format("fp8-w8a8: {} row {} holds NaN or Inf: an E4M3 row scale needs finite values",
                                     what, row));
  }
}

Fp8Weight quantize_weight_e4m3(const __nv_bfloat16* w, int n, int k, const std::string& what, cudaStream_t stream) {
  Fp8Weight q;
  q.n = n;
  q.k = k;
  q.ld = k;
  q.codes.resize(static_cast<std::size_t>(n) * k);
  q.scales.resize(static_cast<std::size_t>(n));
  Fp8RowCheck rows;
  rows.arm(stream);
  launch_quantize_rows_e4m3(w, n, k, q.codes.data(), q.scales.data(), rows.flag(), stream);
  rows.check(what + " (output channel)", stream);
  return q;
}

Fp8Gemm::Fp8Gemm() : workspace_(kWorkspaceBytes) {
  int device = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  require_fp8_device(device);
  CUBLAS_CHECK(cublasLtCreate(&handle_));
}

Fp8Gemm::~Fp8Gemm() {
  for (auto& [key, p] : plans_) {
    cublasLtMatrixLayoutDestroy(p.a);
    cublasLtMatrixLayoutDestroy(p.b);
    cublasLtMatrixLayoutDestroy(p.d);
    cublasLtMatmulDescDestroy(p.op);
  }
  if (handle_) cublasLtDestroy(handle_);
}

Fp8Gemm::Plan& Fp8Gemm::plan(const Key& key) {
  auto it = plans_.find(key);
  if (it != plans_.end()) return it->second;
  const auto [M, N, K, outer] = key;
  Plan p;
  CUBLAS_CHECK(cublasLtMatmulDescCreate(&p.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t transa = CUBLAS_OP_T, transb = CUBLAS_OP_N;
  set_attr(p.op, CUBLASLT_MATMUL_DESC_TRANSA, &transa, sizeof(transa));
  set_attr(p.op, CUBLASLT_MATMUL_DESC_TRANSB, &transb, sizeof(transb));
  // Hopper's split accumulator (partial sums promoted to FP32 registers), not the fast mode
  // that keeps them in the tensor core's narrower accumulator.
  const std::int8_t fast_accum = 0;
  set_attr(p.op, CUBLASLT_MATMUL_DESC_FAST_ACCUM, &fast_accum, sizeof(fast_accum));
  if (outer) {
#if CUBLAS_VERSION >= 120900
    const std::int32_t mode = CUBLASLT_MATMUL_MATRIX_SCALE_OUTER_VEC_32F;
    set_attr(p.op, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &mode, sizeof(mode));
    set_attr(p.op, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &mode, sizeof(mode));
#endif
  }
  const cudaDataType_t dt = outer ? CUDA_R_16BF : CUDA_R_32F;
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.a, CUDA_R_8F_E4M3, K, N, K));
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.b, CUDA_R_8F_E4M3, K, M, K));
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.d, dt, N, M, N));

  cublasLtMatmulPreference_t pref = nullptr;
  CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  const std::size_t ws = kWorkspaceBytes;
  CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(handle_, p.op, p.a, p.b, p.d, p.d, pref, 1, &result, &found);
  cublasLtMatmulPreferenceDestroy(pref);
  if (st == CUBLAS_STATUS_SUCCESS && found > 0) {
    p.algo = result.algo;
    p.found = true;
  } else {
    p.why_not = fmt::format("cuBLASLt has no FP8 algorithm for M={} N={} K={} ({}) on this device: {}", M, N, K,
                            outer ? "outer-vector scales, bf16 D" : "unit scales, FP32 D", st == CUBLAS_STATUS_SUCCESS ? "heuristic found none" : cublasGetStatusName(st));
  }
  return plans_.emplace(key, p).first->second;
}

void Fp8Gemm::gemm_unit_scales(const __nv_fp8_e4m3* a, const __nv_fp8_e4m3* w, int M, int N, int K, float* acc,
                               cudaStream_t stream) {
  check_fp8_gemm_layout(M, N, K, a, w, acc);
  Plan& p = plan({M, N, K, false});
  if (!p.found) throw std::runtime_error(p.why_not);
  const float alpha = 1.f, beta = 0.f;
  CUBLAS_CHECK(cublasLtMatmul(handle_, p.op, &alpha, w, p.a, a, p.b, &beta, acc, p.d, acc, p.d, &p.algo,
                              workspace_.data(), workspace_.bytes(), stream));
}

void Fp8Gemm::run(const __nv_fp8_e4m3* a, const float* a_scales, const Fp8Weight& w, int M,
                  const __nv_bfloat16* bias, float* acc, void* y, bool y_fp32, cudaStream_t stream) {
  check_fp8_gemm_layout(M, w.n, w.k, a, w.codes.data(), y);
  if (w.stride() != w.k) throw std::invalid_argument("fp8-w8a8 GEMM: a weight padded for the GEMV kernels (ld != k)");
  gemm_unit_scales(a, w.codes.data(), M, w.n, w.k, acc, stream);
  launch_w8a8_epilogue(acc, a_scales, w.scales.data(), bias, M, w.n, y, y_fp32, stream);
}

std::string Fp8Gemm::outer_scaled_unsupported(int M, int N, int K) {
  if (!cublaslt_has_outer_vector_scales()) {
    return fmt::format("this cuBLAS ({}) predates CUBLASLT_MATMUL_MATRIX_SCALE_OUTER_VEC_32F (12.9)", CUBLAS_VERSION);
  }
  return plan({M, N, K, true}).why_not;
}

void Fp8Gemm::run_outer_scaled(const __nv_fp8_e4m3* a, const float* a_scales, const Fp8Weight& w, int M,
                               __nv_bfloat16* y, cudaStream_t stream) {
  check_fp8_gemm_layout(M, w.n, w.k, a, w.codes.data(), y);
  const std::string why_not = outer_scaled_unsupported(M, w.n, w.k);
  if (!why_not.empty()) throw std::runtime_error("fp8-w8a8 GEMM with cuBLASLt scales: " + why_not);
  Plan& p = plan({M, w.n, w.k, true});
  // cuBLASLt's A is the weight: its M-vector is the per-channel scale, its N-vector the
  // per-token one.
  const float* a_scale_ptr = w.scales.data();
  const float* b_scale_ptr = a_scales;
  set_attr(p.op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &a_scale_ptr, sizeof(a_scale_ptr));
  set_attr(p.op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &b_scale_ptr, sizeof(b_scale_ptr));
  const float alpha = 1.f, beta = 0.f;
  CUBLAS_CHECK(cublasLtMatmul(handle_, p.op, &alpha, w.codes.data(), p.a, a, p.b, &beta, y, p.d, y, p.d, &p.algo,
                              workspace_.data(), workspace_.bytes(), stream));
}

}  // namespace fusecheck::fused
