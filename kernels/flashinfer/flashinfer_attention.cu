// Attention of the flashinfer-cuda path: FlashInfer 0.6.18's single-request decode
// (decode.cuh) and causal prefill (prefill.cuh) with its DefaultAttention variant, bf16
// Q/K/V/O, NHD layout, no RoPE inside the kernel (q and k arrive rotated). Only head dims
// 64 and 128 are instantiated (the shapes of the CI, test and profile models); GQA group
// sizes are FlashInfer's own list (decode's DISPATCH_GQA_GROUP_SIZE: 1, 2, 3, 4, 6, 8).
#include <algorithm>
#include <exception>
#include <stdexcept>
#include <string>

#include <flashinfer/attention/decode.cuh>
#include <flashinfer/attention/default_decode_params.cuh>
#include <flashinfer/attention/default_prefill_params.cuh>
#include <flashinfer/attention/prefill.cuh>
#include <flashinfer/attention/variants.cuh>

#include "kernels/flashinfer/flashinfer_ops.h"

namespace fusecheck::flashinfer_ops {

namespace {

using Variant = flashinfer::DefaultAttention</*custom_mask=*/false, /*sliding_window=*/false,
                                             /*logits_soft_cap=*/false, /*alibi=*/false>;
using DecodeParams = flashinfer::SingleDecodeParams<bf16, bf16, bf16>;
using PrefillParams = flashinfer::SinglePrefillParams<bf16, bf16, bf16>;
// FlashInfer's chunk size never goes below 256 keys (decode.cuh:714, prefill.cuh:2673).
constexpr int kMinChunk = 256;

template <int D>
cudaError_t decode(const AttentionArgs& a, bf16* tmp, cudaStream_t s) {
  DecodeParams p(const_cast<bf16*>(a.q), const_cast<bf16*>(a.k), const_cast<bf16*>(a.v), a.out,
                 /*maybe_alibi_slopes=*/nullptr, a.kv_len, a.n_heads, a.n_kv_heads, flashinfer::QKVLayout::kNHD,
                 D, /*window_left=*/-1, /*logits_soft_cap=*/0.0f, a.sm_scale, /*rope_scale=*/1.0f,
                 /*rope_theta=*/1e4f);
  return flashinfer::SingleDecodeWithKVCacheDispatched<D, flashinfer::PosEncodingMode::kNone, Variant>(p, tmp, s);
}

template <int D>
cudaError_t prefill(const AttentionArgs& a, bf16* tmp, cudaStream_t s) {
  const std::uint32_t q_row = a.n_heads * D, kv_row = a.n_kv_heads * D;
  PrefillParams p(const_cast<bf16*>(a.q), const_cast<bf16*>(a.k), const_cast<bf16*>(a.v),
                  /*maybe_custom_mask=*/nullptr, a.out, /*lse=*/nullptr, /*maybe_alibi_slopes=*/nullptr,
                  a.n_heads, a.n_kv_heads, a.qo_len, a.kv_len, q_row, D, kv_row, D, D,
                  /*window_left=*/-1, /*logits_soft_cap=*/0.0f, a.sm_scale, /*rope_scale=*/1.0f,
                  /*rope_theta=*/1e4f);
  return flashinfer::SinglePrefillWithKVCacheDispatched<D, D, flashinfer::PosEncodingMode::kNone,
                                                        /*use_fp16_qk_reduction=*/false,
                                                        flashinfer::MaskMode::kCausal, Variant>(p, tmp, s);
}

template <int D>
cudaError_t run(const AttentionArgs& a, bf16* tmp, cudaStream_t s) {
  return a.qo_len == 1 ? decode<D>(a, tmp, s) : prefill<D>(a, tmp, s);
}

}  // namespace

bool head_dim_supported(int head_dim) { return head_dim == 64 || head_dim == 128; }

bool group_size_supported(int g) { return g == 1 || g == 2 || g == 3 || g == 4 || g == 6 || g == 8; }

std::size_t attention_workspace_elems(int qo_len, int kv_len, int n_heads, int head_dim) {
  const std::size_t chunks = static_cast<std::size_t>((kv_len + kMinChunk - 1) / kMinChunk);
  // Partial outputs [chunks][qo_len][heads][head_dim] in bf16, then their FP32 LSEs (2 bf16 each).
  return chunks * static_cast<std::size_t>(qo_len) * n_heads * (static_cast<std::size_t>(head_dim) + 2);
}

void attention(const AttentionArgs& a, bf16* workspace, cudaStream_t s) {
  if (a.qo_len < 1 || a.kv_len < a.qo_len || a.n_kv_heads < 1 || a.n_heads % a.n_kv_heads != 0 ||
      !group_size_supported(a.n_heads / a.n_kv_heads) || !head_dim_supported(a.head_dim)) {
    throw std::invalid_argument("FlashInfer attention: unsupported shape qo_len " + std::to_string(a.qo_len) +
                                ", kv_len " + std::to_string(a.kv_len) + ", heads " + std::to_string(a.n_heads) +
                                "/" + std::to_string(a.n_kv_heads) + ", head_dim " + std::to_string(a.head_dim));
  }
  cudaError_t status;
  try {
    status = a.head_dim == 64 ? run<64>(a, workspace, s) : run<128>(a, workspace, s);
  } catch (const std::exception& e) {
    throw std::runtime_error(std::string("FlashInfer attention: ") + e.what());
  }
  if (status == cudaSuccess) status = cudaGetLastError();
  if (status != cudaSuccess) {
    throw std::runtime_error(std::string(a.qo_len == 1 ? "FlashInfer SingleDecodeWithKVCache: "
                                                       : "FlashInfer SinglePrefillWithKVCache: ") +
                             cudaGetErrorString(status));
  }
}

}  // namespace fusecheck::flashinfer_ops
