// libfusecheck_flashinfer.so: the flashinfer-cuda path, a plug-in of the C ABI
// (include/fusecheck/path_plugin.hpp). It runs the decoder layer the way a FlashInfer-based
// engine (vLLM, SGLang) does: FlashInfer 0.6.18's RMSNorm / QKRMSNorm / FusedAddRMSNorm,
// RoPE from an FP32 cos|sin cache, batch decode over a paged KV cache (page size 16, NHD,
// one DecodePlan per batch shape, new rows by AppendPagedKVCache) and causal prefill
// attention over the same pages read as dense rows, SiLU-and-mul; fused q|k|v and gate|up GEMMs and the
// o and down GEMMs on cuBLAS bf16 (FP32 accumulation). Every tap the sequence materializes
// is returned in bf16, as the kernels wrote it. Recipe `flashinfer` (docs/recipes.md);
// docs/flashinfer.md says how to fetch, build and run it.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <fmt/format.h>

#include "fusecheck/path_plugin.hpp"
#include "harness/core/dtype.h"
#include "kernels/common/cublas_handle.h"
#include "kernels/common/device_buffer.h"
#include "kernels/common/device_info.h"
#include "kernels/common/device_info_abi.h"
#include "kernels/common/gemm.h"
#include "kernels/common/random_fill.h"
#include "kernels/common/stream.h"
#include "kernels/common/timing.h"
#include "kernels/flashinfer/flashinfer_batch_decode.h"
#include "kernels/flashinfer/flashinfer_ops.h"
#include "reference/ops.h"

