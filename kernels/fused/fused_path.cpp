// FusedPath: drives FusedLayer layer by layer for the harness, moving taps to the host.
#include "kernels/fused/fused_path.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "harness/core/checkpoint.h"
#include "harness/core/dtype.h"
#include "harness/core/error.h"
#include "harness/core/fp8.h"
#include "harness/core/shared_per_checkpoint.h"
#include "kernels/common/upload.h"
#include "kernels/common/cuda_check.h"
#include "kernels/common/gpu_path.h"
#include "kernels/common/stream.h"
#include "kernels/fused/attention_decode.h"
#include "kernels/fused/fp8_gemv.h"
#include "kernels/fused/fused_kv_fp8.h"
#include "kernels/fused/fused_layer.h"
#include "kernels/fused/kv_fp8.h"
#include "kernels/metrics/device_taps.h"
#include "reference/w8a8.h"

namespace fusecheck {
namespace {

using bf16 = __nv_bfloat16;

// Host bf16 bits of a tensor (the stored bits when it already is bf16, else one rounding).
std::vector<std::uint16_t> bf16_bits(const TensorView& t) {
  std::vector<std::uint16_t> out(static_cast<std::size_t>(t.numel()));
  if (t.dtype == DType::BF16) {
    std::memcpy(out.data(), t.bytes.data(), out.size() * sizeof(std::uint16_t));
  } else {
    const std::vector<float> f = t.to_float();
    for (std::size_t i = 0; i < f.size(); ++i) out[i] = float_to_bf16(f[i]);
  }
  return out;
}

// Uploads the tensors one after the other into one buffer (q|k|v, gate|up); stored bf16
// goes straight from the checkpoint's bytes, with no host copy.
void upload(cuda::DeviceBuffer<bf16>& dst, std::initializer_list<const TensorView*> parts) {
  std::size_t total = 0;
  for (const TensorView* t : parts) total += static_cast<std::size_t>(t->numel());
  dst.resize(total);
  std::size_t offset = 0;
  for (const TensorView* t : parts) {
    const auto n = static_cast<std::size_t>(t->numel());
    if (t->dtype == DType::BF16) {
      cuda::upload_bytes(dst.data() + offset, t->bytes.data(), n * 2, nullptr);  // pinned double buffers
    } else {
      const auto bits = bf16_bits(*t);
      CUDA_CHECK(cudaMemcpy(dst.data() + offset, bits.data(), n * 2, cudaMemcpyHostToDevice));
    }
    offset += n;
  }
}

// Widened to double on every core (a 512-token layer is ~8M values per instance).
TapMatrix download(const bf16* src, int rows, int cols, long row_stride, long col0) {
  std::vector<std::uint16_t> host(static_cast<std::size_t>(rows) * row_stride);
  CUDA_CHECK(cudaMemcpy(host.data(), src, host.size() * 2, cudaMemcpyDeviceToHost));
  TapMatrix m(rows, cols);
  double* dst = m.data();
#pragma omp parallel for schedule(static)
  for (int r = 0; r < rows; ++r) {
    const std::uint16_t* row = host.data() + static_cast<std::size_t>(r) * row_stride + col0;
    double* out = dst + static_cast<std::ptrdiff_t>(r) * cols;
    for (int c = 0; c < cols; ++c) out[c] = bf16_to_float(row[c]);
  }
  return m;
}

// Every device weight of the fused path, in its layouts (q|k|v, gate|up concatenated).
struct FusedWeights {
  std::shared_ptr<std::vector<fused::FusedLayerWeights>> layers =
      std::make_shared<std::vector<fused::FusedLayerWeights>>();
  cuda::DeviceBuffer<bf16> final_norm, lm_head;
};

std::shared_ptr<const FusedWeights> upload_weights(const Checkpoint& ckpt) {
  auto fw = std::make_shared<FusedWeights>();
  const ModelTensors& m = ckpt.model();
  auto& w = *fw->layers;
  w.resize(m.layers.size());
  for (std::size_t l = 0; l < m.layers.size(); ++l) {
    const LayerTensors& t = m.layers[l];
    upload(w[l].attn_norm, {t.attn_norm});
    upload(w[l].w_qkv, {t.wq, t.wk, t.wv});
    if (t.bq) upload(w[l].b_qkv, {t.bq, t.bk, t.bv});
    if (t.q_norm) upload(w[l].q_norm, {t.q_norm});
    if (t.k_norm) upload(w[l].k_norm, {t.k_norm});
    upload(w[l].w_o, {t.wo});
    upload(w[l].mlp_norm, {t.mlp_norm});
    upload(w[l].w_gate_up, {t.w_gate, t.w_up});
    upload(w[l].w_down, {t.w_down});
  }
  upload(fw->final_norm, {m.final_norm});
  upload(fw->lm_head, {m.lm_head});
  return fw;
}

// fp8-w8a8: the projections in E4M3 (quantized on the device layer by layer at upload, the
// bf16 copies released), norms, biases, final_norm and lm_head bf16. A type of its own so
// that shared_per_checkpoint keeps it apart from the bf16 upload.
struct FusedW8a8Weights : FusedWeights {};

std::shared_ptr<const FusedW8a8Weights> upload_weights_w8a8(const Checkpoint& ckpt) {
  auto fw = std::make_shared<FusedW8a8Weights>();
  const ModelTensors& m = ckpt.model();
  auto& w = *fw->layers;
  w.resize(m.layers.size());
  for (std::size_t l = 0; l < m.layers.size(); ++l) {
    const LayerTensors& t = m.layers[l];
    upload(w[l].attn_norm, {t.attn_norm});
    upload(w[l].w_qkv, {t.wq, t.wk, t.wv});
    if (t.bq) upload(w[l].b_qkv, {t.bq, t.bk, t.bv});
    if (t.q_norm) upload(w[l].q_norm, {t.q_norm});
    if (t.k_norm) upload(w[l].k_norm, {t.k_norm});
    upload(w[l].w_o, {t.wo});
    upload(w[l].mlp_norm, {t.mlp_norm});
    upload(w[l].w_gate_up, {t.w_gate, t.w_up});
    upload(w[l].w_down, {t.w_down});
    fused::quantize_weights_w8a8(w[l], static_cast<int>(l), nullptr);
  }
  upload(fw->final_norm, {m.final_norm});
  upload(fw->lm_head, {m.lm_head});
  return fw;
}

// The twin's `<gemm>.weight.fp8` counts of layer `l` (reference/w8a8.h on the bf16-rounded
// checkpoint weights; the device codes are the same bit for bit, test_fp8_gemv).
std::map<std::string, Headroom> w8a8_weight_headroom(const Checkpoint& ckpt, int l) {
  const LayerTensors& t = ckpt.model().layers.at(static_cast<std::size_t>(l));
  std::map<std::string, Headroom> out;
  for (auto [tensor, point] : {std::pair{t.wq, RoundPoint::q}, std::pair{t.wk, RoundPoint::k},
                               std::pair{t.wv, RoundPoint::v}, std::pair{t.wo, RoundPoint::o_proj},
                               std::pair{t.w_gate, RoundPoint::gate}, std::pair{t.w_up, RoundPoint::up},
                               std::pair{t.w_down, RoundPoint::down}}) {
    const std::vector<float> f = tensor->to_float();
    const auto rows = static_cast<Eigen::Index>(tensor->shape.at(0));
    const auto cols = static_cast<Eigen::Index>(f.size()) / rows;
    ref::Mat<float> m(rows, cols);
    for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = round_to_bf16(f[static_cast<std::size_t>(i)]);
    ref::Fp8Stats st;
    const std::string name(round_point_name(point));
    ref::quantize_rows_e4m3(m, st, "layer " + std::to_string(l) + " " + name + " weight");
    Headroom h;
    h.max_abs = st.max_abs_scaled;
    h.max_finite = kE4m3Max;
    h.n_values = st.n_values;
    h.n_saturated = st.n_clipped;
    h.n_flushed = st.n_flushed;
    h.n_nonfinite_in = st.n_nonfinite;
    h.rounded = true;
    out.emplace(name + ".weight.fp8", h);
  }
  return out;
}

class FusedPath : public cuda::GpuPath {
 public:
  FusedPath(const Checkpoint& ckpt, const PathOptions& opts, std::optional<fused::BatchInvariantPlan> invariant,
            std::string name, std::optional<KvCacheFp8> kv_fp8 = std::nullopt, bool w8a8 = false)
      : GpuPath(ckpt, opts.device_index), invariant_(invariant), name_(std::move(name)), device_(opts.device_index) {
    if (kv_fp8 || w8a8) fused::require_fp8_device(opts.device_index);
    layer_ = std::make_unique<fused::FusedLayer>(ckpt.spec());
    layer_->set_batch_invariant(invariant);
    if (kv_fp8) layer_->set_kv_fp8(*kv_fp8);
    if (w8a8) {
      const ModelSpec& m = ckpt.spec();
      if (!fused::fp8_gemv_supports(m.hidden, true) || !fused::fp8_gemv_supports(m.q_width(), false) ||
          !fused::fp8_gemv_supports(m.intermediate, false)) {
        throw InputError("", name_ + ": the FP8 GEMV kernels need hidden (" + std::to_string(m.hidden) +
                                 "), q width (" + std::to_string(m.q_width()) + ") and intermediate (" +
                                 std::to_string(m.intermediate) + ") multiples of 8 (16-byte bf16 rows)");
      }
      weights_ = shared_per_checkpoint<FusedW8a8Weights>(ckpt, opts.device_index,
                                                         [&] { return upload_weights_w8a8(ckpt); });
      layer_->share_weights(weights_->layers);
      layer_->set_w8a8();
    } else {
      weights_ = shared_per_checkpoint<FusedWeights>(ckpt, opts.device_index, [&] { return upload_weights(ckpt); });
      layer_->share_weights(weights_->layers);
    }
  }

