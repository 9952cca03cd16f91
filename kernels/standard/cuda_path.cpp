// CudaDecoderPath: weights from a checkpoint, taps to the host, per-op timing.
#include "kernels/standard/cuda_path.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <type_traits>
#include <stdexcept>

#include <fmt/format.h>

#include "harness/core/dtype.h"
#include "harness/core/error.h"
#include "harness/core/shared_per_checkpoint.h"
#include "kernels/common/device_op.h"
#include "kernels/common/random_fill.h"
#include "kernels/common/upload.h"
#include "kernels/metrics/device_taps.h"
#include "reference/normal_sampler.h"

namespace fusecheck::cuda {

namespace {

// One value to the storage type, rounded once from double.
template <class T>
T to_storage(double x);
template <>
float to_storage<float>(double x) { return static_cast<float>(x); }
template <>
__nv_bfloat16 to_storage<__nv_bfloat16>(double x) {
  __nv_bfloat16_raw raw;
  raw.x = double_to_bf16(x);
  return __nv_bfloat16(raw);
}

double from_storage(float x) { return x; }
double from_storage(__nv_bfloat16 x) {
  return bf16_to_float(static_cast<__nv_bfloat16_raw>(x).x);
}

void check_spec(const Checkpoint& ckpt) {
  const ModelSpec& s = ckpt.spec();
  const std::string where = ckpt.path().string();
  if (s.n_layers <= 0 || s.hidden <= 0 || s.n_heads <= 0 || s.n_kv_heads <= 0 || s.head_dim <= 0 ||
      s.intermediate <= 0 || s.vocab <= 0) {
    throw InputError(where, "model spec has a non-positive size");
  }
  if (s.n_heads % s.n_kv_heads != 0) {
    throw InputError(where, fmt::format("{} attention heads are not a multiple of {} kv heads",
                                        s.n_heads, s.n_kv_heads));
  }
  if ((s.rope_dim != 0 && s.rope_dim != s.head_dim) || s.head_dim % 2 != 0) {
    throw InputError(where, fmt::format("RoPE over {} of {} head dims is not supported", s.rope_dim,
                                        s.head_dim));
  }
  const ModelTensors& m = ckpt.model();
  if (!m.embed || !m.final_norm || !m.lm_head || static_cast<int>(m.layers.size()) != s.n_layers) {
    throw InputError(where, "checkpoint lacks the embedding, final norm, lm_head or a layer");
  }
}

// Uploads a tensor rounded once to T after checking it has rows x cols elements.
// `staging` is reused across the tensors of one upload_weights (upload.h).
template <class T>
DeviceBuffer<T> upload(const Checkpoint& ckpt, const TensorView* t, const char* role,
                       std::int64_t rows, std::int64_t cols, cudaStream_t s, FloatUploadScratch& staging) {
  if (!t) throw InputError(ckpt.path().string(), fmt::format("missing tensor for {}", role));
  if (t->numel() != rows * cols || (rows > 1 && t->rows() != rows)) {
    throw InputError(t->file, fmt::format("tensor {} ({}) has {} elements, expected [{}, {}]", t->name,
                                          role, t->numel(), rows, cols));
  }
  DeviceBuffer<T> d;
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    if (t->dtype == DType::BF16) {  // stored bits are already the one rounding
      d.resize(static_cast<std::size_t>(t->numel()));
      upload_bytes(d.data(), t->bytes.data(), d.bytes(), s);
      return d;
    }
  }
  if constexpr (std::is_same_v<T, float>) {  // float -> double -> float is the identity
    d.resize(static_cast<std::size_t>(t->numel()));
    upload_as_float(*t, d.data(), s, staging);  // 16-bit storage widened on the device
    return d;
  }
  const std::vector<float> f = t->to_float();
  std::vector<T> v(f.size());
  const auto n = static_cast<std::ptrdiff_t>(f.size());
#pragma omp parallel for schedule(static)
  for (std::ptrdiff_t i = 0; i < n; ++i) v[static_cast<std::size_t>(i)] = to_storage<T>(f[static_cast<std::size_t>(i)]);
  d.upload(v, s);
  CUDA_CHECK(cudaStreamSynchronize(s));  // v is freed on return
  return d;
}

template <class T>
void upload_rows(DeviceBuffer<T>& buf, const TapMatrix& m, cudaStream_t s) {
  std::vector<T> host(static_cast<std::size_t>(m.size()));
  const auto n = static_cast<std::ptrdiff_t>(host.size());
#pragma omp parallel for schedule(static)
  for (std::ptrdiff_t i = 0; i < n; ++i) host[static_cast<std::size_t>(i)] = to_storage<T>(m.data()[i]);
  CUDA_CHECK(cudaMemcpyAsync(buf.data(), host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice, s));
  CUDA_CHECK(cudaStreamSynchronize(s));
}

// Uploads every weight of `ckpt` rounded once to T.
template <class T>
std::shared_ptr<const EngineWeights<T>> upload_weights(const Checkpoint& ckpt) {
  const ModelSpec& s = ckpt.spec();
  Stream up;
  FloatUploadScratch staging;  // FP32 weights pass through it (upload.h)
  const ModelTensors& m = ckpt.model();
  auto w = std::make_shared<EngineWeights<T>>();
  std::vector<DeviceLayer<T>>& layers = w->layers;
  layers.resize(static_cast<std::size_t>(s.n_layers));
  const std::int64_t h = s.hidden, qw = s.q_width(), kvw = s.kv_width(), in = s.intermediate, d = s.head_dim;
  for (int l = 0; l < s.n_layers; ++l) {
    const LayerTensors& t = m.layers[static_cast<std::size_t>(l)];
    DeviceLayer<T>& L = layers[static_cast<std::size_t>(l)];
    L.attn_norm = upload<T>(ckpt, t.attn_norm, "attn_norm", 1, h, up, staging);
    L.wq = upload<T>(ckpt, t.wq, "q_proj", qw, h, up, staging);
    L.wk = upload<T>(ckpt, t.wk, "k_proj", kvw, h, up, staging);
    L.wv = upload<T>(ckpt, t.wv, "v_proj", kvw, h, up, staging);
    if (s.has_qkv_bias) {
      L.bq = upload<T>(ckpt, t.bq, "q_bias", 1, qw, up, staging);
      L.bk = upload<T>(ckpt, t.bk, "k_bias", 1, kvw, up, staging);
      L.bv = upload<T>(ckpt, t.bv, "v_bias", 1, kvw, up, staging);
    }
    if (s.has_qk_norm) {
      L.q_norm = upload<T>(ckpt, t.q_norm, "q_norm", 1, d, up, staging);
      L.k_norm = upload<T>(ckpt, t.k_norm, "k_norm", 1, d, up, staging);
    }
    L.wo = upload<T>(ckpt, t.wo, "o_proj", h, qw, up, staging);
    L.mlp_norm = upload<T>(ckpt, t.mlp_norm, "mlp_norm", 1, h, up, staging);
    L.w_gate = upload<T>(ckpt, t.w_gate, "gate_proj", in, h, up, staging);
    L.w_up = upload<T>(ckpt, t.w_up, "up_proj", in, h, up, staging);
    L.w_down = upload<T>(ckpt, t.w_down, "down_proj", h, in, up, staging);
  }
  DeviceHead<T>& head = w->head;
  head.final_norm = upload<T>(ckpt, m.final_norm, "final_norm", 1, h, up, staging);
  head.lm_head = upload<T>(ckpt, m.lm_head, "lm_head", s.vocab, h, up, staging);
  return w;
}

}  // namespace