namespace fusecheck::flashinfer_path {
namespace {

namespace fp = fusecheck::plugin;
namespace fi = fusecheck::flashinfer_ops;
using bf16 = __nv_bfloat16;
using cuda::DeviceBuffer;

bf16 to_bf16(double x) {
  __nv_bfloat16_raw raw;
  raw.x = double_to_bf16(x);  // one rounding, from double
  return bf16(raw);
}

// Every reason FlashInfer's instantiated kernels cannot run this model, at creation.
void check_spec(const fc_model_spec& s) {
  auto fail = [&](const std::string& why) {
    throw std::invalid_argument(fmt::format(
        "flashinfer-cuda cannot run this model ({} heads, {} kv heads, head_dim {}, hidden {}, intermediate {}): {}",
        s.n_heads, s.n_kv_heads, s.head_dim, s.hidden, s.intermediate, why));
  };
  if (s.n_layers <= 0 || s.hidden <= 0 || s.n_heads <= 0 || s.n_kv_heads <= 0 || s.head_dim <= 0 ||
      s.intermediate <= 0 || s.vocab <= 0) {
    fail("a non-positive size");
  }
  if (!fi::head_dim_supported(s.head_dim)) {
    fail(fmt::format("FlashInfer's attention is instantiated here for head_dim 64 and 128 only, not {}", s.head_dim));
  }
  if (s.n_heads % s.n_kv_heads != 0) fail("the query heads are not a multiple of the kv heads");
  // Decode's group size is a template parameter (DISPATCH_GQA_GROUP_SIZE, utils.cuh:142-165,
  // used by decode.cuh's dispatch): any other group throws there, so refuse it here.
  if (!fi::group_size_supported(s.n_heads / s.n_kv_heads)) {
    fail(fmt::format("GQA group size {} is not one FlashInfer's decode dispatches (1, 2, 3, 4, 6, 8)",
                     s.n_heads / s.n_kv_heads));
  }
  if (s.rope_dim != 0 && s.rope_dim != s.head_dim) fail(fmt::format("partial RoPE ({} dims) is not wired", s.rope_dim));
  // 16-byte vectors: FlashInfer's kernels load 8 bf16 at a time from row starts.
  if (s.hidden % 8 != 0 || s.intermediate % 8 != 0) fail("hidden and intermediate must be multiples of 8");
}

// FUSECHECK_FLASHINFER_DECODE: "batch" (the default: BatchDecodeWithPagedKVCache over the
// paged cache, rows appended by AppendPagedKVCache, as engines run it) or "single" (the
// earlier route, kept to compare and to fall back: SingleDecodeWithKVCache once per
// sequence, rows copied by cudaMemcpy2DAsync). Anything else is refused at creation.
bool single_decode_from_env() {
  const char* v = std::getenv("FUSECHECK_FLASHINFER_DECODE");
  const std::string route = v ? v : "";
  if (route.empty() || route == "batch") return false;
  if (route == "single") return true;
  throw std::invalid_argument(fmt::format("FUSECHECK_FLASHINFER_DECODE={}: expected batch or single", route));
}

// The FP32 cos|sin cache [positions x head_dim] (cos of the head_dim / 2 pairs, then sin)
// that vLLM's RotaryEmbedding._compute_cos_sin_cache builds and hands to FlashInfer:
// FP32 inverse frequencies and FP32 angles, the table HF builds too (reference/rope.cpp,
// rope scalings included), so the emulated twin reads the very same values.
std::vector<float> rope_cos_sin_cache(const fc_model_spec& c, int positions) {
  ModelSpec spec;
  spec.head_dim = c.head_dim, spec.rope_dim = c.rope_dim, spec.rope_theta = c.rope_theta;
  spec.rope_scaling.type = c.rope_scaling_type ? c.rope_scaling_type : "none";
  spec.rope_scaling.factor = c.rope_scaling_factor;
  spec.rope_scaling.low_freq_factor = c.rope_low_freq_factor;
  spec.rope_scaling.high_freq_factor = c.rope_high_freq_factor;
  spec.rope_scaling.original_max_position = c.rope_original_max_position;
  const auto table = ref::rope_table_fp32_angles(spec, 0, positions);
  const int half = c.head_dim / 2;
  std::vector<float> cache(static_cast<std::size_t>(positions) * c.head_dim);
  for (int p = 0; p < positions; ++p) {
    for (int i = 0; i < half; ++i) {
      cache[static_cast<std::size_t>(p) * c.head_dim + i] = table.cos(p, i);
      cache[static_cast<std::size_t>(p) * c.head_dim + half + i] = table.sin(p, i);
    }
  }
  return cache;
}

// A host tensor of the model rounded once to bf16; rows x cols checked.
std::vector<bf16> host_bf16(const fc_tensor& t, const char* role, std::int64_t rows, std::int64_t cols) {
  if (t.rank == 0) throw std::invalid_argument(fmt::format("flashinfer-cuda: the model has no {}", role));
  const std::vector<float> f = fp::to_float(t);
  if (static_cast<std::int64_t>(f.size()) != rows * cols) {
    throw std::invalid_argument(fmt::format("flashinfer-cuda: {} has {} elements, expected [{}, {}]", role, f.size(), rows, cols));
  }
  std::vector<bf16> out(f.size());
  for (std::size_t i = 0; i < f.size(); ++i) out[i] = __float2bfloat16_rn(f[i]);  // exact for bf16 storage
  return out;
}

DeviceBuffer<bf16> upload(const std::vector<bf16>& host, cudaStream_t s) {
  DeviceBuffer<bf16> d;
  d.upload(host, s);
  CUDA_CHECK(cudaStreamSynchronize(s));
  return d;
}

// Concatenates row blocks ([a; b; c]) as the engines' fused q|k|v and gate|up weights.
std::vector<bf16> stack(std::initializer_list<const std::vector<bf16>*> parts) {
  std::vector<bf16> out;
  for (const auto* p : parts) out.insert(out.end(), p->begin(), p->end());
  return out;
}

struct LayerWeights {
  DeviceBuffer<bf16> attn_norm, w_qkv, b_qkv, q_norm, k_norm, wo, mlp_norm, w_gate_up, w_down;
};

// One tap of the sequence: a column block [col, col + width) of a device buffer whose
// rows are `ld` elements apart (the q, k, v slices of q|k|v; gate and up of gate|up).
struct TapSlice {
  fc_tap tap;
  const bf16* base;
  int ld, col, width;
};

// The op that only keeps taps (not an engine's work); left out of the timed "layer".
constexpr const char* kTapCopies = "tap_copies";

struct Op {
  std::string name;
  double bytes = 0, flops = 0;  // least bytes moved (inputs read once, output written once)
  std::function<void(cudaStream_t)> run;
};

class FlashInferPath final : public fp::Path {
 public:
  FlashInferPath(const fc_model& m, int device)
      : spec_(m.spec), device_(device), single_decode_(single_decode_from_env()) {
    check_spec(spec_);
    CUDA_CHECK(cudaSetDevice(device_));
    batch_decode_.emplace(spec_.n_heads, spec_.n_kv_heads, spec_.head_dim);
    cublas_ws_.resize(std::size_t(32) << 20);  // explicit: cuBLAS never allocates inside a timed op
    stream_.emplace();
    cublas_.emplace(stream_->get());
    CUBLAS_CHECK(cublasSetWorkspace(cublas_->get(), cublas_ws_.data(), cublas_ws_.bytes()));
    upload_weights(m);
  }

  // Every tap: the sequence materializes each one (q_normed / k_normed with a q/k norm).
  std::vector<fc_tap> taps() const override {
    std::vector<fc_tap> out;
    for (int t = FC_TAP_ATTN_NORM; t < FC_TAP_COUNT; ++t) {
      if (!spec_.has_qk_norm && (t == FC_TAP_Q_NORMED || t == FC_TAP_K_NORMED)) continue;
      out.push_back(static_cast<fc_tap>(t));
    }
    return out;
  }