  std::string name() const override { return name_; }
  PathCapabilities capabilities() const override {
    return {.headroom = layer_->kv_fp8() != nullptr, .device_taps = true};
  }
  std::vector<Tap> taps() const override {
    return {Tap::q, Tap::k, Tap::v, Tap::q_rope, Tap::k_rope, Tap::attn, Tap::o_proj,
            Tap::resid_mid, Tap::act, Tap::resid_out};
  }

  // Invariance mode: the first split-KV chunk edges of decode attention (the batch-invariant
  // mode's are the multiples of its fixed chunk), and the A/B switches the kernels read once
  // per process (their headers say what each does).
  ExecutionTraits execution_traits(int batch, int max_kv) const override {
    ExecutionTraits t;
    if (layer_->kv_fp8()) {  // kv_fp8.h's attention (no fold, no tensor-core prefill)
      const int chunk = fused::kv_fp8_decode_chunk(batch, ckpt_.spec().n_heads, max_kv);
      for (int b = chunk; chunk > 0 && b < max_kv && t.kv_split_boundaries.size() < 2; b += chunk) {
        t.kv_split_boundaries.push_back(b);
      }
      t.switches = {"FUSECHECK_FUSED_PDL=0", "FUSECHECK_GEMV_L2PF=0", "FUSECHECK_FP8_KV_GQA=1"};
      if (layer_->w8a8()) t.switches.push_back("FUSECHECK_FP8_GEMV_ROWS=4");  // same per-row order
      return t;
    }
    if (invariant_) {
      const int chunk = invariant_->decode_chunk;
      for (int b = chunk; b < max_kv && t.kv_split_boundaries.size() < 2; b += chunk) t.kv_split_boundaries.push_back(b);
    } else {
      for (int b = fused::kDecodeMinChunk; b < max_kv && t.kv_split_boundaries.size() < 2; b *= 2) {
        t.kv_split_boundaries.push_back(b);
      }
    }
    t.switches = {"FUSECHECK_FUSED_PDL=0", "FUSECHECK_FUSED_ROPE_FOLD=0", "FUSECHECK_FUSED_ROPE_FOLD=all",
                  "FUSECHECK_GEMV_L2PF=0", "FUSECHECK_PREFILL_PV_SPLIT=2"};
    return t;
  }

