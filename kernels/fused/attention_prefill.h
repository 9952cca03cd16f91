// Kernel 4b of the fused path: causal grouped-query attention for n new tokens per
// sequence (prefill), flash-attention style: one block per (64 query rows, head,
// sequence) walks the KV cache in tiles of 64 keys with an online softmax (running max and
// sum, FP32), never materializing the score matrix. No rounding until the output,
//   attn = bf16( sum_j e^(s_j - m) v_j / sum_j e^(s_j - m) ),  s_j = (q . k_j) * (1/sqrt(D)),
// with expf on the FP32 scaled score. Query token t of a sequence sits at position
// start + t and sees keys 0..start+t.
// Two kernels, one contract: head_dim 64 and 128 (16-byte aligned buffers) run on tensor
// cores (attention_prefill_tc.cu: bf16 mma, FP32 accumulation, P split exactly into bf16
// parts); any other head_dim runs the FP32 CUDA-core kernel (attention_prefill.cu).
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

// The tensor-core route alone: launches and returns true for the shapes it supports,
// returns false (launching nothing) otherwise. Arguments already validated.
bool launch_prefill_attention_tc(const PrefillAttentionArgs& args, cudaStream_t stream);

// Number of bf16 parts P is split into for P V on the tensor cores: 3 (default; the
// product is exact, fused-v1 up to summation order) or 2 (hi + lo: |P - hi - lo| <=
// 2^-16 P, a measured alternative). The environment variable FUSECHECK_PREFILL_PV_SPLIT=2
// selects 2 at start-up so a benchmark can time both; throws std::invalid_argument
// for anything but 2 or 3. Not thread-safe against concurrent launches.
void set_prefill_attention_pv_split(int parts);
int prefill_attention_pv_split();

}  // namespace fusecheck::fused