  void reset(int batch, int capacity) override {
    if (batch <= 0 || capacity <= 0) throw std::invalid_argument("flashinfer-cuda: reset needs batch, capacity > 0");
    CUDA_CHECK(cudaSetDevice(device_));
    batch_ = batch;
    capacity_ = capacity;
    k_cache_.clear();
    v_cache_.clear();
    k_cache_.resize(static_cast<std::size_t>(spec_.n_layers));
    v_cache_.resize(static_cast<std::size_t>(spec_.n_layers));
    cached_.assign(static_cast<std::size_t>(spec_.n_layers), 0);
    const std::vector<float> cache = rope_cos_sin_cache(spec_, capacity);
    cos_sin_.upload(cache, stream_->get());
    stream_->synchronize();
  }

  fp::HostMatrix embed(const std::int32_t* tokens, std::int64_t n) override {
    const int h = spec_.hidden;
    fp::HostMatrix out(FC_BF16, n, h);
    auto* dst = out.data<bf16>();
    for (std::int64_t i = 0; i < n; ++i) {
      if (tokens[i] < 0 || tokens[i] >= spec_.vocab) {
        throw std::invalid_argument(fmt::format("flashinfer-cuda: token {} outside the vocabulary of {}", tokens[i], spec_.vocab));
      }
      std::memcpy(dst + i * h, embed_.data() + static_cast<std::size_t>(tokens[i]) * h, h * sizeof(bf16));
    }
    return out;
  }

  fp::TapValues layer(int layer, const fp::Input& input) override {
    if (!batch_) throw std::logic_error("flashinfer-cuda: layer() before reset()");
    if (layer < 0 || layer >= spec_.n_layers) throw std::out_of_range(fmt::format("flashinfer-cuda: no layer {}", layer));
    if (input.cols != spec_.hidden || input.rows % batch_ != 0 || input.rows == 0) {
      throw std::invalid_argument(fmt::format("flashinfer-cuda: input [{} x {}] is not batch {} x n rows of {}",
                                              input.rows, input.cols, batch_, spec_.hidden));
    }
    const int n = static_cast<int>(input.rows / batch_);
    upload_rows(x_, input);
    const std::vector<Op> ops = layer_ops(layer, n);
    for (const Op& op : ops) op.run(stream_->get());
    cached_[static_cast<std::size_t>(layer)] += n;
    return download_taps(layer_taps(), static_cast<int>(input.rows));
  }

  fp::TapValues head(const fp::Input& hidden) override {
    if (hidden.cols != spec_.hidden) throw std::invalid_argument("flashinfer-cuda: head input is not [rows x hidden]");
    const int rows = static_cast<int>(hidden.rows);
    upload_rows(x_, hidden);
    final_norm_.resize(static_cast<std::size_t>(rows) * spec_.hidden);
    logits_.resize(static_cast<std::size_t>(rows) * spec_.vocab);
    fi::rms_norm(x_.data(), final_norm_w_.data(), final_norm_.data(), rows, spec_.hidden, eps(), stream_->get());
    cuda::gemm_xwt(cublas_->get(), rows, spec_.vocab, spec_.hidden, final_norm_.data(), lm_head_.data(), logits_.data());
    // keep_taps() is a hint about layer() taps only (harness/core/path.h:87-93): the head returns
    // its final_norm and logits whatever it said. Filtering them here made a run whose
    // last hint was "resid_out only" (decode's KV prefill) get no logits from head().
    return download_taps({{FC_TAP_FINAL_NORM, final_norm_.data(), spec_.hidden, 0, spec_.hidden},
                          {FC_TAP_LOGITS, logits_.data(), spec_.vocab, 0, spec_.vocab}},
                         rows, /*filter=*/false);
  }

  void keep_taps(const std::vector<fc_tap>* taps) override {
    if (taps) {
      keep_ = *taps;
    } else {
      keep_.reset();
    }
  }