  void reset(int batch, int capacity) override {
    layer_->reset(batch, capacity);
    kv_len_.assign(ckpt_.model().layers.size(), 0);
    caches_valid_ = true;
  }

  TapMatrix embed(std::span<const std::int32_t> tokens) override {
    // The stored value to FP32, then once to bf16, as the weights are (docs/recipes.md).
    return embed_rows(tokens, [](double x) { return static_cast<double>(round_to_bf16(static_cast<float>(x))); });
  }

  TapSet layer(int l, const TapMatrix& input) override {
    const ModelSpec& s = ckpt_.spec();
    const int start = run_layer(l, TapInput{&input, nullptr});
    const int rows = static_cast<int>(input.rows()), batch = layer_->batch(), n = rows / batch;
    const int QW = s.q_width(), KW = s.kv_width(), NQKV = QW + 2 * KW, D = s.head_dim;
    TapSet taps;
    if (wanted(Tap::q)) taps[Tap::q] = download(layer_->qkv(), rows, QW, NQKV, 0);
    if (wanted(Tap::k)) taps[Tap::k] = download(layer_->qkv(), rows, KW, NQKV, QW);
    if (wanted(Tap::v)) taps[Tap::v] = download(layer_->qkv(), rows, KW, NQKV, QW + KW);
    if (wanted(Tap::q_rope)) taps[Tap::q_rope] = download(layer_->q_rope(), rows, QW, QW, 0);
    if (wanted(Tap::k_rope)) {
      // k_rope from the cache: [batch x kv_heads x capacity x D] -> rows b*n+t, cols h*D+d.
      TapMatrix k_rope(rows, KW);
      const int cap = layer_->capacity();
      for (int b = 0; b < batch; ++b)
        for (int h = 0; h < s.n_kv_heads; ++h) {
          const long at = ((static_cast<long>(b) * s.n_kv_heads + h) * cap + start) * D;
          const TapMatrix block = download(layer_->k_cache(l) + at, n, D, D, 0);
          k_rope.block(b * n, h * D, n, D) = block;
        }
      taps[Tap::k_rope] = std::move(k_rope);
    }
    if (wanted(Tap::attn)) taps[Tap::attn] = download(layer_->attn(), rows, QW, QW, 0);
    if (wanted(Tap::o_proj)) taps[Tap::o_proj] = download(layer_->o_proj(), rows, s.hidden, s.hidden, 0);
    if (wanted(Tap::resid_mid)) taps[Tap::resid_mid] = download(layer_->resid_mid(), rows, s.hidden, s.hidden, 0);
    if (wanted(Tap::act)) taps[Tap::act] = download(layer_->act(), rows, s.intermediate, s.intermediate, 0);
    taps[Tap::resid_out] = download(layer_->resid_out(), rows, s.hidden, s.hidden, 0);
    return taps;
  }

