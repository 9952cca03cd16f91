// Kernel 4b of the fused path: causal grouped-query attention for n new tokens per
// sequence (prefill), flash-attention style: one block per (64 query rows, head,
// sequence) walks the KV cache in tiles of 64 keys with an online softmax (running max and
// sum, FP32), never materializing the score matrix. FP32 CUDA-core arithmetic throughout
// (scores, probabilities, accumulators): no rounding until the output,
//   attn = bf16( sum_j e^(s_j - m) v_j / sum_j e^(s_j - m) ),  s_j = (q . k_j) / sqrt(D).
// Query token t of a sequence sits at position start + t and sees keys 0..start+t.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

namespace fusecheck::fused {

struct PrefillAttentionArgs {
  const __nv_bfloat16* q;        // [batch*n x n_heads*head_dim]
  const __nv_bfloat16* k_cache;  // [batch x n_kv_heads x capacity x head_dim]
  const __nv_bfloat16* v_cache;
  int batch = 1, n = 1, start = 0;
  int n_heads = 0, n_kv_heads = 0, head_dim = 0, capacity = 0;
  __nv_bfloat16* out;            // [batch*n x n_heads*head_dim]
};

void launch_prefill_attention(const PrefillAttentionArgs& args, cudaStream_t stream);

}  // namespace fusecheck::fused
