// Kernel 4a of the fused path: decode attention (one new query token per sequence) over
// the KV cache, split-KV ("flash-decoding"). The cache is cut into fixed chunks of
// kDecodeChunk positions; one block per (chunk, kv head, sequence) serves every query
// head of its group (GQA: K/V read once) and writes FP32 partials (unnormalized output,
// running max, sum of exponentials). A combine kernel merges the chunks in fixed order
// and rounds once:  attn = bf16( sum_s e^(m_s-M) acc_s / sum_s e^(m_s-M) l_s ).
// Scores, softmax statistics, probabilities and accumulators are FP32 throughout; the
// chunking depends only on kv_len, so two runs give bitwise-identical outputs.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>

namespace fusecheck::fused {

inline constexpr int kDecodeChunk = 64;

struct DecodeAttentionArgs {
  const __nv_bfloat16* q;        // [batch x n_heads*head_dim] (rope applied)
  const __nv_bfloat16* k_cache;  // [batch x n_kv_heads x capacity x head_dim]
  const __nv_bfloat16* v_cache;
  int batch = 1, n_heads = 0, n_kv_heads = 0, head_dim = 0, capacity = 0;
  int kv_len = 0;                // positions 0..kv_len-1 are attended
  float* partial_acc;            // [batch x n_heads x splits x head_dim] scratch
  float* partial_ml;             // [batch x n_heads x splits x 2] scratch
  __nv_bfloat16* out;            // [batch x n_heads*head_dim]
};

inline int decode_attention_splits(int kv_len) { return (kv_len + kDecodeChunk - 1) / kDecodeChunk; }
// Scratch floats needed by launch_decode_attention (acc and ml together).
std::size_t decode_attention_scratch_floats(int batch, int n_heads, int head_dim, int kv_len);

void launch_decode_attention(const DecodeAttentionArgs& args, cudaStream_t stream);

}  // namespace fusecheck::fused