  // Device taps (docs/gpu.md): views of the layer's buffers; q, k, v are column blocks of
  // the q|k|v buffer, k_rope is gathered from the cache into a buffer of its own.
  DeviceTapSet layer_on_device(int l, const TapInput& input) override {
    const ModelSpec& s = ckpt_.spec();
    const int start = run_layer(l, input);
    const int rows = static_cast<int>(input.rows()), batch = layer_->batch(), n = rows / batch;
    const int QW = s.q_width(), KW = s.kv_width(), NQKV = QW + 2 * KW, D = s.head_dim, cap = layer_->capacity();
    k_rope_.resize(std::max(k_rope_.size(), static_cast<std::size_t>(rows) * KW));
    for (int b = 0; b < batch; ++b)
      for (int h = 0; h < s.n_kv_heads; ++h) {
        const long at = ((static_cast<long>(b) * s.n_kv_heads + h) * cap + start) * D;
        CUDA_CHECK(cudaMemcpy2DAsync(k_rope_.data() + static_cast<long>(b) * n * KW + h * D, KW * 2,
                                     layer_->k_cache(l) + at, D * 2, D * 2, n, cudaMemcpyDeviceToDevice, stream_));
      }
    stream_.synchronize();
    DeviceTapSet taps;
    taps[Tap::q] = view(layer_->qkv(), rows, QW, NQKV);
    taps[Tap::k] = view(layer_->qkv() + QW, rows, KW, NQKV);
    taps[Tap::v] = view(layer_->qkv() + QW + KW, rows, KW, NQKV);
    taps[Tap::q_rope] = view(layer_->q_rope(), rows, QW, QW);
    taps[Tap::k_rope] = view(k_rope_.data(), rows, KW, KW);
    taps[Tap::attn] = view(layer_->attn(), rows, QW, QW);
    taps[Tap::o_proj] = view(layer_->o_proj(), rows, s.hidden, s.hidden);
    taps[Tap::resid_mid] = view(layer_->resid_mid(), rows, s.hidden, s.hidden);
    taps[Tap::act] = view(layer_->act(), rows, s.intermediate, s.intermediate);
    taps[Tap::resid_out] = view(layer_->resid_out(), rows, s.hidden, s.hidden);
    return taps;
  }

