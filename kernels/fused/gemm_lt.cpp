// cuBLASLt GEMM with fused bias / residual epilogue (see gemm_lt.h). Row-major Y = X W^T is
// computed as column-major Y^T [N x M] = W [K x N]^T . X^T [K x M].
#include "kernels/fused/gemm_lt.h"

#include <cstdint>
#include <stdexcept>
#include <string>

#include "kernels/common/cuda_check.h"

namespace fusecheck::fused {

namespace {
constexpr std::size_t kWorkspaceBytes = 32u << 20;
}

LtGemm::LtGemm() : workspace_(kWorkspaceBytes) { CUBLAS_CHECK(cublasLtCreate(&handle_)); }

LtGemm::~LtGemm() {
  for (auto& [key, p] : plans_) {
    cublasLtMatrixLayoutDestroy(p.a);
    cublasLtMatrixLayoutDestroy(p.b);
    cublasLtMatrixLayoutDestroy(p.c);
    cublasLtMatmulDescDestroy(p.op);
  }
  if (handle_) cublasLtDestroy(handle_);
}

LtGemm::Plan& LtGemm::plan(const Key& key) {
  auto it = plans_.find(key);
  if (it != plans_.end()) return it->second;
  const auto [M, N, K, y_fp32, has_bias, has_residual, fixed_rows, split_k] = key;
  Plan p;
  CUBLAS_CHECK(cublasLtMatmulDescCreate(&p.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t transa = CUBLAS_OP_T, transb = CUBLAS_OP_N;
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSA, &transa, sizeof(transa)));
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSB, &transb, sizeof(transb)));
  if (has_bias) {
    const cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
    const cudaDataType_t bias_type = CUDA_R_16BF;
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi)));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type,
                                                sizeof(bias_type)));
  }
  const cudaDataType_t yt = y_fp32 ? CUDA_R_32F : CUDA_R_16BF;
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.a, CUDA_R_16BF, K, N, K));
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.b, CUDA_R_16BF, K, M, K));
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.c, yt, N, M, N));

  if (fixed_rows <= 0) {
    p.algo = heuristic(key, p.op, p.a, M, true);
  } else {
    Key fixed = key;
    std::get<0>(fixed) = 0;
    auto it_algo = fixed_algos_.find(fixed);
    if (it_algo == fixed_algos_.end())
      it_algo = fixed_algos_.emplace(fixed, heuristic(key, p.op, p.a, fixed_rows, split_k)).first;
    p.algo = it_algo->second;
    // The fixed algorithm must run at this M as it is (no fallback: another algorithm
    // would give other sums).
    cublasLtMatmulHeuristicResult_t check{};
    const cublasStatus_t st = cublasLtMatmulAlgoCheck(handle_, p.op, p.a, p.b, p.c, p.c, &p.algo, &check);
    if (st != CUBLAS_STATUS_SUCCESS || check.workspaceSize > kWorkspaceBytes)
      throw std::runtime_error("cuBLASLt: the algorithm fixed at M=" + std::to_string(fixed_rows) +
                               " does not run bf16 GEMM M=" + std::to_string(M) + " N=" +
                               std::to_string(N) + " K=" + std::to_string(K));
  }
  return plans_.emplace(key, p).first->second;
}

cublasLtMatmulAlgo_t LtGemm::heuristic(const Key& key, cublasLtMatmulDesc_t op,
                                       cublasLtMatrixLayout_t a, int rows, bool split_k) {
  const int N = std::get<1>(key), K = std::get<2>(key);
  const cudaDataType_t yt = std::get<3>(key) ? CUDA_R_32F : CUDA_R_16BF;
  cublasLtMatrixLayout_t b = nullptr, c = nullptr;
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&b, CUDA_R_16BF, K, rows, K));
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&c, yt, N, rows, N));
  cublasLtMatmulPreference_t pref = nullptr;
  CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  const std::size_t ws = kWorkspaceBytes;
  CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                    &ws, sizeof(ws)));
  if (!split_k) {  // the way cuBLASLt documents to exclude split-K: no reduction scheme
    const std::uint32_t none = CUBLASLT_REDUCTION_SCHEME_NONE;
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK,
                                                      &none, sizeof(none)));
  }
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  const cublasStatus_t st =
      cublasLtMatmulAlgoGetHeuristic(handle_, op, a, b, c, c, pref, 1, &result, &found);
  cublasLtMatmulPreferenceDestroy(pref);
  cublasLtMatrixLayoutDestroy(b);
  cublasLtMatrixLayoutDestroy(c);
  if (st != CUBLAS_STATUS_SUCCESS || found == 0)
    throw std::runtime_error("cuBLASLt: no algorithm for bf16 GEMM M=" + std::to_string(rows) +
                             " N=" + std::to_string(N) + " K=" + std::to_string(K));
  return result.algo;
}

void LtGemm::run(const __nv_bfloat16* X, const __nv_bfloat16* W, int M, int N, int K, void* Y,
                 bool y_fp32, const __nv_bfloat16* bias, const __nv_bfloat16* residual,
                 cudaStream_t stream, AlgoChoice choice) {
  if (M <= 0) return;
  if (residual && y_fp32) throw std::invalid_argument("LtGemm: residual needs a bf16 output");
  const bool fixed = choice.rows > 0;
  Plan& p = plan({M, N, K, y_fp32, bias != nullptr, residual != nullptr, fixed ? choice.rows : 0,
                  fixed && choice.split_k});
  if (bias)
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias,
                                                sizeof(bias)));
  const float alpha = 1.f, beta = residual ? 1.f : 0.f;
  const void* C = residual ? static_cast<const void*>(residual) : Y;
  CUBLAS_CHECK(cublasLtMatmul(handle_, p.op, &alpha, W, p.a, X, p.b, &beta, C, p.c, Y, p.c,
                              &p.algo, workspace_.data(), workspace_.bytes(), stream));
}

}  // namespace fusecheck::fused