  // Per-op times of one layer call of n_new tokens per sequence after kv_len cached ones,
  // on caches of this instance filled with seeded random values (batch from the last
  // reset); the whole layer last, as op "layer". The path's sequences are untouched.
  std::vector<fp::OpTiming> time_layer(int layer, int n_new, int kv_len, const fc_timing_options& o) override {
    if (!batch_) throw std::logic_error("flashinfer-cuda: time_layer() before reset()");
    if (layer < 0 || layer >= spec_.n_layers) throw std::out_of_range(fmt::format("flashinfer-cuda: no layer {}", layer));
    if (n_new <= 0 || kv_len < 0) throw std::invalid_argument("flashinfer-cuda: time_layer needs n_new > 0, kv_len >= 0");
    // The sequences' state, put back however this returns.
    struct Saved {
      FlashInferPath& p;
      int batch, capacity;
      std::vector<DeviceBuffer<bf16>> k, v;
      std::vector<int> cached;
      DeviceBuffer<float> cos_sin;
      ~Saved() {
        p.batch_ = batch, p.capacity_ = capacity, p.k_cache_ = std::move(k), p.v_cache_ = std::move(v);
        p.cached_ = std::move(cached), p.cos_sin_ = std::move(cos_sin);
      }
    } saved{*this, batch_, capacity_, std::move(k_cache_), std::move(v_cache_), cached_, std::move(cos_sin_)};
    reset(saved.batch, kv_len + n_new);
    cached_[static_cast<std::size_t>(layer)] = kv_len;
    const int rows = batch_ * n_new;
    x_.resize(static_cast<std::size_t>(rows) * spec_.hidden);
    cuda::fill_uniform(x_.data(), x_.size(), 0x5eed, -1.0f, 1.0f, stream_->get());
    ensure_cache(layer);
    cuda::fill_uniform(k_cache_[layer].data(), k_cache_[layer].size(), 0x6eed, -1.0f, 1.0f, stream_->get());
    cuda::fill_uniform(v_cache_[layer].data(), v_cache_[layer].size(), 0x7eed, -1.0f, 1.0f, stream_->get());
    // Each op is rerun as it stands; FusedAddRMSNorm, in place, adds o_proj into the
    // residual again each time: the values drift (finitely) over the repetitions, the
    // time does not depend on them.
    const std::vector<Op> ops = layer_ops(layer, n_new);
    std::optional<cuda::L2Flusher> flusher;
    if (o.cold_l2) flusher.emplace(l2_bytes());
    std::vector<fp::OpTiming> out;
    auto add = [&](const std::string& name, double bytes, double flops, const std::function<void(cudaStream_t)>& f) {
      const auto t = cuda::time_on_stream(f, stream_->get(), o.warmup, o.repetitions, flusher ? &*flusher : nullptr);
      out.push_back({name, t.median_ms, t.p10_ms, t.p90_ms, t.repetitions, bytes, flops});
    };
    double bytes = 0, flops = 0;
    for (const Op& op : ops) {
      add(op.name, op.bytes, op.flops, op.run);
      if (op.name != kTapCopies) bytes += op.bytes, flops += op.flops;
    }
    // The layer as an engine runs it: without the copies that only keep taps (the norm
    // then reads stale values in place: same kernels, same shapes, same time).
    add("layer", bytes, flops, [&](cudaStream_t s) {
      for (const Op& op : ops)
        if (op.name != kTapCopies) op.run(s);
    });
    return out;
  }

 private:
  float eps() const { return static_cast<float>(spec_.rms_eps); }
  int qw() const { return spec_.n_heads * spec_.head_dim; }
  int kvw() const { return spec_.n_kv_heads * spec_.head_dim; }
  int qkvw() const { return qw() + 2 * kvw(); }

  std::size_t l2_bytes() const {
    int l2 = 0;
    CUDA_CHECK(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, device_));
    return static_cast<std::size_t>(l2);
  }

  void upload_weights(const fc_model& m) {
    const std::int64_t h = spec_.hidden, q = qw(), kv = kvw(), in = spec_.intermediate, d = spec_.head_dim;
    cudaStream_t s = stream_->get();
    layers_.resize(static_cast<std::size_t>(spec_.n_layers));
    for (int l = 0; l < spec_.n_layers; ++l) {
      const fc_layer_weights& t = m.layers[l];
      LayerWeights& L = layers_[static_cast<std::size_t>(l)];
      L.attn_norm = upload(host_bf16(t.attn_norm, "attn_norm", 1, h), s);
      const auto wq = host_bf16(t.wq, "q_proj", q, h), wk = host_bf16(t.wk, "k_proj", kv, h),
                 wv = host_bf16(t.wv, "v_proj", kv, h);
      L.w_qkv = upload(stack({&wq, &wk, &wv}), s);
      if (spec_.has_qkv_bias) {
        const auto bq = host_bf16(t.bq, "q_bias", 1, q), bk = host_bf16(t.bk, "k_bias", 1, kv),
                   bv = host_bf16(t.bv, "v_bias", 1, kv);
        L.b_qkv = upload(stack({&bq, &bk, &bv}), s);
      }
      if (spec_.has_qk_norm) {
        L.q_norm = upload(host_bf16(t.q_norm, "q_norm", 1, d), s);
        L.k_norm = upload(host_bf16(t.k_norm, "k_norm", 1, d), s);
      }
      L.wo = upload(host_bf16(t.wo, "o_proj", h, q), s);
      L.mlp_norm = upload(host_bf16(t.mlp_norm, "mlp_norm", 1, h), s);
      const auto wg = host_bf16(t.w_gate, "gate_proj", in, h), wu = host_bf16(t.w_up, "up_proj", in, h);
      L.w_gate_up = upload(stack({&wg, &wu}), s);
      L.w_down = upload(host_bf16(t.w_down, "down_proj", h, in), s);
    }
    final_norm_w_ = upload(host_bf16(m.final_norm, "final_norm", 1, h), s);
    lm_head_ = upload(host_bf16(m.lm_head, "lm_head", spec_.vocab, h), s);
    embed_ = host_bf16(m.embed, "embedding", spec_.vocab, h);
  }

