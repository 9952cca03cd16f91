// FusedKvFp8 (fused_kv_fp8.h): per-layer FP8 caches, scales and counts, and their ops.
#include "kernels/fused/fused_kv_fp8.h"

#include <stdexcept>
#include <string>

#include "kernels/common/cuda_check.h"

namespace fusecheck::fused {

namespace {
using bf16 = __nv_bfloat16;
}  // namespace

FusedKvFp8::FusedKvFp8(const ModelSpec& spec, const KvCacheFp8& cfg) : spec_(spec), cfg_(cfg) {
  layout_.n_kv_heads = spec.n_kv_heads;
  layout_.head_dim = spec.head_dim;
  layout_.per_head = cfg.granularity == KvScaleGranularity::per_head;
  std::vector<float> ones(static_cast<std::size_t>(layout_.scale_count()), 1.0f);
  ones_.upload(ones);
  CUDA_CHECK(cudaDeviceSynchronize());
}

void FusedKvFp8::reset(int n_layers, int batch, int capacity) {
  layout_.batch = batch;
  layout_.capacity = capacity;
  const std::size_t cache = static_cast<std::size_t>(batch) * spec_.n_kv_heads * capacity * spec_.head_dim;
  const std::size_t groups = static_cast<std::size_t>(layout_.scale_count());
  layers_.resize(static_cast<std::size_t>(n_layers));
  for (Layer& l : layers_) {
    l.k.resize(cache);
    l.v.resize(cache);
    l.k.fill_poison();  // 0xFF: the E4M3 NaN, so a position never written reads as NaN
    l.v.fill_poison();
    l.k_scales.resize(groups);
    l.v_scales.resize(groups);
    l.k_scales.fill_poison();
    l.v_scales.fill_poison();
    if (cfg_.timing == KvScaleTiming::dynamic) {  // each position keeps the scale it was stored with
      l.k_pos_scales.resize(static_cast<std::size_t>(capacity) * groups);
      l.v_pos_scales.resize(static_cast<std::size_t>(capacity) * groups);
      l.k_pos_scales.fill_poison();
      l.v_pos_scales.fill_poison();
    }
    l.amax.resize(2 * groups);
    l.counters.resize(2);
    CUDA_CHECK(cudaMemset(l.counters.data(), 0, l.counters.bytes()));
    l.calibrated = false;
  }
  CUDA_CHECK(cudaDeviceSynchronize());
}

cuda::DeviceOp FusedKvFp8::append_op(int layer, int n, int start, const bf16* k_bf16, const bf16* v_bf16) {
  Layer& l = layers_.at(static_cast<std::size_t>(layer));
  const bool calibrate = cfg_.timing == KvScaleTiming::dynamic || !l.calibrated;
  l.calibrated = true;
  const KvFp8Layout lay = layout_;
  const float multiplier = cfg_.scale_multiplier;
  const KvRows k = KvRows::cache_rows(k_bf16, start, lay), v = KvRows::cache_rows(v_bf16, start, lay);
  const int groups = lay.scale_count();
  float* ks = l.k_scales.data();
  float* vs = l.v_scales.data();
  unsigned int* amax = l.amax.data();
  __nv_fp8_e4m3* kc = l.k.data();
  __nv_fp8_e4m3* vc = l.v.data();
  KvFp8Counters* counts = l.counters.data();
  float* kps = l.k_pos_scales.size() ? l.k_pos_scales.data() : nullptr;
  float* vps = l.v_pos_scales.size() ? l.v_pos_scales.data() : nullptr;
  const double values = 2.0 * lay.batch * n * spec_.kv_width();
  // Reads the bf16 rows (twice when calibrating), writes one byte per value.
  return {calibrate ? "kv_fp8_calibrate+append" : "kv_fp8_append", values * ((calibrate ? 4 : 2) + 1),
          values * 2, [=](cudaStream_t s) {
            if (calibrate) {
              launch_kv_fp8_calibrate(k, n, lay, multiplier, ks, amax, s);
              launch_kv_fp8_calibrate(v, n, lay, multiplier, vs, amax + groups, s);
            }
            launch_kv_fp8_append(k, n, start, lay, ks, kc, counts, s);
            launch_kv_fp8_append(v, n, start, lay, vs, vc, counts + 1, s);
            if (kps) {
              launch_kv_fp8_keep_scales(ks, groups, start, n, kps, s);
              launch_kv_fp8_keep_scales(vs, groups, start, n, vps, s);
            }
          }};
}

cuda::DeviceOp FusedKvFp8::attention_op(int layer, int n, int start, const bf16* q, bf16* out) {
  const Layer& l = layers_.at(static_cast<std::size_t>(layer));
  KvFp8DecodeArgs a;
  a.q = q;
  a.k_cache = l.k.data();
  a.v_cache = l.v.data();
  a.k_scales = cfg_.drop_scale_on_load ? ones_.data() : l.k_scales.data();
  a.v_scales = cfg_.drop_scale_on_load ? ones_.data() : l.v_scales.data();
  if (!cfg_.drop_scale_on_load && l.k_pos_scales.size()) {
    a.k_pos_scales = l.k_pos_scales.data();
    a.v_pos_scales = l.v_pos_scales.data();
  }
  a.layout = layout_;
  a.n_heads = spec_.n_heads;
  a.kv_len = start + n;
  a.n = n;
  a.out = out;
  if (n == 1) {  // split over chunks where the query heads alone leave the GPU mostly idle
    a.chunk = kv_fp8_decode_chunk(layout_.batch, spec_.n_heads, a.kv_len);
    const std::size_t need =
        kv_fp8_decode_partial_floats(layout_.batch, spec_.n_heads, spec_.head_dim, a.kv_len, a.chunk);
    if (partial_.size() < need) partial_.resize(need);
    a.partial = partial_.data();
  }
  const double rows = static_cast<double>(layout_.batch) * n;
  const double pairs = double(n) * start + double(n) * (n + 1) / 2.0;  // causal
  const double bytes = 2.0 * layout_.batch * spec_.kv_width() * double(start + n) + 2 * rows * spec_.q_width() * 2.0;
  return {n == 1 ? (a.chunk > 0 ? "attention(fp8 kv, split)" : "attention(fp8 kv)") : "attention(fp8 kv, causal)", bytes,
          4.0 * layout_.batch * spec_.n_heads * pairs * spec_.head_dim,
          [a](cudaStream_t s) { launch_kv_fp8_decode_attention(a, s); }};
}

void FusedKvFp8::fill_from(int layer, const bf16* k_bf16, const bf16* v_bf16, cudaStream_t stream) {
  Layer& l = layers_.at(static_cast<std::size_t>(layer));
  const int groups = layout_.scale_count();
  const KvRows k = KvRows::cache_rows(k_bf16, 0, layout_), v = KvRows::cache_rows(v_bf16, 0, layout_);
  launch_kv_fp8_calibrate(k, layout_.capacity, layout_, cfg_.scale_multiplier, l.k_scales.data(), l.amax.data(),
                          stream);
  launch_kv_fp8_calibrate(v, layout_.capacity, layout_, cfg_.scale_multiplier, l.v_scales.data(),
                          l.amax.data() + groups, stream);
  launch_kv_fp8_append(k, layout_.capacity, 0, layout_, l.k_scales.data(), l.k.data(), nullptr, stream);
  launch_kv_fp8_append(v, layout_.capacity, 0, layout_, l.v_scales.data(), l.v.data(), nullptr, stream);
  if (l.k_pos_scales.size()) {
    launch_kv_fp8_keep_scales(l.k_scales.data(), groups, 0, layout_.capacity, l.k_pos_scales.data(), stream);
    launch_kv_fp8_keep_scales(l.v_scales.data(), groups, 0, layout_.capacity, l.v_pos_scales.data(), stream);
  }
  l.calibrated = true;
}

std::pair<std::vector<float>, std::vector<float>> FusedKvFp8::scales(int layer) const {
  const Layer& l = layers_.at(static_cast<std::size_t>(layer));
  return {l.k_scales.download(), l.v_scales.download()};
}

std::pair<KvFp8Counters, KvFp8Counters> FusedKvFp8::counters(int layer) const {
  const auto c = layers_.at(static_cast<std::size_t>(layer)).counters.download();
  return {c[0], c[1]};
}

}  // namespace fusecheck::fused