  DeviceTapSet head_on_device(const TapInput& hidden) override {
    const int rows = run_head(hidden);
    DeviceTapSet taps;
    taps[Tap::final_norm] = view(layer_->final_norm_out(), rows, ckpt_.spec().hidden, ckpt_.spec().hidden);
    DeviceTap logits = view(nullptr, rows, ckpt_.spec().vocab, ckpt_.spec().vocab);
    logits.data = layer_->logits();
    logits.dtype = DType::F32;
    taps[Tap::logits] = logits;
    return taps;
  }

  TapSet head(const TapMatrix& hidden) override {
    const ModelSpec& s = ckpt_.spec();
    const int rows = run_head(TapInput{&hidden, nullptr});
    TapSet taps;
    taps[Tap::final_norm] = download(layer_->final_norm_out(), rows, s.hidden, s.hidden, 0);
    std::vector<float> logits(static_cast<std::size_t>(rows) * s.vocab);
    CUDA_CHECK(cudaMemcpy(logits.data(), layer_->logits(), logits.size() * sizeof(float),
                          cudaMemcpyDeviceToHost));
    TapMatrix lg(rows, s.vocab);
    const auto n_logits = static_cast<std::ptrdiff_t>(logits.size());
    double* lg_data = lg.data();
#pragma omp parallel for schedule(static)
    for (std::ptrdiff_t i = 0; i < n_logits; ++i) lg_data[i] = logits[static_cast<std::size_t>(i)];
    taps[Tap::logits] = std::move(lg);
    return taps;
  }

  // fp8-kv: the FP8 caches' counts as emulated-cpu reports them (reference/rounding.h):
  // |x / s| against 448, clipped (|x / s| > 464) as saturated, flushed to zero. None after
  // time_layer (its appends of random data count too) until reset().
  // fp8-w8a8 adds the twin's `<gemm>.weight.fp8` counts (computed once per layer on the
  // host); its `<gemm>.input.fp8` counts are not kept on the device (docs/recipes.md).
  std::map<std::string, Headroom> headroom(int l) const override {
    std::map<std::string, Headroom> out;
    if (layer_->w8a8() && l >= 0 && l < static_cast<int>(kv_len_.size())) {
      auto it = weight_headroom_.find(l);
      if (it == weight_headroom_.end()) it = weight_headroom_.emplace(l, w8a8_weight_headroom(ckpt_, l)).first;
      out = it->second;
    }
    const fused::FusedKvFp8* kv = layer_->kv_fp8();
    if (!kv || !caches_valid_ || l < 0 || l >= static_cast<int>(kv_len_.size()) || kv_len_[l] == 0) return out;
    const auto [k, v] = kv->counters(l);
    auto put = [&out](const char* name, const fused::KvFp8Counters& c) {
      Headroom h;
      h.max_abs = std::bit_cast<float>(c.max_abs_scaled_bits);
      h.max_finite = kE4m3Max;
      h.n_values = static_cast<std::int64_t>(c.n_values);
      h.n_saturated = static_cast<std::int64_t>(c.n_clipped);
      h.n_flushed = static_cast<std::int64_t>(c.n_flushed);
      h.n_nonfinite_in = static_cast<std::int64_t>(c.n_nonfinite);
      h.rounded = true;
      out.emplace(name, h);
    };
    put("k_cache.fp8", k);
    put("v_cache.fp8", v);
    return out;
  }