  void upload_rows(DeviceBuffer<bf16>& buf, const fp::Input& in) {
    std::vector<bf16> host(static_cast<std::size_t>(in.rows * in.cols));
    for (std::size_t i = 0; i < host.size(); ++i) host[i] = to_bf16(in.data[i]);
    buf.upload(host, stream_->get());
    stream_->synchronize();
  }

  // Token slots per sequence in the cache: the capacity in whole pages, so that sequence b
  // owns pages [b * slots / 16, (b + 1) * slots / 16) and its rows are also dense NHD.
  int slots() const { return (capacity_ + fi::kPageSize - 1) / fi::kPageSize * fi::kPageSize; }

  void ensure_cache(int layer) {
    const std::size_t n = static_cast<std::size_t>(batch_) * slots() * kvw();
    auto& k = k_cache_[static_cast<std::size_t>(layer)];
    auto& v = v_cache_[static_cast<std::size_t>(layer)];
    if (k.size() != n) k.resize(n);
    if (v.size() != n) v.resize(n);
  }

  // Grows (never shrinks) every activation buffer to `rows` rows and the attention
  // workspace to what n queries over kv_len keys need.
  void ensure_activations(int rows, int n, int kv_len) {
    const auto r = static_cast<std::size_t>(rows);
    const std::size_t h = spec_.hidden, in = spec_.intermediate;
    auto grow = [](auto& b, std::size_t need) {
      if (b.size() < need) b.resize(need);
    };
    for (auto* b : {&attn_norm_, &o_proj_, &resid_mid_, &mlp_norm_, &down_, &resid_out_}) grow(*b, r * h);
    grow(qkv_, r * qkvw());
    if (spec_.has_qkv_bias) grow(qkv_acc_, r * qkvw());
    for (auto* b : {&q_normed_, &q_rope_, &attn_}) grow(*b, r * qw());
    for (auto* b : {&k_normed_, &k_rope_}) grow(*b, r * kvw());
    grow(gate_up_, r * 2 * in);
    grow(act_, r * in);
    grow(pos_, r);
    grow(attn_ws_, fi::attention_workspace_elems(n, kv_len, spec_.n_heads, spec_.head_dim));
  }