template <class T>
CudaDecoderPath<T>::CudaDecoderPath(const Checkpoint& ckpt, CudaPathConfig cfg)
    : GpuPath(ckpt, cfg.engine.device), cfg_(std::move(cfg)) {
  check_spec(ckpt);
  const ModelSpec& s = ckpt.spec();
  engine_ = std::make_unique<DecoderEngine<T>>(
      s, shared_per_checkpoint<EngineWeights<T>>(ckpt, cfg_.engine.device, [&] { return upload_weights<T>(ckpt); }),
      cfg_.engine);
}

template <class T>
std::vector<Tap> CudaDecoderPath<T>::taps() const {
  std::vector<Tap> out;
  for (Tap t : kLayerTaps) {
    if (!ckpt_.spec().has_qk_norm && (t == Tap::q_normed || t == Tap::k_normed)) continue;
    out.push_back(t);
  }
  out.insert(out.end(), kHeadTaps.begin(), kHeadTaps.end());
  return out;
}

template <class T>
void CudaDecoderPath<T>::reset(int batch, int capacity) {
  if (batch <= 0 || capacity <= 0) throw std::invalid_argument(cfg_.name + ": reset needs batch, capacity > 0");
  state_.reset();  // free the old caches first
  state_.emplace(engine_->make_state(batch, capacity));
  perturb_calls_ = 0;
}

