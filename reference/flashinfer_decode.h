// The emulated twin of FlashInfer 0.6.18's decode attention (one query row, bf16 q/k/v/o,
// DefaultAttention, no RoPE inside: what flashinfer-cuda launches), in FlashInfer's order
// of FP32 operations, for emulated-cpu --recipe flashinfer (docs/recipes.md, `flashinfer`,
// "decode attention, step by step"). Two kernels, one order (FlashInferDecodeKernel): the
// batch decode over a paged cache that flashinfer-cuda runs by default and the single-
// request decode (FUSECHECK_FLASHINFER_DECODE=single) differ only in the thread layout
// and in when they split the KV. Read from attention/decode.cuh, state.cuh, scheduler.cuh,
// cascade.cuh and math.cuh of the pinned headers:
//  - the thread layout of SingleDecodeWithKVCacheDispatched (decode.cuh:664-680): vec 8
//    (bf16), bdx = head_dim / 8 lanes per head, bdy = GQA group, bdz = threads / (bdx bdy)
//    partitions of the keys, each taking tiles of bdy * (group 1 ? 8 : 1) keys in turn;
//    BatchDecodeWithPagedKVCacheDispatched (decode.cuh:743-762): bdz = max(128, bdx bdy) /
//    (bdx bdy) (no 512 for group 8) and tiles of bdy * (group 1 ? 4 : 1) keys; its keys
//    come from 16-token pages in sequence order, the same keys in the same order;
//  - q.k: per lane 8 products accumulated by FMA, then the shfl_xor butterfly over the bdx
//    lanes (decode.cuh:83-90); times sm_scale * log2(e), that product itself an FP32
//    (variants.cuh:54, decode.cuh:93-95); masked keys at -5e4 (math.cuh:33, not -inf);
//  - online softmax per partition and tile (decode.cuh:100-113): m, d *= exp2(m_prev - m),
//    p = exp2(s - m), d += p, o *= exp2(m_prev - m), then o = fma(p, v, o) key by key
//    (decode.cuh:139-148); the partitions merged in order (sync_state, decode.cuh:162-185;
//    state_t::merge, state.cuh:53-63, from m = -5e4, d = 1, o = 0);
//  - the output o * rcp(d) (variant_helper.cuh:85-89);
//  - batch decode's split-KV is the plan's (scheduler.cuh:150-205, DecodePlanImpl): no
//    CUDA graph, so it splits only when some sequence has more pages than the chunk; the
//    chunk is the fewest pages, at least 128 / page size, for which sequences x chunks x
//    kv heads fit the resident blocks (128 keys for small batches; larger or no split for
//    large ones: the caller passes the plan's chunk). A sequence within one chunk is not
//    merged (VariableLengthMergeStates copies a single index set, cascade.cuh:407-415);
//    longer ones merge as below, with the same 128 / bdx lanes (cascade.cuh:700-703);
//  - single decode's split-KV (kv_len > 256 and a workspace, decode.cuh:691-725), and
//    either kernel's chunks: each chunk's output stored as bf16 (tmp is DTypeO*) with
//    lse = m + log2(d); single decode's MergeStates always takes
//    MergeStatesLargeNumIndexSetsKernel for one query (cascade.cuh:644): 128 / bdx
//    "index-set lanes" each merging chunks ty, ty + bdy, ... in order, normalizing
//    (__fdividef), storing its result as bf16 again with its lse (threadblock_sync_state,
//    cascade.cuh:119-136: v_smem is DTypeIn*), then one merge of those in order and a
//    final normalize (cascade.cuh:301-334).
// ex2.approx, rcp.approx, lg2.approx and __fdividef are computed exactly here (the GPU's
// are within 2^-21 relative, 2 ulp for __fdividef): the twin and the kernel differ by those
// FP32 ulps (docs/recipes.md bounds their effect), nowhere else.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <vector>

namespace fusecheck::ref {

// FlashInfer's "infinity" for masked logits and the initial running max (math.cuh:33).
inline constexpr float kFlashInferInf = 5e4f;

// Which FlashInfer decode kernel the twin follows.
enum class FlashInferDecodeKernel {
  single,       // SingleDecodeWithKVCacheDispatched: split past 256 keys
  batch_paged,  // BatchDecodeWithPagedKVCacheDispatched: split where the plan's chunk < kv length
};

// FlashInfer's running softmax state (state.cuh:28-80): m and lse in the log2 domain.
struct FlashInferState {
  std::vector<float> o;
  float m = -kFlashInferInf, d = 1.0f;