  // The layer as the engine runs it; reads x_, writes every tap buffer and the cache rows
  // [start, start + n) of each sequence. Running the list does not advance cached_.
  std::vector<Op> layer_ops(int layer, int n) {
    const LayerWeights* L = &layers_.at(static_cast<std::size_t>(layer));  // lambdas copy the pointer
    ensure_cache(layer);
    const int B = batch_, rows = B * n, start = cached_[static_cast<std::size_t>(layer)];
    if (start + n > capacity_) {
      throw std::logic_error(fmt::format("flashinfer-cuda: layer {}: {} + {} tokens exceed the cache capacity {}", layer,
                                         start, n, capacity_));
    }
    ensure_activations(rows, n, start + n);
    {
      std::vector<std::int32_t> pos(static_cast<std::size_t>(rows));
      for (int b = 0; b < B; ++b) {
        for (int t = 0; t < n; ++t) pos[static_cast<std::size_t>(b * n + t)] = start + t;
      }
      CUDA_CHECK(cudaMemcpyAsync(pos_.data(), pos.data(), pos.size() * sizeof(std::int32_t), cudaMemcpyHostToDevice,
                                 stream_->get()));
      stream_->synchronize();
    }
    const int h = spec_.hidden, H = spec_.n_heads, KVH = spec_.n_kv_heads, D = spec_.head_dim,
              in = spec_.intermediate, q = qw(), kv = kvw(), qkv = qkvw();
    const float e = eps();
    const double sz = sizeof(bf16), rh = double(rows) * h;
    bf16* kc = k_cache_[static_cast<std::size_t>(layer)].data();
    bf16* vc = v_cache_[static_cast<std::size_t>(layer)].data();
    const std::size_t cap = static_cast<std::size_t>(slots());
    const fi::PagedKv paged{kc, vc};
    const fi::BatchDecode* batched = single_decode_ ? nullptr : &*batch_decode_;
    if (batched) {
      // Host side, before any op runs (and outside time_layer's timing): the page table and
      // FlashInfer's DecodePlan, redone only when the batch's KV lengths change (once per
      // step: every layer of a step shares it, as an engine plans once per forward).
      const std::vector<int> kv_lens(static_cast<std::size_t>(B), start + n);
      std::vector<int> first_page(static_cast<std::size_t>(B));
      for (int b = 0; b < B; ++b) first_page[static_cast<std::size_t>(b)] = b * static_cast<int>(cap / fi::kPageSize);
      if (!batch_decode_->planned_for(kv_lens, first_page, n)) batch_decode_->plan(kv_lens, first_page, n, stream_->get());
    }
    cublasHandle_t cb = cublas_->get();
    std::vector<Op> ops;
    auto gemm = [&](std::string name, const bf16* x, const bf16* w, const bf16* bias, bf16* y, int out, int k) {
      const double bytes = sz * (double(rows) * k + double(out) * k + double(rows) * out + (bias ? out : 0));
      float* acc = qkv_acc_.data();
      ops.push_back({std::move(name), bytes, cuda::gemm_flops(rows, out, k), [=](cudaStream_t s) {
                       if (!bias) return cuda::gemm_xwt(cb, rows, out, k, x, w, y);
                       // Qwen2's bias: the GEMM writes its FP32 result (bf16 A/B, FP32 C,
                       // FP32 compute) and one kernel adds the bias and rounds once, so the
                       // single rounding of the recipe does not rest on how cuBLAS's beta
                       // epilogue treats a bf16 C (the GPU run saw q/k/v of Qwen2 alone off).
                       const float one = 1.0f, zero = 0.0f;
                       CUBLAS_CHECK(cublasGemmEx(cb, CUBLAS_OP_T, CUBLAS_OP_N, out, rows, k, &one, w, CUDA_R_16BF, k, x,
                                                 CUDA_R_16BF, k, &zero, acc, CUDA_R_32F, out, CUBLAS_COMPUTE_32F,
                                                 CUBLAS_GEMM_DEFAULT));
                       fi::bias_add_round(acc, bias, y, rows, out, s);
                     }});
    };

    ops.push_back({"attn_norm", sz * (2 * rh + h), 4 * rh, [=, this](cudaStream_t s) {
                     fi::rms_norm(x_.data(), L->attn_norm.data(), attn_norm_.data(), rows, h, e, s);
                   }});
    gemm("qkv_proj", attn_norm_.data(), L->w_qkv.data(), L->b_qkv.size() ? L->b_qkv.data() : nullptr, qkv_.data(), qkv, h);
    const bf16* q_in = qkv_.data();
    const bf16* k_in = qkv_.data() + q;
    std::size_t q_ld = qkv, k_ld = qkv;
    if (spec_.has_qk_norm) {
      const double qe = double(rows) * q, ke = double(rows) * kv;
      ops.push_back({"q_norm", sz * (2 * qe + D), 4 * qe, [=, this](cudaStream_t s) {
                       fi::qk_rms_norm(qkv_.data(), qkv, L->q_norm.data(), q_normed_.data(), rows, H, D, e, s);
                     }});
      ops.push_back({"k_norm", sz * (2 * ke + D), 4 * ke, [=, this](cudaStream_t s) {
                       fi::qk_rms_norm(qkv_.data() + q, qkv, L->k_norm.data(), k_normed_.data(), rows, KVH, D, e, s);
                     }});
      q_in = q_normed_.data(), k_in = k_normed_.data();
      q_ld = q, k_ld = kv;
    }
    const bool interleaved = spec_.rope_style == FC_ROPE_INTERLEAVED;
    ops.push_back({"rope_qk", sz * 2.0 * rows * (q + kv) + 4.0 * rows * D, 3.0 * rows * (q + kv),
                   [=, this](cudaStream_t s) {
                     fi::rope_cos_sin_cache(q_in, q_ld, k_in, k_ld, q_rope_.data(), k_rope_.data(), cos_sin_.data(),
                                            pos_.data(), rows, H, KVH, D, interleaved, s);
                   }});
    const std::size_t row_bytes = static_cast<std::size_t>(kv) * sizeof(bf16);
    ops.push_back({"kv_append", sz * 4.0 * rows * kv, 0.0, [=, this](cudaStream_t s) {
                     if (batched) {
                       return batched->append(paged, k_rope_.data(), std::size_t(kv), qkv_.data() + q + kv,
                                              std::size_t(qkv), s);
                     }
                     // Sequence b's n new rows go to rows [start, start + n) of its cache.
                     CUDA_CHECK(cudaMemcpy2DAsync(kc + start * std::size_t(kv), cap * row_bytes, k_rope_.data(),
                                                  n * row_bytes, n * row_bytes, B, cudaMemcpyDeviceToDevice, s));
                     for (int b = 0; b < B; ++b) {
                       CUDA_CHECK(cudaMemcpy2DAsync(vc + (b * cap + start) * std::size_t(kv), row_bytes,
                                                    qkv_.data() + std::size_t(b) * n * qkv + q + kv, qkv * sizeof(bf16),
                                                    row_bytes, n, cudaMemcpyDeviceToDevice, s));
                     }
                   }});
    const int kv_len = start + n;
    const double pairs = double(B) * H * n * kv_len;  // executed (query, key) pairs, causal mask aside
    ops.push_back({n == 1 ? "attention_decode" : "attention_prefill",
                   sz * (2.0 * rows * q + 2.0 * B * kv_len * kv), 4.0 * pairs * D,
                   [=, this](cudaStream_t s) {
                     const float sm_scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(D)));
                     if (batched && n == 1) return batched->run(paged, q_rope_.data(), attn_.data(), sm_scale, s);
                     for (int b = 0; b < B; ++b) {
                       fi::AttentionArgs a;
                       a.q = q_rope_.data() + std::size_t(b) * n * q;
                       a.k = kc + std::size_t(b) * cap * kv;
                       a.v = vc + std::size_t(b) * cap * kv;
                       a.out = attn_.data() + std::size_t(b) * n * q;
                       a.qo_len = n, a.kv_len = kv_len, a.n_heads = H, a.n_kv_heads = KVH, a.head_dim = D;
                       a.sm_scale = sm_scale;
                       fi::attention(a, attn_ws_.data(), s);
                     }
                   }});
    gemm("o_proj", attn_.data(), L->wo.data(), nullptr, o_proj_.data(), h, q);
    // FusedAddRMSNorm works in place (input <- normed, residual <- sum); the copies keep
    // the layer input and o_proj as taps, as an engine's buffers would not.
    ops.push_back({kTapCopies, sz * 4 * rh, 0.0, [=, this](cudaStream_t s) {
                     CUDA_CHECK(cudaMemcpyAsync(resid_mid_.data(), x_.data(), rh * sz, cudaMemcpyDeviceToDevice, s));
                     CUDA_CHECK(cudaMemcpyAsync(mlp_norm_.data(), o_proj_.data(), rh * sz, cudaMemcpyDeviceToDevice, s));
                   }});
    ops.push_back({"fused_add_rmsnorm", sz * (4 * rh + h), 5 * rh, [=, this](cudaStream_t s) {
                     fi::fused_add_rms_norm(mlp_norm_.data(), resid_mid_.data(), L->mlp_norm.data(), rows, h, e, s);
                   }});
    gemm("gate_up_proj", mlp_norm_.data(), L->w_gate_up.data(), nullptr, gate_up_.data(), 2 * in, h);
    const double ri = double(rows) * in;
    ops.push_back({"silu_and_mul", sz * 3 * ri, 6 * ri, [=, this](cudaStream_t s) {
                     fi::silu_and_mul(gate_up_.data(), act_.data(), rows, in, s);
                   }});
    gemm("down_proj", act_.data(), L->w_down.data(), nullptr, down_.data(), h, in);
    ops.push_back({"resid_add_mlp", sz * 3 * rh, rh, [=, this](cudaStream_t s) {
                     fi::residual_add(resid_mid_.data(), down_.data(), resid_out_.data(), std::size_t(rh), s);
                   }});
    return ops;
  }

  std::vector<TapSlice> layer_taps() const {
    const int q = qw(), kv = kvw(), qkv = qkvw(), h = spec_.hidden, in = spec_.intermediate;
    std::vector<TapSlice> t = {{FC_TAP_ATTN_NORM, attn_norm_.data(), h, 0, h},
                               {FC_TAP_Q, qkv_.data(), qkv, 0, q},
                               {FC_TAP_K, qkv_.data(), qkv, q, kv},
                               {FC_TAP_V, qkv_.data(), qkv, q + kv, kv}};
    if (spec_.has_qk_norm) {
      t.push_back({FC_TAP_Q_NORMED, q_normed_.data(), q, 0, q});
      t.push_back({FC_TAP_K_NORMED, k_normed_.data(), kv, 0, kv});
    }
    t.insert(t.end(), {{FC_TAP_Q_ROPE, q_rope_.data(), q, 0, q},
                       {FC_TAP_K_ROPE, k_rope_.data(), kv, 0, kv},
                       {FC_TAP_ATTN, attn_.data(), q, 0, q},
                       {FC_TAP_O_PROJ, o_proj_.data(), h, 0, h},
                       {FC_TAP_RESID_MID, resid_mid_.data(), h, 0, h},
                       {FC_TAP_MLP_NORM, mlp_norm_.data(), h, 0, h},
                       {FC_TAP_GATE, gate_up_.data(), 2 * in, 0, in},
                       {FC_TAP_UP, gate_up_.data(), 2 * in, in, in},
                       {FC_TAP_ACT, act_.data(), in, 0, in},
                       {FC_TAP_DOWN, down_.data(), h, 0, h},
                       {FC_TAP_RESID_OUT, resid_out_.data(), h, 0, h}});
    return t;
  }

  bool wanted(fc_tap t) const {
    return !keep_ || t == FC_TAP_RESID_OUT || std::find(keep_->begin(), keep_->end(), t) != keep_->end();
  }

  // Each wanted slice to the host as a dense [rows x width] bf16 matrix (exact).
  // filter: drop the slices keep_taps() said are not wanted (layer taps only).
  fp::TapValues download_taps(const std::vector<TapSlice>& slices, int rows, bool filter = true) {
    fp::TapValues out;
    for (const TapSlice& t : slices) {
      if (filter && !wanted(t.tap)) continue;
      fp::HostMatrix m(FC_BF16, rows, t.width);
      CUDA_CHECK(cudaMemcpy2DAsync(m.data<bf16>(), t.width * sizeof(bf16), t.base + t.col, t.ld * sizeof(bf16),
                                   t.width * sizeof(bf16), rows, cudaMemcpyDeviceToHost, stream_->get()));
      out.emplace_back(t.tap, std::move(m));
    }
    stream_->synchronize();
    return out;
  }

  fc_model_spec spec_;
  int device_;
  bool single_decode_;                            // FUSECHECK_FLASHINFER_DECODE=single
  std::optional<fi::BatchDecode> batch_decode_;  // plan and page table, shared by the layers
  std::optional<cuda::Stream> stream_;
  std::optional<cuda::CublasHandle> cublas_;
  DeviceBuffer<unsigned char> cublas_ws_;
  std::vector<LayerWeights> layers_;
  DeviceBuffer<bf16> final_norm_w_, lm_head_;
  std::vector<bf16> embed_;
  int batch_ = 0, capacity_ = 0;
  // Per layer [batch][slots()][kv width]: FlashInfer's NHD pages of 16, sequence-major.
  std::vector<DeviceBuffer<bf16>> k_cache_, v_cache_;
  std::vector<int> cached_;
  DeviceBuffer<float> cos_sin_;  // [capacity x head_dim]: cos | sin, FP32
  DeviceBuffer<float> qkv_acc_;  // [rows x qkv width]: the FP32 q|k|v GEMM result, Qwen2 (bias) only
  DeviceBuffer<std::int32_t> pos_;
  DeviceBuffer<bf16> x_, attn_norm_, qkv_, q_normed_, k_normed_, q_rope_, k_rope_, attn_, o_proj_, resid_mid_,
      mlp_norm_, gate_up_, act_, down_, resid_out_, attn_ws_, final_norm_, logits_;
  std::optional<std::vector<fc_tap>> keep_;
};