template <class T>
void CudaDecoderPath<T>::PinnedDeleter::operator()(T* p) const {
  if (p) cudaFreeHost(p);  // no CUDA_CHECK: a destructor must not throw
}

template <class T>
TapMatrix CudaDecoderPath<T>::download(const DeviceBuffer<T>& buf, int rows, int cols) {
  const std::size_t count = static_cast<std::size_t>(rows) * static_cast<std::size_t>(cols);
  TapMatrix m(rows, cols);
  if (count == 0) return m;
  if (staging_size_ < count) {
    staging_.reset();
    T* p = nullptr;
    CUDA_CHECK(cudaMallocHost(reinterpret_cast<void**>(&p), count * sizeof(T)));
    staging_.reset(p);
    staging_size_ = count;
  }
  cudaStream_t s = engine_->stream();
  CUDA_CHECK(cudaMemcpyAsync(staging_.get(), buf.data(), count * sizeof(T), cudaMemcpyDeviceToHost, s));
  CUDA_CHECK(cudaStreamSynchronize(s));
  // Widening to double on every core: a 512-token layer is ~12.6M values per path.
  const T* src = staging_.get();
  double* dst = m.data();
  const auto n = static_cast<std::ptrdiff_t>(count);
#pragma omp parallel for schedule(static)
  for (std::ptrdiff_t i = 0; i < n; ++i) dst[i] = from_storage(src[i]);
  return m;
}

template <class T>
void CudaDecoderPath<T>::set_perturbation(std::optional<Perturbation> p) {
  if constexpr (!std::is_same_v<T, float>) {
    if (p) throw std::logic_error(cfg_.name + " does not support perturbation (reference paths only)");
  }
  if (p) {
    const ModelSpec& s = ckpt_.spec();
    const bool head_tap = p->tap == Tap::final_norm || p->tap == Tap::logits;
    if (!head_tap && (p->layer < 0 || p->layer >= s.n_layers)) {
      throw InputError("", fmt::format("perturbation layer {} is outside 0..{}", p->layer, s.n_layers - 1));
    }
    if (!s.has_qk_norm && (p->tap == Tap::q_normed || p->tap == Tap::k_normed)) {
      throw InputError("", fmt::format("perturbation tap {} does not exist in a {} model", tap_name(p->tap),
                                       s.architecture));
    }
  }
  perturbation_ = p;
  perturb_calls_ = 0;
}

// Same arithmetic as ref::DecoderPath::perturb: rms in double over the tap's values, one
// sampler stream per call seeded from seed and the call count, noise added in T.
template <class T>
void CudaDecoderPath<T>::perturb_buffer(DeviceBuffer<T>& buf, std::size_t count) {
  cudaStream_t s = engine_->stream();
  std::vector<T> host(count);
  CUDA_CHECK(cudaMemcpyAsync(host.data(), buf.data(), count * sizeof(T), cudaMemcpyDeviceToHost, s));
  CUDA_CHECK(cudaStreamSynchronize(s));
  double sumsq = 0;
  for (const T& v : host) sumsq += from_storage(v) * from_storage(v);
  const double rms = std::sqrt(sumsq / static_cast<double>(std::max<std::size_t>(1, count)));
  ref::NormalSampler normal(perturbation_->seed ^ (0x9e3779b97f4a7c15ull * ++perturb_calls_));
  const double scale = perturbation_->relative_size * rms;
  if constexpr (std::is_same_v<T, float>) {
    for (T& v : host) v += static_cast<float>(scale * normal.next());
  } else {
    for (T& v : host) v = to_storage<T>(from_storage(v) + scale * normal.next());
  }
  CUDA_CHECK(cudaMemcpyAsync(buf.data(), host.data(), count * sizeof(T), cudaMemcpyHostToDevice, s));
  CUDA_CHECK(cudaStreamSynchronize(s));  // host is freed on return
}

