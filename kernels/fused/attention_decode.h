// Kernel 4a of the fused path: decode attention (one new query token per sequence) over
// the KV cache, split-KV ("flash-decoding"). The cache is cut into chunks of `chunk`
// positions; one block per (chunk, kv head, group of up to 8 query heads, sequence) serves
// those query heads of its GQA group (K/V read once per block) with 4 warps, each streaming
// its own positions straight from global memory (16-byte loads, the next step's loads in
// flight during this step's arithmetic) with an FP32 online softmax; the warps merge in a
// fixed order. With one chunk the block writes attn itself; otherwise it writes FP32
// partials (unnormalized output, max, sum of exponentials), merged in chunk index order
// and rounded once: for a grid of about one wave (batch 1) by the last block of its
// (kv head, head group, sequence) to arrive on an integer counter (which block merges
// depends on timing, the order of the sums never does), otherwise by a combine kernel:
//   attn = bf16( sum_s e^(m_s-M) acc_s / sum_s e^(m_s-M) l_s ).
// Scores, softmax statistics, probabilities and accumulators are FP32 throughout. The
// chunk is the smallest power-of-two multiple of kDecodeMinChunk for which the blocks
// number at most 1024 (batch 1: many small chunks to fill the GPU; batch 64: few partials
// to write); it depends only on the shape (batch, heads, kv_len), so two runs on the same
// shape give bitwise-identical outputs.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>

namespace fusecheck::fused {

inline constexpr int kDecodeMinChunk = 32;

struct DecodeAttentionArgs {
  const __nv_bfloat16* q;        // [batch x n_heads*head_dim] (rope applied)
  const __nv_bfloat16* k_cache;  // [batch x n_kv_heads x capacity x head_dim]
  const __nv_bfloat16* v_cache;
  int batch = 1, n_heads = 0, n_kv_heads = 0, head_dim = 0, capacity = 0;
  int kv_len = 0;                // positions 0..kv_len-1 are attended
  float* partial_acc;            // [batch x n_heads x decode_attention_splits x head_dim] scratch
  float* partial_ml;             // [batch x n_heads x decode_attention_splits x 2] scratch
  unsigned int* counters = nullptr;  // [decode_attention_counters]: zero before the first launch;
                                    // every launch leaves them zero (graph replays need no reset)
  __nv_bfloat16* out;            // [batch x n_heads*head_dim]
};

// The most chunks a launch can use (the partials' stride per head); fewer are used when
// the batch is large.
inline int decode_attention_splits(int kv_len) {
  return (kv_len + kDecodeMinChunk - 1) / kDecodeMinChunk;
}
// Scratch floats needed by launch_decode_attention (acc and ml together).
std::size_t decode_attention_scratch_floats(int batch, int n_heads, int head_dim, int kv_len);

// Arrival counters needed by launch_decode_attention (zero them once, e.g. cudaMemset).
std::size_t decode_attention_counters(int batch, int n_heads);

void launch_decode_attention(const DecodeAttentionArgs& args, cudaStream_t stream);

}  // namespace fusecheck::fused