std::unique_ptr<fp::Path> create(const std::string& name, const fc_model& model, const fc_create_options& o) {
  if (name != "flashinfer-cuda") throw std::invalid_argument("no path named '" + name + "' in libfusecheck_flashinfer.so");
  return std::make_unique<FlashInferPath>(model, o.device_index);
}

std::int32_t device_count() { return cuda::visible_device_count(); }

int device_info(std::int32_t index, std::int32_t measure_bandwidth, fc_device_info* out, fc_error* err) {
  return fp::detail::guarded(err, [&] {
    const auto prov = cuda::query_device(index, measure_bandwidth != 0);
    *out = cuda::to_abi(prov, "cublas " + std::to_string(prov.cublas_version) +
                                  ", flashinfer " FUSECHECK_FLASHINFER_VERSION);
  });
}

const fc_path_desc kPaths[] = {
    {"flashinfer-cuda", "cuda", "flashinfer", "fused", FC_BF16,
     "FlashInfer " FUSECHECK_FLASHINFER_VERSION " kernels as engines run them (norms, RoPE, paged batch decode and "
     "prefill attention, SiLU-and-mul) around cuBLAS bf16 GEMMs, flashinfer recipe"},
};

}  // namespace
}  // namespace fusecheck::flashinfer_path

FUSECHECK_EXPORT_GPU_PLUGIN("fusecheck-flashinfer", "flashinfer-" FUSECHECK_FLASHINFER_VERSION,
                            fusecheck::flashinfer_path::kPaths, nullptr, fusecheck::flashinfer_path::create,
                            fusecheck::flashinfer_path::device_count, fusecheck::flashinfer_path::device_info)
