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
// Batch-invariant plan (fixed_chunk > 0, the fused-cuda:batch-invariant path): chunks of
// fixed_chunk positions at fixed absolute positions (0, C, 2C, ...), whatever the batch,
// so a sequence's output depends only on its own q, K, V and kv_len: the same sums in the
// same order at any batch size. Where the chunks merge (the split kernel's last block at
// about one wave, the combine kernel above) may depend on the batch: both merges are the
// same arithmetic in the same order (lane-strided max and weights, warp_max / warp_sum
// trees, an FMA chain over the chunks in chunk order, one division, one rounding), which
// FusedKernels.DecodeAttentionMergeInSplitKernelEqualsCombineKernel asserts bit for bit.
//
// Folded q/k norm + RoPE + KV append (qkv set; FusedLayer's default for decode where the
// grid is about one wave, see decode_rope_fold_mode()): the kernel takes the raw q|k|v
// row of each sequence's new token (position kv_len-1) instead of q.
// Every block computes q_rope of its query heads with the separate kernel's per-head
// arithmetic (norm_rope_head in qk_norm_rope.cuh, same bits) into shared memory, rounded
// once to bf16, and scores with those bf16 values; the chunk-0 blocks write them to q_rope
// (the tap: one block per sequence and query head). The blocks of the last chunk (the only
// ones that attend position kv_len-1) compute k_rope of their kv head and take the new v
// row, and use them for that position without reading the cache; the one of head chunk 0
// writes both into the K/V caches. Norm weights, cos/sin rows and earlier positions' K/V
// are read before pdl_wait(), the qkv row after it.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdlib>
#include <cstring>

#include "kernels/fused/qk_norm_rope.h"

namespace fusecheck::fused {

inline constexpr int kDecodeMinChunk = 32;

struct DecodeAttentionArgs {
  const __nv_bfloat16* q;        // [batch x n_heads*head_dim] (rope applied); unused with qkv
  __nv_bfloat16* k_cache;        // [batch x n_kv_heads x capacity x head_dim]; written only
  __nv_bfloat16* v_cache;        // at position kv_len-1, and only with qkv (folded RoPE)
  int batch = 1, n_heads = 0, n_kv_heads = 0, head_dim = 0, capacity = 0;
  int kv_len = 0;                // positions 0..kv_len-1 are attended
  float* partial_acc;            // [batch x n_heads x decode_attention_splits x head_dim] scratch
  float* partial_ml;             // [batch x n_heads x decode_attention_splits x 2] scratch
  unsigned int* counters = nullptr;  // [decode_attention_counters]: zero before the first launch;
                                    // every launch leaves them zero (graph replays need no reset)
  __nv_bfloat16* out;            // [batch x n_heads*head_dim]
  int fixed_chunk = 0;           // > 0: the batch-invariant plan (above); >= kDecodeMinChunk
  int merge = -1;                // where the chunks merge: -1 by the grid's size (above), 0 the
                                 // combine kernel, 1 the split kernel (tests: same bits)

  // Folded q/k norm + RoPE + KV append (see above); off while qkv is null.
  const __nv_bfloat16* qkv = nullptr;       // [batch x (q_width + 2*kv_width)]: q | k | v
  const __nv_bfloat16* q_norm_w = nullptr;  // [head_dim] or null (no q norm)
  const __nv_bfloat16* k_norm_w = nullptr;  // [head_dim] or null
  float eps = 1e-6f;
  const float* cos_table = nullptr;         // [>= kv_len x head_dim/2]
  const float* sin_table = nullptr;
  bool interleaved = false;                 // pairs (2i, 2i+1) instead of (i, i + d/2)
  __nv_bfloat16* q_rope = nullptr;          // [batch x n_heads*head_dim] out (the q_rope tap)
};

// Folds q/k norm + RoPE + KV append into `da` with the inputs kernel 3 would take from
// `ra` (its qkv row, norm weights, eps, cos/sin tables, pair layout and q_rope output);
// the caches stay those of `da`.
inline void fold_rope(DecodeAttentionArgs& da, const RopeArgs& ra) {
  da.qkv = ra.qkv;
  da.q_norm_w = ra.q_norm_w;
  da.k_norm_w = ra.k_norm_w;
  da.eps = ra.eps;
  da.cos_table = ra.cos_table;
  da.sin_table = ra.sin_table;
  da.interleaved = ra.interleaved;
  da.q_rope = ra.q_rope;
}

// Where FusedLayer folds q/k norm + RoPE into the decode attention kernel, from
// FUSECHECK_FUSED_ROPE_FOLD (an A/B switch for the benchmarks; read once per process):
// "0" never (the separate kernel), "all" at every decode step, anything else or unset
// (auto) where the split-KV grid is about one wave (decode_attention_one_wave: batch 1 on
// the 8B models). Above one wave the folded prologue costs more than the kernel boundary
// it saves (docs/fused-kernels.md).
enum class RopeFold { off, one_wave, all };
inline RopeFold decode_rope_fold_mode() {
  static const RopeFold mode = [] {
    const char* env = std::getenv("FUSECHECK_FUSED_ROPE_FOLD");
    if (env && std::strcmp(env, "0") == 0) return RopeFold::off;
    if (env && std::strcmp(env, "all") == 0) return RopeFold::all;
    return RopeFold::one_wave;
  }();
  return mode;
}

// Whether launch_decode_attention's split kernel grid for this shape has at most about
// one wave of blocks (the shapes whose chunks merge inside the split kernel).
bool decode_attention_one_wave(int batch, int n_heads, int n_kv_heads, int kv_len, int fixed_chunk = 0);

// The most chunks a launch can use (the partials' stride per head); fewer are used when
// the batch is large.
inline int decode_attention_splits(int kv_len) {
  return (kv_len + kDecodeMinChunk - 1) / kDecodeMinChunk;
}
// The chunk (positions per block) launch_decode_attention uses for this shape: the default
// plan's (depends on batch, heads and kv_len) or fixed_chunk when that is set. Tests use it
// to place KV lengths on both sides of the default plan's edges.
int decode_attention_chunk(int batch, int n_heads, int n_kv_heads, int kv_len, int fixed_chunk = 0);

// Scratch floats needed by launch_decode_attention (acc and ml together).
std::size_t decode_attention_scratch_floats(int batch, int n_heads, int head_dim, int kv_len);

// Arrival counters needed by launch_decode_attention (zero them once, e.g. cudaMemset).
std::size_t decode_attention_counters(int batch, int n_heads);

void launch_decode_attention(const DecodeAttentionArgs& args, cudaStream_t stream);

}  // namespace fusecheck::fused