  // Times every op of layer `l` for the current batch (1 when reset was never called) at
  // n_new tokens per sequence over kv_len cached positions. The caches and the input are
  // filled with seeded random data: reset() before running layers again.
  std::vector<OpTiming> time_layer(int l, int n_new, int kv_len,
                                   const TimingOptions& opts) override {
    const int batch = layer_->batch() > 0 ? layer_->batch() : 1;
    if (layer_->capacity() < kv_len + n_new || layer_->batch() == 0) {
      layer_->reset(batch, kv_len + n_new);
    }
    caches_valid_ = false;
    layer_->randomize_caches(0x5eed, stream_);
    const std::vector<cuda::DeviceOp> ops = layer_->ops(l, n_new, kv_len);
    layer_->randomize_input(batch * n_new, 0x1a7e, stream_);
    return cuda::time_ops(ops, opts, stream_, cuda::EachOp::graphed);
  }

 private:
  // Checks, then runs layer l on `input` (synchronized); returns the KV position it began at.
  int run_layer(int l, const TapInput& input) {
    const ModelSpec& s = ckpt_.spec();
    if (!caches_valid_) throw std::logic_error("fused-cuda: reset() after time_layer before running layers");
    if (l < 0 || l >= static_cast<int>(kv_len_.size()))
      throw std::out_of_range("fused-cuda: layer " + std::to_string(l) + " out of range");
    const int batch = layer_->batch();
    if (input.cols() != s.hidden || input.rows() % batch != 0 || input.rows() == 0)
      throw std::invalid_argument("fused-cuda: layer input must be [batch*n x hidden]");
    const int rows = static_cast<int>(input.rows()), n = rows / batch, start = kv_len_[l];
    stage_device_input(input);  // before ops(), which may regrow the buffer the input is in
    const std::vector<cuda::DeviceOp> ops = layer_->ops(l, n, start);
    put_input(input);
    if (layer_->w8a8())
      for (int g = 0; g < fused::kW8a8Gemms; ++g) layer_->w8a8_row_check(g).arm(stream_);
    cuda::enqueue_all(ops, stream_);
    stream_.synchronize();
    kv_len_[l] += n;
    if (layer_->w8a8()) {  // NaN or Inf in a GEMM input row: an error naming it, as the twin's
      for (int g = 0; g < fused::kW8a8Gemms; ++g)
        layer_->w8a8_row_check(g).check("layer " + std::to_string(l) + " " + fused::kW8a8GemmNames[g], stream_);
    }
    if (layer_->kv_fp8()) check_kv_fp8_scales(l);
    return start;
  }

  int run_head(const TapInput& hidden) {
    const ModelSpec& s = ckpt_.spec();
    if (hidden.cols() != s.hidden || hidden.rows() == 0)
      throw std::invalid_argument("fused-cuda: head input must be [rows x hidden]");
    const int rows = static_cast<int>(hidden.rows());
    stage_device_input(hidden);
    if (layer_->batch() == 0) layer_->reset(rows, 1);
    put_input(hidden);
    layer_->head(weights_->final_norm.data(), weights_->lm_head.data(), rows, stream_);
    stream_.synchronize();
    return rows;
  }