template <class T>
void CudaDecoderPath<T>::run_ops(const std::vector<DeviceOp>& ops, int perturb_after, DeviceBuffer<T>* buf,
                                 std::size_t count) {
  for (std::size_t i = 0; i < ops.size(); ++i) {
    ops[i].enqueue(engine_->stream());
    if (static_cast<int>(i) == perturb_after) perturb_buffer(*buf, count);
  }
}

template <class T>
DecoderState<T>& CudaDecoderPath<T>::state(const char* what) {
  if (!state_) throw std::logic_error(cfg_.name + ": " + what + " before reset()");
  return *state_;
}

template <class T>
TapMatrix CudaDecoderPath<T>::embed(std::span<const std::int32_t> tokens) {
  return embed_rows(tokens, [](double x) { return from_storage(to_storage<T>(x)); });
}

template <class T>
DeviceTap CudaDecoderPath<T>::view(const DeviceBuffer<T>& buf, int rows, int cols) const {
  DeviceTap t;
  t.data = buf.data();
  t.dtype = std::is_same_v<T, float> ? DType::F32 : DType::BF16;
  t.rows = rows, t.cols = cols, t.row_stride = cols;
  t.device = cfg_.engine.device;
  return t;
}

template <class T>
std::vector<typename CudaDecoderPath<T>::TapBuffer> CudaDecoderPath<T>::run_layer(int l, const TapInput& input,
                                                                                   int& rows_out) {
  const ModelSpec& s = ckpt_.spec();
  DecoderState<T>& st = state("layer()");
  if (l < 0 || l >= s.n_layers) throw std::invalid_argument(fmt::format("{}: no layer {}", cfg_.name, l));
  if (input.cols() != s.hidden || input.rows() == 0 || input.rows() % st.batch != 0) {
    throw std::invalid_argument(fmt::format("{}: layer input is {}x{}, expected (batch {} x n) x {}",
                                            cfg_.name, input.rows(), input.cols(), st.batch, s.hidden));
  }
  const int rows = static_cast<int>(input.rows());
  rows_out = rows;
  const int n = rows / st.batch;
  const int past = st.cached[static_cast<std::size_t>(l)];
  if (past + n > st.capacity) {
    throw InputError("", fmt::format("{}: layer {} holds {} tokens; {} more exceed its capacity {}",
                                     cfg_.name, l, past, n, st.capacity));
  }
  cudaStream_t stream = engine_->stream();
  if (input.device) {  // converted first: it may be one of the buffers ensure() or poison() touch
    const auto count = static_cast<std::size_t>(rows) * static_cast<std::size_t>(s.hidden);
    if (device_in_.size() < count) device_in_.resize(count);
    constexpr DType kType = std::is_same_v<T, float> ? DType::F32 : DType::BF16;
    copy_input(*input.device, kType, device_in_.data(), stream);
  }
  st.act.ensure(s, rows);
  if (cfg_.poison_activations) st.act.poison(stream);
  if (input.device) {
    CUDA_CHECK(cudaMemcpyAsync(st.act.input.data(), device_in_.data(),
                               static_cast<std::size_t>(rows) * static_cast<std::size_t>(s.hidden) * sizeof(T),
                               cudaMemcpyDeviceToDevice, stream));
  } else {
    upload_rows(st.act.input, *input.host, stream);
  }

  auto& A = st.act;
  const int qw = s.q_width(), kvw = s.kv_width(), h = s.hidden, in = s.intermediate;
  std::vector<TapBuffer> tap_buffers = {
      {Tap::attn_norm, &A.attn_norm, h, "attn_norm"}, {Tap::q, &A.q, qw, "q_proj"},
      {Tap::k, &A.k, kvw, "k_proj"},                  {Tap::v, &A.v, kvw, "v_proj"},
      {Tap::q_normed, &A.q_normed, qw, "q_norm"},     {Tap::k_normed, &A.k_normed, kvw, "k_norm"},
      {Tap::q_rope, &A.q_rope, qw, "rope_q"},         {Tap::k_rope, &A.k_rope, kvw, "rope_k"},
      {Tap::attn, &A.attn, qw, "attention"},          {Tap::o_proj, &A.o_proj, h, "o_proj"},
      {Tap::resid_mid, &A.resid_mid, h, "resid_add_attn"}, {Tap::mlp_norm, &A.mlp_norm, h, "mlp_norm"},
      {Tap::gate, &A.gate, in, "gate_proj"},          {Tap::up, &A.up, in, "up_proj"},
      {Tap::act, &A.act, in, "silu_mul"},             {Tap::down, &A.down, h, "down_proj"},
      {Tap::resid_out, &A.resid_out, h, "resid_add_mlp"},
  };
  const std::vector<DeviceOp> ops = engine_->layer_ops(st, l, n);
  int perturb_after = -1;
  DeviceBuffer<T>* perturb_buf = nullptr;
  std::size_t perturb_count = 0;
  if (perturbation_ && perturbation_->layer == l) {
    for (const auto& tb : tap_buffers) {
      if (tb.tap != perturbation_->tap) continue;
      for (std::size_t i = 0; i < ops.size(); ++i) {
        if (ops[i].name == tb.op) perturb_after = static_cast<int>(i);
      }
      perturb_buf = tb.buf;
      perturb_count = static_cast<std::size_t>(rows) * static_cast<std::size_t>(tb.cols);
    }
    if (perturb_after < 0) {
      throw std::logic_error(fmt::format("{}: no op writes tap {}", cfg_.name, tap_name(perturbation_->tap)));
    }
  }
  run_ops(ops, perturb_after, perturb_buf, perturb_count);
  CUDA_CHECK(cudaStreamSynchronize(stream));
  st.cached[static_cast<std::size_t>(l)] += n;
  if (!s.has_qk_norm) {
    std::erase_if(tap_buffers, [](const TapBuffer& tb) { return tb.tap == Tap::q_normed || tb.tap == Tap::k_normed; });
  }
  return tap_buffers;
}