  explicit FlashInferState(int head_dim) : o(static_cast<std::size_t>(head_dim), 0.0f) {}
  float lse() const { return m + std::log2(d); }
  // state_t::merge (state.cuh:53-63).
  void merge(const std::vector<float>& other_o, float other_m, float other_d) {
    const float m_prev = m, d_prev = d;
    m = std::max(m_prev, other_m);
    const float a = std::exp2(m_prev - m), b = std::exp2(other_m - m);
    d = d_prev * a + other_d * b;
    for (std::size_t i = 0; i < o.size(); ++i) o[i] = o[i] * a + other_o[i] * b;
  }
  // state_t::normalize (state.cuh:71-77), __fdividef taken as the IEEE division.
  void normalize() {
    for (float& x : o) x = x / d;
  }
};

// One query head over keys/values rows [0, total) of its kv head. `key(j)` and `value(j)`
// give row j (head_dim floats, bf16 values); q: head_dim floats (bf16 values); `to_bf16`
// rounds a float to the model format; `chunk`: the split-KV chunk (0: never split).
// Writes the FP32 output (the caller rounds it once, as the kernel's cast_store does).
template <class KeyFn, class ValueFn, class RoundFn>
void flashinfer_decode_head(const float* q, const KeyFn& key, const ValueFn& value, std::int64_t total, int head_dim,
                            int group, float sm_scale, std::int64_t chunk, const RoundFn& to_bf16, float* out,
                            FlashInferDecodeKernel kernel = FlashInferDecodeKernel::single) {
  const bool batch = kernel == FlashInferDecodeKernel::batch_paged;
  constexpr int kVec = 8;  // max(16 / sizeof(bf16), head_dim / 32) for head_dim <= 256
  const int bdx = head_dim / kVec;
  // get_heuristic_num_threads (single) or max(128, bdx bdy) (batch).
  const int threads = std::max(group == 8 && !batch ? 512 : 128, bdx * group);
  const int bdz = threads / (bdx * group);
  const std::int64_t tile = static_cast<std::int64_t>(group) * (group == 1 ? (batch ? 4 : 8) : 1);
  const float sm_scale_log2 = sm_scale * 1.44269504088896340736f;

  // q.k as the bdx lanes compute it: 8 FMAs each, then the butterfly (pairs bdx/2 apart first).
  std::vector<float> lane(static_cast<std::size_t>(bdx));
  auto score = [&](std::int64_t j) {
    const float* k = key(j);
    for (int t = 0; t < bdx; ++t) {
      float s = 0.0f;
      for (int i = 0; i < kVec; ++i) s = std::fma(q[t * kVec + i], k[t * kVec + i], s);
      lane[t] = s;
    }
    for (int off = bdx / 2; off > 0; off /= 2)
      for (int t = 0; t < off; ++t) lane[t] = lane[t] + lane[t + off];
    return lane[0] * sm_scale_log2;
  };

  // One chunk [c0, c0 + len): the bdz partitions' states merged in order.
  auto run_chunk = [&](std::int64_t c0, std::int64_t len) {
    std::vector<FlashInferState> part(static_cast<std::size_t>(bdz), FlashInferState(head_dim));
    std::vector<float> s(static_cast<std::size_t>(tile));
    for (std::int64_t base = 0; base < len; base += tile * bdz) {
      for (int z = 0; z < bdz; ++z) {
        FlashInferState& st = part[static_cast<std::size_t>(z)];
        const float m_prev = st.m;
        for (std::int64_t j = 0; j < tile; ++j) {
          const std::int64_t idx = base + z * tile + j;
          s[j] = idx < len ? score(c0 + idx) : -kFlashInferInf;
          st.m = std::max(st.m, s[j]);
        }
        const float o_scale = std::exp2(m_prev - st.m);
        st.d *= o_scale;
        for (std::int64_t j = 0; j < tile; ++j) st.d += (s[j] = std::exp2(s[j] - st.m));
        for (float& x : st.o) x = x * o_scale;
        for (std::int64_t j = 0; j < tile; ++j) {
          const std::int64_t idx = base + z * tile + j;
          if (idx >= len) continue;  // v read as zero (kFillZero): fma(p, 0, o) = o
          const float* v = value(c0 + idx);
          for (int i = 0; i < head_dim; ++i) st.o[i] = std::fma(s[j], v[i], st.o[i]);
        }
      }
    }
    if (bdz == 1) return part[0];
    FlashInferState merged(head_dim);
    for (const auto& st : part) merged.merge(st.o, st.m, st.d);
    return merged;
  };
  // OutputTransform: o * rcp(d).
  auto output = [](FlashInferState& st) {
    const float d_rcp = st.m != -kFlashInferInf ? 1.0f / st.d : 0.0f;
    for (float& x : st.o) x = x * d_rcp;
  };

  if (chunk <= 0 || total <= (batch ? chunk : 256)) {
    FlashInferState st = run_chunk(0, total);
    output(st);
    std::copy(st.o.begin(), st.o.end(), out);
    return;
  }
  // Split-KV: bf16 chunk outputs with their lse, merged by MergeStatesLargeNumIndexSetsKernel.
  std::vector<std::vector<float>> tmp;
  std::vector<float> tmp_lse;
  for (std::int64_t c0 = 0; c0 < total; c0 += chunk) {
    FlashInferState st = run_chunk(c0, std::min(chunk, total - c0));
    output(st);
    for (float& x : st.o) x = to_bf16(x);
    tmp_lse.push_back(st.lse());
    tmp.push_back(std::move(st.o));
  }
  const int merge_lanes = 128 / bdx;  // bdy of the merge kernel
  FlashInferState final_state(head_dim);
  for (int ty = 0; ty < merge_lanes; ++ty) {
    FlashInferState st(head_dim);
    for (std::size_t c = static_cast<std::size_t>(ty); c < tmp.size(); c += static_cast<std::size_t>(merge_lanes))
      st.merge(tmp[c], tmp_lse[c], 1.0f);
    st.normalize();
    for (float& x : st.o) x = to_bf16(x);  // threadblock_sync_state stores o as DTypeIn
    final_state.merge(st.o, st.lse(), 1.0f);
  }
  final_state.normalize();
  std::copy(final_state.o.begin(), final_state.o.end(), out);
}

}  // namespace fusecheck::ref
