// FusedLayer: routes, op lists with declared bytes/FLOPs, head, and the op timer.
#include "kernels/fused/fused_layer.h"

#include <algorithm>
#include <cmath>
#include <numbers>
#include <stdexcept>

#include "kernels/common/cuda_check.h"
#include "kernels/fused/add_rmsnorm.h"
#include "kernels/fused/attention_decode.h"
#include "kernels/fused/attention_prefill.h"
#include "kernels/fused/fp8_gemv.h"
#include "kernels/fused/fused_kv_fp8.h"
#include "kernels/fused/gemm_lt.h"
#include "kernels/fused/norm_gemv.h"
#include "kernels/fused/qk_norm_rope.h"
#include "kernels/fused/silu_mul.h"
#include "kernels/fused/skinny_gemm.h"
#include "kernels/common/random_fill.h"
#include "kernels/common/stream.h"

namespace fusecheck::fused {

namespace {

using bf16 = __nv_bfloat16;
constexpr double kB = 2.0;  // bytes per bf16

template <typename T>
void grow(cuda::DeviceBuffer<T>& b, std::size_t n) {
  if (b.size() < n) b.resize(n);
}

double llama3_inv_freq(double inv_freq, const RopeScaling& s) {
  const double low_wavelen = s.original_max_position / s.low_freq_factor;
  const double high_wavelen = s.original_max_position / s.high_freq_factor;
  const double wavelen = 2.0 * std::numbers::pi / inv_freq;
  if (wavelen < high_wavelen) return inv_freq;
  if (wavelen > low_wavelen) return inv_freq / s.factor;
  const double smooth = (s.original_max_position / wavelen - s.low_freq_factor) /
                        (s.high_freq_factor - s.low_freq_factor);
  return (1.0 - smooth) * inv_freq / s.factor + smooth * inv_freq;
}

}  // namespace

void rope_tables(const ModelSpec& spec, int capacity, std::vector<float>& cos_t,
                 std::vector<float>& sin_t) {
  const int D = spec.head_dim, half = D / 2;
  std::vector<double> inv_freq(half);
  for (int i = 0; i < half; ++i) {
    double f = std::pow(spec.rope_theta, -2.0 * i / D);
    if (spec.rope_scaling.type == "linear") f /= spec.rope_scaling.factor;
    if (spec.rope_scaling.type == "llama3") f = llama3_inv_freq(f, spec.rope_scaling);
    inv_freq[i] = f;
  }
  cos_t.resize(static_cast<std::size_t>(capacity) * half);
  sin_t.resize(cos_t.size());
  for (int p = 0; p < capacity; ++p)
    for (int i = 0; i < half; ++i) {
      const double angle = p * inv_freq[i];
      cos_t[static_cast<std::size_t>(p) * half + i] = static_cast<float>(std::cos(angle));
      sin_t[static_cast<std::size_t>(p) * half + i] = static_cast<float>(std::sin(angle));
    }
}

FusedLayer::FusedLayer(const ModelSpec& spec)
    : spec_(spec), gemm_(std::make_unique<LtGemm>()), skinny_(std::make_unique<SkinnyGemm>()) {
  if (spec.rope_dim != 0 && spec.rope_dim != spec.head_dim)
    throw std::invalid_argument("fused-cuda: partial rotary (rope_dim != head_dim) is not supported");
}

FusedLayer::~FusedLayer() = default;

void FusedLayer::init_random_weights(int n_layers, std::uint64_t seed, cudaStream_t s) {
  const ModelSpec& m = spec_;
  const std::size_t H = m.hidden, I = m.intermediate, QW = m.q_width(), KW = m.kv_width();
  // Magnitudes like a trained model's: projections ~ 1/sqrt(fan_in), norms near 1.
  const float proj = 1.0f / std::sqrt(static_cast<float>(H));
  weights_->clear();
  weights_->resize(n_layers);
  std::uint64_t k = seed * 1000;
  auto fill = [&](cuda::DeviceBuffer<bf16>& b, std::size_t n, float scale, float offset) {
    b.resize(n);
    cuda::fill_uniform(b.data(), n, ++k, offset - scale, offset + scale, s);
  };
  for (auto& w : *weights_) {
    fill(w.attn_norm, H, 0.2f, 1.0f);
    fill(w.w_qkv, (QW + 2 * KW) * H, proj, 0.f);
    if (m.has_qkv_bias) fill(w.b_qkv, QW + 2 * KW, 0.1f, 0.f);
    if (m.has_qk_norm) {
      fill(w.q_norm, m.head_dim, 0.2f, 1.0f);
      fill(w.k_norm, m.head_dim, 0.2f, 1.0f);
    }
    fill(w.w_o, H * QW, 1.0f / std::sqrt(static_cast<float>(QW)), 0.f);
    fill(w.mlp_norm, H, 0.2f, 1.0f);
    fill(w.w_gate_up, 2 * I * H, proj, 0.f);
    fill(w.w_down, H * I, 1.0f / std::sqrt(static_cast<float>(I)), 0.f);
  }
}

void FusedLayer::reset(int batch, int capacity) {
  if (batch <= 0 || capacity <= 0) throw std::invalid_argument("fused-cuda: reset needs batch, capacity > 0");
  batch_ = batch;
  capacity_ = capacity;
  const std::size_t cache = static_cast<std::size_t>(batch) * spec_.n_kv_heads * capacity * spec_.head_dim;
  k_cache_.resize(weights_->size());
  v_cache_.resize(weights_->size());
  for (std::size_t l = 0; l < weights_->size(); ++l) {
    k_cache_[l].resize(cache);
    v_cache_[l].resize(cache);
    k_cache_[l].fill_poison();  // a read of a position never written shows up as NaN
    v_cache_[l].fill_poison();
  }
  if (kv_fp8_) kv_fp8_->reset(static_cast<int>(weights_->size()), batch, capacity);
  std::vector<float> c, s;
  rope_tables(spec_, capacity, c, s);
  rope_cos_.upload(c);
  rope_sin_.upload(s);
  CUDA_CHECK(cudaDeviceSynchronize());
}

void FusedLayer::randomize_caches(std::uint64_t seed, cudaStream_t s) {
  for (std::size_t l = 0; l < k_cache_.size(); ++l) {
    cuda::fill_uniform(k_cache_[l].data(), k_cache_[l].size(), seed + 2 * l, -1.f, 1.f, s);
    cuda::fill_uniform(v_cache_[l].data(), v_cache_[l].size(), seed + 2 * l + 1, -1.f, 1.f, s);
    if (kv_fp8_) kv_fp8_->fill_from(static_cast<int>(l), k_cache_[l].data(), v_cache_[l].data(), s);
  }
}

void FusedLayer::randomize_input(int rows, std::uint64_t seed, cudaStream_t s) {
  ensure_buffers(rows, 1);
  cuda::fill_uniform(x_.data(), std::size_t(rows) * spec_.hidden, seed, -1.f, 1.f, s);
}

void FusedLayer::set_batch_invariant(std::optional<BatchInvariantPlan> plan) {
  if (plan && (plan->decode_chunk < kDecodeMinChunk || plan->decode_gemm_rows <= 0 ||
               plan->prefill_gemm_rows <= 0))
    throw std::invalid_argument("fused-cuda: batch-invariant chunk below kDecodeMinChunk or GEMM rows <= 0");
  invariant_ = plan;
}

void FusedLayer::set_kv_fp8(const KvCacheFp8& cfg) { kv_fp8_ = std::make_unique<FusedKvFp8>(spec_, cfg); }

bool FusedLayer::gemv_route(int rows) const {
  return !force_gemm_ && !invariant_ && rows <= kGemvRouteMaxRows && gemv_supports(rows, spec_.hidden, true) &&
         gemv_supports(rows, spec_.q_width(), false) &&
         gemv_supports(rows, spec_.intermediate, false);
}

void FusedLayer::ensure_buffers(int rows, int kv_len) {
  const std::size_t r = rows, H = spec_.hidden, I = spec_.intermediate, QW = spec_.q_width(),
                    KW = spec_.kv_width();
  grow(x_, r * H);
  grow(normed_, r * H);
  grow(qkv_, r * (QW + 2 * KW));
  grow(q_rope_, r * QW);
  grow(attn_, r * QW);
  grow(o_proj_, r * H);
  grow(resid_mid_, r * H);
  grow(act_, r * I);
  grow(resid_out_, r * H);
  if (!gemv_route(rows)) grow(gate_up_, r * 2 * I);
  grow(attn_scratch_, decode_attention_scratch_floats(batch_, spec_.n_heads, spec_.head_dim, kv_len));
  // The split-KV attention's arrival counters start at zero and every launch leaves them
  // zero, so they are cleared only when (re)allocated.
  const std::size_t n_counters = decode_attention_counters(batch_, spec_.n_heads);
  if (attn_counters_.size() < n_counters) {
    attn_counters_.resize(n_counters);
    CUDA_CHECK(cudaMemset(attn_counters_.data(), 0, n_counters * sizeof(unsigned int)));
  }
}

RopeArgs FusedLayer::rope_args(int layer, int n, int start) {
  const ModelSpec& m = spec_;
  FusedLayerWeights& w = (*weights_)[layer];
  RopeArgs ra;
  ra.qkv = qkv_.data();
  ra.q_norm_w = w.q_norm.size() ? w.q_norm.data() : nullptr;
  ra.k_norm_w = w.k_norm.size() ? w.k_norm.data() : nullptr;
  ra.eps = static_cast<float>(m.rms_eps);
  ra.cos_table = rope_cos_.data();
  ra.sin_table = rope_sin_.data();
  ra.interleaved = m.rope_style == RopeStyle::Interleaved;
  ra.batch = batch_;
  ra.n = n;
  ra.start = start;
  ra.n_heads = m.n_heads;
  ra.n_kv_heads = m.n_kv_heads;
  ra.head_dim = m.head_dim;
  ra.capacity = capacity_;
  ra.q_rope = q_rope_.data();
  ra.k_cache = k_cache_[layer].data();
  ra.v_cache = v_cache_[layer].data();
  return ra;
}

std::vector<cuda::DeviceOp> FusedLayer::ops(int layer, int n, int start) {
  if (layer < 0 || layer >= static_cast<int>(weights_->size()))
    throw std::out_of_range("fused-cuda: layer " + std::to_string(layer) + " out of range");
  if (batch_ == 0) throw std::logic_error("fused-cuda: reset() before running a layer");
  if (n <= 0 || start < 0 || start + n > capacity_)
    throw std::invalid_argument("fused-cuda: " + std::to_string(start + n) +
                                " positions exceed the KV capacity " + std::to_string(capacity_));
  if (w8a8_) return ops_w8a8(layer, n, start);
  const ModelSpec& m = spec_;
  const int rows = batch_ * n, kv_len = start + n;
  ensure_buffers(rows, kv_len);
  FusedLayerWeights& w = (*weights_)[layer];
  const int H = m.hidden, I = m.intermediate, QW = m.q_width(), KW = m.kv_width(),
            NQKV = QW + 2 * KW;
  const float eps = static_cast<float>(m.rms_eps);
  const double R = rows, act_h = R * H * kB;
  const double w_qkv = double(NQKV) * H * kB, w_o = double(H) * QW * kB,
               w_gu = 2.0 * I * H * kB, w_d = double(H) * I * kB;
  const bf16* bias = w.b_qkv.size() ? w.b_qkv.data() : nullptr;
  // Batch-invariant mode: the GEMM algorithms fixed per (N, K) (default: chosen per shape).
  AlgoChoice algo;
  if (invariant_) {
    algo.rows = n == 1 ? invariant_->decode_gemm_rows : invariant_->prefill_gemm_rows;
    algo.split_k = invariant_->gemm_split_k;
  }
  std::vector<cuda::DeviceOp> out;

  const bool gemv = gemv_route(rows);
  // Batch-invariant decode on the skinny GEMM: decided by the plan and the shapes (N, K)
  // only, never by the row count.
  const bool skinny = invariant_ && invariant_->skinny_decode && n == 1 && skinny_supports(NQKV, H) &&
                      skinny_supports(H, QW) && skinny_supports(I, H) && skinny_supports(H, I);
  const SkinnyEpilogue qkv_epi = bias ? SkinnyEpilogue::Bias : SkinnyEpilogue::Store;
  // The norms folded into the skinny GEMMs (same bits as their own kernels), at few rows.
  const bool skinny_norm = skinny && rows <= invariant_->skinny_norm_rows &&
                           SkinnyGemm::norm_fold_supported(rows, NQKV, H, qkv_epi) &&
                           SkinnyGemm::norm_fold_supported(rows, I, H, SkinnyEpilogue::SwiGlu);
  if (skinny) {
    skinny_->prepare(NQKV, H, bias ? SkinnyEpilogue::Bias : SkinnyEpilogue::Store);
    skinny_->prepare(H, QW, SkinnyEpilogue::Store);
    skinny_->prepare(I, H, SkinnyEpilogue::SwiGlu);
    skinny_->prepare(H, I, SkinnyEpilogue::Residual);
  }
  if (gemv) {
    out.push_back({"attn_norm+qkv", w_qkv + act_h + R * NQKV * kB, 2.0 * R * NQKV * H,
                   [=, this, &w](cudaStream_t s) {
                     launch_norm_qkv_gemv(x_.data(), w.attn_norm.data(), eps, w.w_qkv.data(), bias,
                                          rows, H, NQKV, qkv_.data(), s);
                   }});
  } else if (skinny_norm) {
    out.push_back({bias ? "attn_norm+qkv_skinny+bias" : "attn_norm+qkv_skinny", w_qkv + act_h + R * NQKV * kB,
                   2.0 * R * NQKV * H, [=, this, &w](cudaStream_t s) {
                     SkinnyNorm nm;
                     nm.weight = w.attn_norm.data();
                     nm.eps = eps;
                     skinny_->run(x_.data(), w.w_qkv.data(), rows, NQKV, H, qkv_epi, bias, nullptr, qkv_.data(), s,
                                  &nm);
                   }});
  } else {
    out.push_back({"attn_norm", 2 * act_h, 0, [=, this, &w](cudaStream_t s) {
                     launch_add_rmsnorm(nullptr, x_.data(), w.attn_norm.data(), eps, rows, H,
                                        nullptr, normed_.data(), s);
                   }});
    if (skinny)
      out.push_back({bias ? "qkv_skinny+bias" : "qkv_skinny", w_qkv + act_h + R * NQKV * kB,
                     2.0 * R * NQKV * H, [=, this](cudaStream_t s) {
                       skinny_->run(normed_.data(), (*weights_)[layer].w_qkv.data(), rows, NQKV, H,
                                    bias ? SkinnyEpilogue::Bias : SkinnyEpilogue::Store, bias, nullptr,
                                    qkv_.data(), s);
                     }});
    else
      out.push_back({bias ? "qkv_gemm+bias" : "qkv_gemm", w_qkv + act_h + R * NQKV * kB,
                     2.0 * R * NQKV * H, [=, this](cudaStream_t s) {
                       gemm_->run(normed_.data(), (*weights_)[layer].w_qkv.data(), rows, NQKV, H,
                                  qkv_.data(), false, bias, nullptr, s, algo);
                     }});
  }

  RopeArgs ra = rope_args(layer, n, start);
  const double rope_bytes = 2.0 * R * NQKV * kB, rope_flops = R * NQKV * 6.0;
  // Decode folds q/k norm + RoPE + KV append into the attention kernel (one kernel
  // boundary less) where its grid is about one wave; FUSECHECK_FUSED_ROPE_FOLD=0 / all
  // select never / every decode step (A/B, see decode_rope_fold_mode()).
  const RopeFold fold_mode = decode_rope_fold_mode();
  // The fold gives the separate kernel's bits (qk_norm_rope.cuh), so the batch-invariant
  // mode may follow the same rule on its own chunk plan (BatchInvariantPlan::one_wave_fusions).
  const bool fold = n == 1 && !kv_fp8_ &&
                    (fold_mode == RopeFold::all ||
                     (fold_mode == RopeFold::one_wave && (!invariant_ || invariant_->one_wave_fusions) &&
                      decode_attention_one_wave(batch_, m.n_heads, m.n_kv_heads, kv_len,
                                                invariant_ ? invariant_->decode_chunk : 0)));
  if (!fold)
    out.push_back({m.has_qk_norm ? "qk_norm+rope" : "rope", rope_bytes, rope_flops,
                   [ra](cudaStream_t s) { launch_qk_norm_rope(ra, s); }});

  const double kv_bytes = 2.0 * batch_ * KW * double(kv_len) * kB;
  if (kv_fp8_) {
    out.push_back(kv_fp8_->append_op(layer, n, start, k_cache_[layer].data(), v_cache_[layer].data()));
    out.push_back(kv_fp8_->attention_op(layer, n, start, q_rope_.data(), attn_.data()));
  } else if (n == 1) {
    DecodeAttentionArgs da;
    da.q = q_rope_.data();
    da.k_cache = k_cache_[layer].data();
    da.v_cache = v_cache_[layer].data();
    da.batch = batch_;
    da.n_heads = m.n_heads;
    da.n_kv_heads = m.n_kv_heads;
    da.head_dim = m.head_dim;
    da.capacity = capacity_;
    da.kv_len = kv_len;
    da.partial_acc = attn_scratch_.data();
    da.partial_ml = attn_scratch_.data() +
                    std::size_t(batch_) * m.n_heads * decode_attention_splits(kv_len) * m.head_dim;
    da.counters = attn_counters_.data();
    da.out = attn_.data();
    if (invariant_) {
      da.fixed_chunk = invariant_->decode_chunk;
      if (!invariant_->one_wave_fusions) da.merge = 0;  // the combine kernel (same bits either way)
    }
    double bytes = kv_bytes + 2 * R * QW * kB,
           flops = 4.0 * batch_ * m.n_heads * double(kv_len) * m.head_dim;
    std::string name = "attention(split-kv)";
    if (fold) {  // the figures of the two ops it replaces
      fold_rope(da, ra);
      bytes += rope_bytes;
      flops += rope_flops;
      name = (m.has_qk_norm ? "qk_norm+rope+" : "rope+") + name;
    }
    out.push_back({name, bytes, flops, [da](cudaStream_t s) { launch_decode_attention(da, s); }});
  } else {
    PrefillAttentionArgs pa;
    pa.q = q_rope_.data();
    pa.k_cache = k_cache_[layer].data();
    pa.v_cache = v_cache_[layer].data();
    pa.batch = batch_;
    pa.n = n;
    pa.start = start;
    pa.n_heads = m.n_heads;
    pa.n_kv_heads = m.n_kv_heads;
    pa.head_dim = m.head_dim;
    pa.capacity = capacity_;
    pa.out = attn_.data();
    // Causal: token t sees start + t + 1 keys.
    const double pairs = double(n) * start + double(n) * (n + 1) / 2.0;
    out.push_back({"attention(causal)", kv_bytes + 2 * R * QW * kB,
                   4.0 * batch_ * m.n_heads * pairs * m.head_dim,
                   [pa](cudaStream_t s) { launch_prefill_attention(pa, s); }});
  }

  if (gemv) {
    out.push_back({"o_proj(+residual)", w_o + R * QW * kB + 3 * act_h, 2.0 * R * H * QW,
                   [=, this, &w](cudaStream_t s) {
                     launch_gemv_round_residual(attn_.data(), w.w_o.data(), x_.data(), rows, QW,
                                                H, o_proj_.data(), resid_mid_.data(), s);
                   }});
    out.push_back({"add+mlp_norm+gate_up+swiglu", w_gu + 2 * act_h + R * I * kB,
                   2.0 * R * 2 * I * H, [=, this, &w](cudaStream_t s) {
                     launch_add_norm_gate_up_gemv(x_.data(), o_proj_.data(), w.mlp_norm.data(),
                                                  eps, w.w_gate_up.data(), rows, H, I,
                                                  act_.data(), s);
                   }});
  } else if (skinny_norm) {
    // o_proj's weights asked into L2 during the attention (as the GEMV route does).
    out.push_back({"o_proj_skinny", w_o + R * QW * kB + act_h, 2.0 * R * H * QW,
                   [=, this, &w](cudaStream_t s) {
                     skinny_->run(attn_.data(), w.w_o.data(), rows, H, QW, SkinnyEpilogue::Store, nullptr,
                                  nullptr, o_proj_.data(), s, nullptr, true);
                   }});
    out.push_back({"add+mlp_norm+gate_up_skinny+swiglu", w_gu + 3 * act_h + R * I * kB, 2.0 * R * 2 * I * H,
                   [=, this, &w](cudaStream_t s) {
                     SkinnyNorm nm;
                     nm.delta = o_proj_.data();
                     nm.weight = w.mlp_norm.data();
                     nm.eps = eps;
                     nm.resid_out = resid_mid_.data();
                     skinny_->run(x_.data(), w.w_gate_up.data(), rows, I, H, SkinnyEpilogue::SwiGlu, nullptr,
                                  nullptr, act_.data(), s, &nm);
                   }});
  } else if (skinny) {
    out.push_back({"o_proj_skinny", w_o + R * QW * kB + act_h, 2.0 * R * H * QW,
                   [=, this, &w](cudaStream_t s) {
                     skinny_->run(attn_.data(), w.w_o.data(), rows, H, QW, SkinnyEpilogue::Store, nullptr,
                                  nullptr, o_proj_.data(), s);
                   }});
    out.push_back({"residual_add+mlp_norm", 4 * act_h, 0, [=, this, &w](cudaStream_t s) {
                     launch_add_rmsnorm(o_proj_.data(), x_.data(), w.mlp_norm.data(), eps, rows,
                                        H, resid_mid_.data(), normed_.data(), s);
                   }});
    out.push_back({"gate_up_skinny+swiglu", w_gu + act_h + R * I * kB, 2.0 * R * 2 * I * H,
                   [=, this, &w](cudaStream_t s) {
                     skinny_->run(normed_.data(), w.w_gate_up.data(), rows, I, H, SkinnyEpilogue::SwiGlu,
                                  nullptr, nullptr, act_.data(), s);
                   }});
  } else {
    out.push_back({"o_proj_gemm", w_o + R * QW * kB + act_h, 2.0 * R * H * QW,
                   [=, this, &w](cudaStream_t s) {
                     gemm_->run(attn_.data(), w.w_o.data(), rows, H, QW, o_proj_.data(), false,
                                nullptr, nullptr, s, algo);
                   }});
    out.push_back({"residual_add+mlp_norm", 4 * act_h, 0, [=, this, &w](cudaStream_t s) {
                     launch_add_rmsnorm(o_proj_.data(), x_.data(), w.mlp_norm.data(), eps, rows,
                                        H, resid_mid_.data(), normed_.data(), s);
                   }});
    out.push_back({"gate_up_gemm(fp32 out)", w_gu + act_h + R * 2 * I * 4.0,
                   2.0 * R * 2 * I * H, [=, this, &w](cudaStream_t s) {
                     gemm_->run(normed_.data(), w.w_gate_up.data(), rows, 2 * I, H,
                                gate_up_.data(), true, nullptr, nullptr, s, algo);
                   }});
    out.push_back({"swiglu", R * 2 * I * 4.0 + R * I * kB, R * I * 4.0,
                   [=, this](cudaStream_t s) {
                     launch_silu_mul(gate_up_.data(), rows, I, act_.data(), s);
                   }});
  }
  if (gemv) {
    out.push_back({"down_proj+residual", w_d + R * I * kB + 2 * act_h, 2.0 * R * H * I,
                   [=, this, &w](cudaStream_t s) {
                     launch_gemv_residual(act_.data(), w.w_down.data(), resid_mid_.data(), rows, I,
                                          H, resid_out_.data(), s);
                   }});
  } else if (skinny) {
    out.push_back({"down_proj_skinny+residual", w_d + R * I * kB + 2 * act_h, 2.0 * R * H * I,
                   [=, this, &w](cudaStream_t s) {
                     skinny_->run(act_.data(), w.w_down.data(), rows, H, I, SkinnyEpilogue::Residual,
                                  nullptr, resid_mid_.data(), resid_out_.data(), s);
                   }});
  } else {
    out.push_back({"down_proj_gemm+residual", w_d + R * I * kB + 2 * act_h, 2.0 * R * H * I,
                   [=, this, &w](cudaStream_t s) {
                     gemm_->run(act_.data(), w.w_down.data(), rows, H, I, resid_out_.data(), false,
                                nullptr, resid_mid_.data(), s, algo);
                   }});
  }
  return out;
}

void quantize_weights_w8a8(FusedLayerWeights& w, int layer, cudaStream_t s) {
  const auto q = [&](cuda::DeviceBuffer<bf16>& src, int n, const char* name) {
    if (src.size() == 0 || src.size() % static_cast<std::size_t>(n) != 0)
      throw std::invalid_argument(std::string("fp8-w8a8: layer ") + std::to_string(layer) + " " + name +
                                  " has no bf16 weight to quantize");
    const int k = static_cast<int>(src.size() / static_cast<std::size_t>(n));
    Fp8Weight out = quantize_weight_e4m3(src.data(), n, k, "layer " + std::to_string(layer) + " " + name + " weight", s);
    pad_fp8_weight_rows(out, s);
    src.resize(0);  // frees it (quantize_weight_e4m3 synchronized)
    return out;
  };
  // Output rows of each projection from the sizes: q|k|v and gate|up take hidden inputs.
  const int H = static_cast<int>(w.attn_norm.size());
  if (H <= 0) throw std::invalid_argument("fp8-w8a8: layer " + std::to_string(layer) + " has no attn_norm");
  w.qkv8 = q(w.w_qkv, static_cast<int>(w.w_qkv.size() / static_cast<std::size_t>(H)), "q|k|v");
  w.o8 = q(w.w_o, H, "o_proj");
  w.gate_up8 = q(w.w_gate_up, static_cast<int>(w.w_gate_up.size() / static_cast<std::size_t>(H)), "gate|up");
  w.down8 = q(w.w_down, H, "down_proj");
  CUDA_CHECK(cudaStreamSynchronize(s));
}

void FusedLayer::set_w8a8() {
  for (std::size_t l = 0; l < weights_->size(); ++l) {
    const FusedLayerWeights& w = (*weights_)[l];
    if (!w.qkv8.n || !w.o8.n || !w.gate_up8.n || !w.down8.n)
      throw std::logic_error("fused-cuda fp8-w8a8: layer " + std::to_string(l) + " has no E4M3 weights "
                             "(quantize_weights_w8a8 first)");
  }
  fp8_gemm_ = std::make_unique<Fp8Gemm>();  // InputError below compute capability 8.9
  row_checks_.clear();
  for (int g = 0; g < kW8a8Gemms; ++g) row_checks_.push_back(std::make_unique<Fp8RowCheck>());
  w8a8_ = true;
}

// The fp8-w8a8 layer (see fused_layer.h). Bytes: one per weight code, four per scale.
std::vector<cuda::DeviceOp> FusedLayer::ops_w8a8(int layer, int n, int start) {
  if (!kv_fp8_) throw std::logic_error("fused-cuda fp8-w8a8: set_kv_fp8 first (attention reads the fp8-kv cache)");
  const ModelSpec& m = spec_;
  const int rows = batch_ * n, kv_len = start + n;
  ensure_buffers(rows, kv_len);
  FusedLayerWeights& w = (*weights_)[layer];
  const int H = m.hidden, I = m.intermediate, QW = m.q_width(), KW = m.kv_width(), NQKV = QW + 2 * KW;
  const float eps = static_cast<float>(m.rms_eps);
  const double R = rows, act_h = R * H * kB;
  const double w_qkv = double(NQKV) * H + 4.0 * NQKV, w_o = double(H) * QW + 4.0 * H,
               w_gu = 2.0 * I * H + 8.0 * I, w_d = double(H) * I + 4.0 * H;
  const bf16* bias = w.b_qkv.size() ? w.b_qkv.data() : nullptr;
  int* flag[kW8a8Gemms];
  for (int g = 0; g < kW8a8Gemms; ++g) flag[g] = row_checks_[g]->flag();
  // cuBLASLt's FP8 GEMM takes K and N multiples of 16 and unpadded weights only.
  const auto lt_ok = [](const Fp8Weight& f) { return f.stride() == f.k && f.k % 16 == 0 && f.n % 16 == 0; };
  const bool lt = lt_ok(w.qkv8) && lt_ok(w.o8) && lt_ok(w.gate_up8) && lt_ok(w.down8);
  const bool gemv_ok = fp8_gemv_supports(H, true) && fp8_gemv_supports(QW, false) && fp8_gemv_supports(I, false);
  if (!gemv_ok && !lt)
    throw std::invalid_argument("fused-cuda fp8-w8a8: neither the FP8 GEMV kernels nor cuBLASLt take these shapes");
  const bool gemv_forms = gemv_ok && (!lt || (!force_gemm_ && rows <= kGemvRouteMaxRows));
  std::vector<cuda::DeviceOp> out;
  if (gemv_forms) {
    out.push_back({"attn_norm+qkv(fp8)", w_qkv + act_h + R * NQKV * kB, 2.0 * R * NQKV * H,
                   [=, this, &w](cudaStream_t s) {
                     launch_fp8_norm_qkv_gemv(x_.data(), w.attn_norm.data(), eps, w.qkv8, bias, rows, qkv_.data(),
                                              flag[0], s);
                   }});
  } else {
    grow(a8_, std::size_t(rows) * std::max({H, QW, I}));
    grow(a_scales_, std::size_t(rows));
    grow(fp8_acc_, std::size_t(rows) * std::max({NQKV, H, 2 * I}));
    grow(down32_, std::size_t(rows) * H);
    grow(gate_up_, std::size_t(rows) * 2 * I);
    out.push_back({"attn_norm", 2 * act_h, 0, [=, this, &w](cudaStream_t s) {
                     launch_add_rmsnorm(nullptr, x_.data(), w.attn_norm.data(), eps, rows, H, nullptr,
                                        normed_.data(), s);
                   }});
    out.push_back({bias ? "qkv_fp8(quantize+gemm+epilogue+bias)" : "qkv_fp8(quantize+gemm+epilogue)",
                   w_qkv + act_h + R * NQKV * kB, 2.0 * R * NQKV * H, [=, this, &w](cudaStream_t s) {
                     launch_quantize_rows_e4m3(normed_.data(), rows, H, a8_.data(), a_scales_.data(), flag[0], s);
                     fp8_gemm_->run(a8_.data(), a_scales_.data(), w.qkv8, rows, bias, fp8_acc_.data(), qkv_.data(),
                                    false, s);
                   }});
  }
  const RopeArgs ra = rope_args(layer, n, start);
  out.push_back({m.has_qk_norm ? "qk_norm+rope" : "rope", 2.0 * R * NQKV * kB, R * NQKV * 6.0,
                 [ra](cudaStream_t s) { launch_qk_norm_rope(ra, s); }});
  out.push_back(kv_fp8_->append_op(layer, n, start, k_cache_[layer].data(), v_cache_[layer].data()));
  out.push_back(kv_fp8_->attention_op(layer, n, start, q_rope_.data(), attn_.data()));
  if (gemv_forms) {
    out.push_back({"o_proj(fp8)(+residual)", w_o + R * QW * kB + 3 * act_h, 2.0 * R * H * QW,
                   [=, this, &w](cudaStream_t s) {
                     launch_fp8_gemv_round_residual(attn_.data(), w.o8, x_.data(), rows, o_proj_.data(),
                                                    resid_mid_.data(), flag[1], s);
                   }});
    out.push_back({"add+mlp_norm+gate_up(fp8)+swiglu", w_gu + 2 * act_h + R * I * kB, 2.0 * R * 2 * I * H,
                   [=, this, &w](cudaStream_t s) {
                     launch_fp8_add_norm_gate_up_gemv(x_.data(), o_proj_.data(), w.mlp_norm.data(), eps, w.gate_up8,
                                                      rows, act_.data(), flag[2], s);
                   }});
    out.push_back({"down_proj(fp8)+residual", w_d + R * I * kB + 2 * act_h, 2.0 * R * H * I,
                   [=, this, &w](cudaStream_t s) {
                     launch_fp8_gemv_residual(act_.data(), w.down8, resid_mid_.data(), rows, resid_out_.data(),
                                              flag[3], s);
                   }});
    return out;
  }
  out.push_back({"o_proj_fp8(quantize+gemm+epilogue)", w_o + R * QW * kB + act_h, 2.0 * R * H * QW,
                 [=, this, &w](cudaStream_t s) {
                   launch_quantize_rows_e4m3(attn_.data(), rows, QW, a8_.data(), a_scales_.data(), flag[1], s);
                   fp8_gemm_->run(a8_.data(), a_scales_.data(), w.o8, rows, nullptr, fp8_acc_.data(), o_proj_.data(),
                                  false, s);
                 }});
  out.push_back({"residual_add+mlp_norm", 4 * act_h, 0, [=, this, &w](cudaStream_t s) {
                   launch_add_rmsnorm(o_proj_.data(), x_.data(), w.mlp_norm.data(), eps, rows, H, resid_mid_.data(),
                                      normed_.data(), s);
                 }});
  out.push_back({"gate_up_fp8(quantize+gemm+epilogue, fp32 out)", w_gu + act_h + R * 2 * I * 4.0, 2.0 * R * 2 * I * H,
                 [=, this, &w](cudaStream_t s) {
                   launch_quantize_rows_e4m3(normed_.data(), rows, H, a8_.data(), a_scales_.data(), flag[2], s);
                   fp8_gemm_->run(a8_.data(), a_scales_.data(), w.gate_up8, rows, nullptr, fp8_acc_.data(),
                                  gate_up_.data(), true, s);
                 }});
  out.push_back({"swiglu", R * 2 * I * 4.0 + R * I * kB, R * I * 4.0,
                 [=, this](cudaStream_t s) { launch_silu_mul(gate_up_.data(), rows, I, act_.data(), s); }});
  out.push_back({"down_fp8(quantize+gemm+epilogue)+residual", w_d + R * I * kB + 2 * act_h + R * H * 8.0,
                 2.0 * R * H * I, [=, this, &w](cudaStream_t s) {
                   launch_quantize_rows_e4m3(act_.data(), rows, I, a8_.data(), a_scales_.data(), flag[3], s);
                   fp8_gemm_->run(a8_.data(), a_scales_.data(), w.down8, rows, nullptr, fp8_acc_.data(),
                                  down32_.data(), true, s);
                   launch_add_residual_fp32(down32_.data(), resid_mid_.data(), long(rows) * H, resid_out_.data(), s);
                 }});
  return out;
}

void FusedLayer::head(const bf16* final_norm_w, const bf16* lm_head, int rows, cudaStream_t s) {
  grow(normed_, std::size_t(rows) * spec_.hidden);
  grow(logits_, std::size_t(rows) * spec_.vocab);
  launch_add_rmsnorm(nullptr, x_.data(), final_norm_w, static_cast<float>(spec_.rms_eps), rows,
                     spec_.hidden, nullptr, normed_.data(), s);
  gemm_->run(normed_.data(), lm_head, rows, spec_.vocab, spec_.hidden, logits_.data(), true,
             nullptr, nullptr, s,
             invariant_ ? AlgoChoice{invariant_->decode_gemm_rows, invariant_->gemm_split_k} : AlgoChoice{});
}

}  // namespace fusecheck::fused