template <class T>
TapSet CudaDecoderPath<T>::layer(int l, const TapMatrix& input) {
  int rows = 0;
  const auto tap_buffers = run_layer(l, TapInput{&input, nullptr}, rows);
  TapSet taps;
  for (const auto& tb : tap_buffers) {
    if (wanted(tb.tap)) taps[tb.tap] = download(*tb.buf, rows, tb.cols);
  }
  return taps;
}

template <class T>
DeviceTapSet CudaDecoderPath<T>::layer_on_device(int l, const TapInput& input) {
  int rows = 0;
  const auto tap_buffers = run_layer(l, input, rows);
  DeviceTapSet taps;
  for (const auto& tb : tap_buffers) taps[tb.tap] = view(*tb.buf, rows, tb.cols);
  return taps;
}

template <class T>
void CudaDecoderPath<T>::run_head(const TapInput& hidden, int& rows_out) {
  const ModelSpec& s = ckpt_.spec();
  if (hidden.cols() != s.hidden || hidden.rows() == 0) {
    throw std::invalid_argument(fmt::format("{}: head input is {}x{}, expected n x {}", cfg_.name,
                                            hidden.rows(), hidden.cols(), s.hidden));
  }
  const int rows = static_cast<int>(hidden.rows());
  rows_out = rows;
  cudaStream_t stream = engine_->stream();
  const auto r = static_cast<std::size_t>(rows);
  if (hidden.device) {  // converted before head_in_ may be regrown
    if (device_in_.size() < r * s.hidden) device_in_.resize(r * s.hidden);
    constexpr DType kType = std::is_same_v<T, float> ? DType::F32 : DType::BF16;
    copy_input(*hidden.device, kType, device_in_.data(), stream);
  }
  if (head_in_.size() < r * s.hidden) {
    head_in_.resize(r * s.hidden);
    head_norm_.resize(r * s.hidden);
    head_logits_.resize(r * s.vocab);
  }
  if (cfg_.poison_activations) {
    head_norm_.fill_poison(stream);
    head_logits_.fill_poison(stream);
  }
  if (hidden.device) {
    CUDA_CHECK(cudaMemcpyAsync(head_in_.data(), device_in_.data(), r * s.hidden * sizeof(T), cudaMemcpyDeviceToDevice,
                               stream));
  } else {
    upload_rows(head_in_, *hidden.host, stream);
  }
  const std::vector<DeviceOp> ops = engine_->head_ops(head_in_.data(), head_norm_.data(), head_logits_.data(), rows);
  // head_ops: 0 final_norm, 1 lm_head.
  int perturb_after = -1;
  DeviceBuffer<T>* perturb_buf = nullptr;
  std::size_t perturb_count = 0;
  if (perturbation_ && perturbation_->tap == Tap::final_norm) {
    perturb_after = 0;
    perturb_buf = &head_norm_;
    perturb_count = r * static_cast<std::size_t>(s.hidden);
  } else if (perturbation_ && perturbation_->tap == Tap::logits) {
    perturb_after = 1;
    perturb_buf = &head_logits_;
    perturb_count = r * static_cast<std::size_t>(s.vocab);
  }
  run_ops(ops, perturb_after, perturb_buf, perturb_count);
  CUDA_CHECK(cudaStreamSynchronize(stream));
}

