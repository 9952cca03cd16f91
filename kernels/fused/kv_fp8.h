// The FP8 E4M3 KV cache of the fp8-kv recipes (docs/recipes.md, "fp8-kv") on sm_89+:
// calibration (scale = amax / 448 per tensor or per kv head, from the rows being
// appended), quantize-on-append (code = e4m3(x / s), round to nearest even, saturating:
// __nv_fp8_e4m3's conversion, the same as harness/core/fp8.h), and an attention kernel
// (decode, or a causal chunk of n queries) that dequantizes K and V in its loads
// (e4m3_value(code) * s in FP32) with an FP32 online softmax and one bf16 rounding of its
// output, as fused-v1's K3. The emulated twin
// is emulated-cpu --recipe fp8-kv* (reference/kv_fp8.h): same codes bit for bit, same
// dequantized values; the attention differs only by FP32 summation order.
// FusedLayer runs them for the fused-cuda:fp8-kv* paths (fused_kv_fp8.h): the appended rows
// are read where the bf16 kernels left them (KvRows), the scales are found on the device
// without a host round trip (graph capture), and the append counts what reference/kv_fp8.h
// counts (KvFp8Counters).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <string>
#include <vector>

namespace fusecheck::fused {

// An FP8 recipe on a device below compute capability 8.9 (no FP8 conversions, no FP8
// tensor cores): InputError naming the device and its capability. Host only.
void require_fp8_capability(int major, int minor, const std::string& device_name);
// The same for a CUDA device index.
void require_fp8_device(int device);
// InputError (naming `what` and the kv head) when a scale is 0, NaN or Inf.
void check_kv_fp8_scales(const std::vector<float>& scales, const std::string& what);

struct KvFp8Layout {
  int batch = 1, n_kv_heads = 0, head_dim = 0, capacity = 0;
  bool per_head = false;  // scales [n_kv_heads], else [1]
  int scale_count() const { return per_head ? n_kv_heads : 1; }
};

// Where the n appended tokens of every sequence are: element (b, t, h, d) at
// ptr[b * batch_stride + t * token_stride + h * head_stride + d].
struct KvRows {
  const __nv_bfloat16* ptr = nullptr;
  long batch_stride = 0, token_stride = 0, head_stride = 0;
  // [batch * n x n_kv_heads * head_dim], sequence-major (the appended tokens).
  static KvRows sequence_major(const __nv_bfloat16* rows, int n, const KvFp8Layout& l) {
    const long width = static_cast<long>(l.n_kv_heads) * l.head_dim;
    return {rows, n * width, width, l.head_dim};
  }
  // Positions start.. of a bf16 cache [batch x n_kv_heads x capacity x head_dim].
  static KvRows cache_rows(const __nv_bfloat16* cache, int start, const KvFp8Layout& l) {
    const long head = static_cast<long>(l.capacity) * l.head_dim;
    return {cache + static_cast<long>(start) * l.head_dim, l.n_kv_heads * head, l.head_dim, head};
  }
};

// What the appends of one tensor saw, counted as reference/kv_fp8.h's KvFp8Stats counts
// (device memory, accumulated over appends until zeroed).
struct KvFp8Counters {
  unsigned long long n_values = 0, n_clipped = 0, n_flushed = 0, n_nonfinite = 0;
  unsigned int max_abs_scaled_bits = 0;  // largest finite |x / s| as float bits
  unsigned int unused = 0;
};

// scales[g] = amax(rows of group g) / 448 * multiplier, in FP32, without synchronizing:
// `amax_scratch` holds layout.scale_count() words (zeroed here). The caller checks the
// scales (check_kv_fp8_scales) once it synchronizes.
void launch_kv_fp8_calibrate(const KvRows& rows, int n, const KvFp8Layout& layout, float multiplier,
                             float* scales, unsigned int* amax_scratch, cudaStream_t stream);

// scales[g] = amax(rows of group g) / 448 * multiplier, in FP32, for `rows`
// [batch * n x n_kv_heads * head_dim] (sequence-major, the appended tokens). Synchronizes
// on `stream` and throws InputError (naming `what`) when a scale is 0, NaN or Inf.
void kv_fp8_calibrate(const __nv_bfloat16* rows, int n, const KvFp8Layout& layout, float multiplier,
                      float* scales, const std::string& what, cudaStream_t stream);

// Writes e4m3(rows / s) into cache [batch x n_kv_heads x capacity x head_dim] at positions
// past .. past + n - 1 of every sequence.
void launch_kv_fp8_append(const __nv_bfloat16* rows, int n, int past, const KvFp8Layout& layout,
                          const float* scales, __nv_fp8_e4m3* cache, cudaStream_t stream);
// The same from anywhere (`rows`), adding what it stores to `counters` when not null.
void launch_kv_fp8_append(const KvRows& rows, int n, int past, const KvFp8Layout& layout, const float* scales,
                          __nv_fp8_e4m3* cache, KvFp8Counters* counters, cudaStream_t stream);

// n query tokens per sequence (1: decode; more: a causal prefill chunk whose token t sees
// positions 0 .. kv_len - n + t), each query over the dequantized cache.
struct KvFp8DecodeArgs {
  const __nv_bfloat16* q = nullptr;  // [batch * n x n_heads * head_dim], rope applied
  const __nv_fp8_e4m3* k_cache = nullptr;
  const __nv_fp8_e4m3* v_cache = nullptr;
  const float* k_scales = nullptr;  // layout.scale_count() each
  const float* v_scales = nullptr;
  KvFp8Layout layout;
  int n_heads = 0;
  int kv_len = 0;                   // positions 0 .. kv_len - 1 are attended (by the last query)
  int n = 1;
  __nv_bfloat16* out = nullptr;     // [batch * n x n_heads * head_dim]
  // Decode (n == 1) only, when > 0: the positions split into chunks of `chunk` at absolute
  // positions 0, chunk, ... over blocks, each writing an FP32 partial (max, sum of
  // exponentials, unnormalized output) to `partial` (kv_fp8_decode_partial_floats), which a
  // second kernel merges in chunk order with the one bf16 rounding. 0: one block per query
  // head walks every position.
  int chunk = 0;
  float* partial = nullptr;
  // Dynamic scales (fp8-kv*-dynamic): when set, key/value position p is dequantized with
  // the scales it was stored with, k_pos_scales[p * scale_count() + group], not k_scales
  // (a decode step's new scale must not re-read older rows).
  const float* k_pos_scales = nullptr;
  const float* v_pos_scales = nullptr;
  // Group-shared variant (2 to 4 query heads per kv head; FUSECHECK_FP8_KV_GQA=1 sets it for
  // every launch): one block per kv head serves its query heads, reading each K / V row once
  // instead of once per query head; the same per-head arithmetic and order, so the same bits.
  bool gqa_shared = false;
};

// Copies `scales` (scale_count() each) to positions past .. past + n - 1 of `pos_scales`
// [capacity x scale_count()]: the scales an append stored its rows with.
void launch_kv_fp8_keep_scales(const float* scales, int groups, int past, int n, float* pos_scales,
                               cudaStream_t stream);

// The split decode's chunk (kv_fp8_decode_chunk): used where the batch's query heads alone
// make fewer blocks than about two waves of a 132-SM H100 / H200 (decode b1 and b8 on the
// 8B models), fixed so that the split depends on the KV length and batch only.
inline constexpr int kKvFp8DecodeChunk = 128;
inline constexpr int kKvFp8SplitBelowBlocks = 264;
inline int kv_fp8_decode_chunk(int batch, int n_heads, int kv_len) {
  return batch * n_heads < kKvFp8SplitBelowBlocks && kv_len > kKvFp8DecodeChunk ? kKvFp8DecodeChunk : 0;
}
// Floats of `partial` for a split decode in chunks of `chunk` (0 when chunk is 0).
inline std::size_t kv_fp8_decode_partial_floats(int batch, int n_heads, int head_dim, int kv_len, int chunk) {
  if (chunk <= 0) return 0;
  return static_cast<std::size_t>(batch) * n_heads * ((kv_len + chunk - 1) / chunk) * (head_dim + 2);
}

// head_dim a multiple of 4, at most 256; n_heads a multiple of n_kv_heads; 1 <= n <= kv_len.
void launch_kv_fp8_decode_attention(const KvFp8DecodeArgs& args, cudaStream_t stream);

}  // namespace fusecheck::fused
