// FlashInfer's batch decode over a paged KV cache, as vLLM's and SGLang's FlashInfer
// backends run it: one DecodePlan per batch shape (scheduler.cuh, host side), one
// BatchDecodeWithPagedKVCacheDispatched launch for every sequence of the batch (decode.cuh,
// split-KV and VariableLengthMergeStates as the plan says), the new K/V rows written by
// AppendPagedKVCache (page.cuh). Page size 16, NHD pages [page][16][kv heads][head_dim].
// Like flashinfer_ops.h, this header names no FlashInfer type: only
// flashinfer_batch_decode.cu is compiled against the templates. Rounding points:
// docs/recipes.md, `flashinfer`, "Decode attention, step by step".
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include <cuda_bf16.h>
#include <cuda_runtime.h>

namespace fusecheck::flashinfer_ops {

// Tokens per page: what vLLM and SGLang configure for FlashInfer by default.
inline constexpr int kPageSize = 16;

// One layer's paged cache: K and V pages [page][kPageSize][n_kv_heads][head_dim], bf16.
// A sequence whose pages are consecutive is also a dense NHD [tokens][kv heads][head_dim]
// block, which is how flashinfer-cuda's prefill reads it.
struct PagedKv {
  __nv_bfloat16* k = nullptr;
  __nv_bfloat16* v = nullptr;
};

// The page table of a batch as FlashInfer's paged_kv_t and AppendPagedKVCache read it
// (page.cuh): sequence b's pages are first_page[b], first_page[b] + 1, ... for its
// kv_lens[b] keys (new rows included); its n_new new rows are its last positions.
struct PageTable {
  std::vector<std::int32_t> indptr;         // [B + 1]: page ranges into indices
  std::vector<std::int32_t> indices;        // page ids
  std::vector<std::int32_t> last_page_len;  // [B]: 1 .. kPageSize keys in the last page
  std::vector<std::int32_t> batch_indices;  // [B n_new]: the sequence of each appended row
  std::vector<std::int32_t> positions;      // [B n_new]: its position in the sequence
};
// std::invalid_argument for an empty batch, mismatched sizes, n_new < 1, a sequence with
// fewer keys than new rows, or a negative first page.
PageTable page_table(const std::vector<int>& kv_lens, const std::vector<int>& first_page, int n_new);

// What the last plan decided, copied to the host: whether the KV is split into chunks
// (each chunk's output stored as bf16 and merged), and the chunk in tokens.
struct DecodePlanSummary {
  bool split_kv = false;
  int kv_chunk_tokens = 0;  // FlashInfer's kv_chunk_size (pages x kPageSize)
  int padded_batch = 0;     // blocks along the batch axis: sequences x chunks
};

// A batch decode for one model shape: its FlashInfer workspaces, its page table and its
// plan. Not copyable; one per path (the plan is shared by every layer of a step).
class BatchDecode {
 public:
  // std::invalid_argument naming the shape when FlashInfer's instances cannot run it
  // (head_dim 64 and 128, GQA groups 1, 2, 3, 4, 6, 8).
  BatchDecode(int n_heads, int n_kv_heads, int head_dim);
  ~BatchDecode();
  BatchDecode(const BatchDecode&) = delete;
  BatchDecode& operator=(const BatchDecode&) = delete;

  // Host side, outside any timed or captured work: the page table of sequences whose KV
  // lengths (new rows included) are kv_lens, sequence b on pages first_page[b],
  // first_page[b] + 1, ...; the append rows (n_new per sequence, the last n_new
  // positions of each); and FlashInfer's DecodePlan for these lengths. Synchronizes `s`
  // (the page-locked plan buffer is reused). Throws naming the FlashInfer call on failure.
  void plan(const std::vector<int>& kv_lens, const std::vector<int>& first_page, int n_new, cudaStream_t s);
  // The plan's inputs, to skip a plan that would not change.
  bool planned_for(const std::vector<int>& kv_lens, const std::vector<int>& first_page, int n_new) const;
  DecodePlanSummary summary() const;

  // AppendPagedKVCache: row b * n_new + t of k (v) goes to position kv_lens[b] - n_new + t of
  // sequence b. Rows `k_stride` (`v_stride`) elements apart, heads head_dim apart.
  void append(const PagedKv& cache, const __nv_bfloat16* k, std::size_t k_stride, const __nv_bfloat16* v,
              std::size_t v_stride, cudaStream_t s) const;
  // BatchDecodeWithPagedKVCacheDispatched with the last plan: q and out dense
  // [batch][n_heads][head_dim] (one query row per sequence), DefaultAttention, no RoPE inside.
  void run(const PagedKv& cache, const __nv_bfloat16* q, __nv_bfloat16* out, float sm_scale, cudaStream_t s) const;

 private:
  struct State;
  std::unique_ptr<State> st_;
};

}  // namespace fusecheck::flashinfer_ops