template <class T>
TapSet CudaDecoderPath<T>::head(const TapMatrix& hidden) {
  int rows = 0;
  run_head(TapInput{&hidden, nullptr}, rows);
  TapSet taps;
  taps[Tap::final_norm] = download(head_norm_, rows, ckpt_.spec().hidden);
  taps[Tap::logits] = download(head_logits_, rows, ckpt_.spec().vocab);
  return taps;
}

template <class T>
DeviceTapSet CudaDecoderPath<T>::head_on_device(const TapInput& hidden) {
  int rows = 0;
  run_head(hidden, rows);
  DeviceTapSet taps;
  taps[Tap::final_norm] = view(head_norm_, rows, ckpt_.spec().hidden);
  taps[Tap::logits] = view(head_logits_, rows, ckpt_.spec().vocab);
  return taps;
}

template <class T>
std::vector<OpTiming> CudaDecoderPath<T>::time_layer(int l, int n_new, int kv_len,
                                                     const TimingOptions& opts) {
  const ModelSpec& s = ckpt_.spec();
  if (l < 0 || l >= s.n_layers || n_new <= 0 || kv_len < 0 || opts.repetitions <= 0) {
    throw std::invalid_argument(cfg_.name + ": time_layer needs a valid layer, n_new > 0, kv_len >= 0");
  }
  const int batch = state_ ? state_->batch : 1;
  DecoderState<T> st = engine_->make_state(batch, kv_len + n_new);
  st.act.ensure(s, batch * n_new);
  engine_->ensure_cache(st, l);
  st.cached[static_cast<std::size_t>(l)] = kv_len;
  cudaStream_t stream = engine_->stream();
  // Seeded, non-zero inputs and cache contents: zeros can run faster than real data.
  const std::uint64_t seed = 0x5eed0000u + static_cast<std::uint64_t>(l);
  fill_uniform(st.act.input.data(), st.act.input.size(), seed, -1.0f, 1.0f, stream);
  fill_uniform(st.k_cache[static_cast<std::size_t>(l)].data(), st.k_cache[static_cast<std::size_t>(l)].size(),
               seed + 1, -1.0f, 1.0f, stream);
  fill_uniform(st.v_cache[static_cast<std::size_t>(l)].data(), st.v_cache[static_cast<std::size_t>(l)].size(),
               seed + 2, -1.0f, 1.0f, stream);
  const std::vector<DeviceOp> ops = engine_->layer_ops(st, l, n_new);

  // Each op alone is timed as launched, never graphed (as this path always has); the whole
  // layer is graphed when opts.graph.
  return time_ops(ops, opts, stream, EachOp::launched);
}

template class CudaDecoderPath<float>;
template class CudaDecoderPath<__nv_bfloat16>;

}  // namespace fusecheck::cuda