  // A device input rounded once to bf16 (fused-v1 `layer_input`) into device_in_.
  void stage_device_input(const TapInput& input) {
    if (!input.device) return;
    const auto count = static_cast<std::size_t>(input.rows() * input.cols());
    if (device_in_.size() < count) device_in_.resize(count);
    cuda::copy_input(*input.device, DType::BF16, device_in_.data(), stream_);
  }
  void put_input(const TapInput& input) {
    if (input.host) return upload_input(*input.host);
    CUDA_CHECK(cudaMemcpyAsync(layer_->input(), device_in_.data(),
                               static_cast<std::size_t>(input.rows() * input.cols()) * 2, cudaMemcpyDeviceToDevice,
                               stream_));
  }

  DeviceTap view(const bf16* data, int rows, int cols, int row_stride) const {
    DeviceTap t;
    t.data = data;
    t.dtype = DType::BF16;
    t.rows = rows, t.cols = cols, t.row_stride = row_stride;
    t.device = device_;
    return t;
  }

  void upload_input(const TapMatrix& m) {
    std::vector<std::uint16_t> bits(static_cast<std::size_t>(m.size()));
    for (Eigen::Index r = 0; r < m.rows(); ++r)
      for (Eigen::Index c = 0; c < m.cols(); ++c)
        bits[r * m.cols() + c] = double_to_bf16(m(r, c));  // fused-v1 `layer_input`
    CUDA_CHECK(cudaMemcpyAsync(layer_->input(), bits.data(), bits.size() * 2,
                               cudaMemcpyHostToDevice, stream_));
    stream_.synchronize();
  }

  // A scale of 0, NaN or Inf (all-zero or non-finite rows) is an error naming the layer,
  // tensor and kv head, as emulated-cpu's; the outputs of that call are not returned.
  void check_kv_fp8_scales(int l) const {
    const auto [k, v] = layer_->kv_fp8()->scales(l);
    fused::check_kv_fp8_scales(k, "layer " + std::to_string(l) + " k_cache");
    fused::check_kv_fp8_scales(v, "layer " + std::to_string(l) + " v_cache");
  }

  cuda::Stream stream_;
  std::optional<fused::BatchInvariantPlan> invariant_;
  std::string name_;
  std::unique_ptr<fused::FusedLayer> layer_;
  std::shared_ptr<const FusedWeights> weights_;
  std::vector<int> kv_len_;
  bool caches_valid_ = true;
  int device_ = 0;
  cuda::DeviceBuffer<bf16> device_in_, k_rope_;  // a device input as bf16; k_rope gathered (device taps)
  mutable std::map<int, std::map<std::string, Headroom>> weight_headroom_;  // fp8-w8a8, by layer
};

}  // namespace

std::unique_ptr<Path> make_fused_cuda_path(const Checkpoint& ckpt, const PathOptions& opts,
                                           std::optional<fused::BatchInvariantPlan> invariant) {
  return std::make_unique<FusedPath>(ckpt, opts, invariant, invariant ? kFusedBatchInvariantName : "fused-cuda");
}

std::unique_ptr<Path> make_fused_cuda_fp8_kv_path(const Checkpoint& ckpt, const PathOptions& opts,
                                                  const std::string& recipe, std::optional<KvCacheFp8> kv) {
  const Recipe& r = find_recipe(recipe);
  if (!r.kv_fp8 || r.gemm_fp8 || r.name.rfind("fp8-kv", 0) != 0) {
    throw InputError("", "fused-cuda: " + recipe + " is not an fp8-kv recipe (fp8-kv, fp8-kv-per-head, "
                         "fp8-kv-dynamic, fp8-kv-per-head-dynamic)");
  }
  return std::make_unique<FusedPath>(ckpt, opts, std::nullopt, kFusedFp8KvPrefix + recipe, kv ? kv : r.kv_fp8);
}

std::unique_ptr<Path> make_fused_cuda_w8a8_path(const Checkpoint& ckpt, const PathOptions& opts) {
  const Recipe& r = find_recipe(kFusedW8a8Recipe);
  return std::make_unique<FusedPath>(ckpt, opts, std::nullopt, kFusedW8a8Name, r.kv_fp8, true);
}

}  // namespace fusecheck
