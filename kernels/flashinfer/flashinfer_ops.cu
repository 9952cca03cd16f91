// Norms, RoPE and SiLU-and-mul of the flashinfer-cuda path: FlashInfer 0.6.18's own host
// launchers (norm.cuh, pos_enc.cuh) and kernel (activation.cuh), called as vLLM/SGLang call
// them through FlashInfer's Python API. Attention lives in flashinfer_attention.cu (its
// template instances dominate the compile time).
#include <algorithm>
#include <exception>
#include <stdexcept>
#include <string>

#include <flashinfer/activation.cuh>
#include <flashinfer/norm.cuh>
#include <flashinfer/pos_enc.cuh>

#include "kernels/flashinfer/flashinfer_checked.h"
#include "kernels/flashinfer/flashinfer_ops.h"

namespace fusecheck::flashinfer_ops {

namespace {

// FlashInfer's silu as its Python API JIT-compiles it (flashinfer/activation.py:77-80).
__device__ __forceinline__ float silu(const float& val) { return val / (1.0f + __expf(-val)); }


template <class T>
T* mut(const T* p) { return const_cast<T*>(p); }  // FlashInfer's launchers take T* for inputs

}  // namespace

void rms_norm(const bf16* x, const bf16* w, bf16* y, int rows, int cols, float eps, cudaStream_t s) {
  checked("RMSNorm", [&] {
    return flashinfer::norm::RMSNorm<bf16>(mut(x), mut(w), y, rows, cols, cols, cols, eps, false, s);
  });
}

void fused_add_rms_norm(bf16* x, bf16* residual, const bf16* w, int rows, int cols, float eps,
                        cudaStream_t s) {
  checked("FusedAddRMSNorm", [&] {
    return flashinfer::norm::FusedAddRMSNorm<bf16>(x, residual, mut(w), rows, cols, cols, cols, eps, false, s);
  });
}

void qk_rms_norm(const bf16* x, std::size_t in_stride, const bf16* w, bf16* y, int rows, int heads,
                 int head_dim, float eps, cudaStream_t s) {
  checked("QKRMSNorm", [&] {
    return flashinfer::norm::QKRMSNorm<bf16>(mut(x), mut(w), y, rows, heads, head_dim,
                                             static_cast<std::uint32_t>(in_stride), head_dim,
                                             heads * head_dim, head_dim, eps, false, s);
  });
}

void rope_cos_sin_cache(const bf16* q, std::size_t q_stride, const bf16* k, std::size_t k_stride,
                        bf16* q_rope, bf16* k_rope, const float* cos_sin_cache, const std::int32_t* pos,
                        int rows, int n_heads, int n_kv_heads, int head_dim, bool interleaved, cudaStream_t s) {
  checked("BatchQKApplyRotaryPosIdsCosSinCache", [&] {
    return flashinfer::BatchQKApplyRotaryPosIdsCosSinCache<bf16, std::int32_t>(
        mut(q), mut(k), q_rope, k_rope, mut(cos_sin_cache), mut(pos), rows, n_heads, n_kv_heads, head_dim,
        head_dim, q_stride, head_dim, k_stride, head_dim, std::size_t(n_heads) * head_dim, head_dim,
        std::size_t(n_kv_heads) * head_dim, head_dim, interleaved, s);
  });
}

void silu_and_mul(const bf16* gate_up, bf16* out, int rows, int inter, cudaStream_t s) {
  // The launch FlashInfer's JIT source makes (flashinfer/jit/activation.py:39-58): one block per token, up to 1024
  // threads of 16-byte vectors.
  constexpr int vec = 16 / sizeof(bf16);
  const dim3 grid(rows), block(std::min(inter / vec, 1024));
  checked("act_and_mul_kernel<silu>", [&] {
    flashinfer::activation::act_and_mul_kernel<bf16, silu><<<grid, block, 0, s>>>(out, gate_up, inter);
    return cudaGetLastError();
  });
}

namespace {
__global__ void residual_add_kernel(const bf16* a, const bf16* b, bf16* out, std::size_t n) {
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < n; i += std::size_t(gridDim.x) * blockDim.x) {
    out[i] = __float2bfloat16_rn(__bfloat162float(a[i]) + __bfloat162float(b[i]));
  }
}
__global__ void broadcast_rows_kernel(const bf16* bias, bf16* y, std::size_t rows, std::size_t cols) {
  const std::size_t n = rows * cols;
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < n; i += std::size_t(gridDim.x) * blockDim.x) {
    y[i] = bias[i % cols];
  }
}
__global__ void bias_add_round_kernel(const float* acc, const bf16* bias, bf16* y, std::size_t rows, std::size_t cols) {
  const std::size_t n = rows * cols;
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < n; i += std::size_t(gridDim.x) * blockDim.x) {
    y[i] = __float2bfloat16_rn(acc[i] + __bfloat162float(bias[i % cols]));
  }
}
unsigned grid_for(std::size_t n) { return static_cast<unsigned>(std::min<std::size_t>((n + 255) / 256, 65535)); }
}  // namespace

void residual_add(const bf16* a, const bf16* b, bf16* out, std::size_t n, cudaStream_t s) {
  if (n == 0) return;
  residual_add_kernel<<<grid_for(n), 256, 0, s>>>(a, b, out, n);
  checked("residual add", [] { return cudaGetLastError(); });
}

void broadcast_rows(const bf16* bias, bf16* y, int rows, int cols, cudaStream_t s) {
  const std::size_t n = std::size_t(rows) * cols;
  if (n == 0) return;
  broadcast_rows_kernel<<<grid_for(n), 256, 0, s>>>(bias, y, rows, cols);
  checked("bias broadcast", [] { return cudaGetLastError(); });
}

void bias_add_round(const float* acc, const bf16* bias, bf16* y, int rows, int cols, cudaStream_t s) {
  const std::size_t n = std::size_t(rows) * cols;
  if (n == 0) return;
  bias_add_round_kernel<<<grid_for(n), 256, 0, s>>>(acc, bias, y, rows, cols);
  checked("bias add", [] { return cudaGetLastError(); });
}

}  // namespace fusecheck::flashinfer_ops
