// Ref64CudaPath: ref64-cpu's forward (reference/decoder_path.cpp) in FP64 on the GPU.
// Weights are uploaded once per (checkpoint, device) as ref64-cpu converts them: F64
// read exactly, every other stored format (quantized GGUF included) decoded to float on
// the host, kept as float on the device and widened exactly to FP64 right before use
// (a layer's matrices at once, lm_head in slices), so the FP64 truth of an 8B model
// takes 4 bytes per weight, not 8. The embedding lookup and the spec checks are ref64-cpu's own code (a
// host Ref64Path that never converts a weight); RoPE cos/sin come from the same host
// table (reference/ops.h), so every elementwise value is the CPU's and only the order
// of summation inside GEMMs, norms and softmax differs. Taps and perturbations cross to
// the host as doubles, with the same sampler and element order as ref64-cpu.
#include "kernels/ref64/ref64_cuda_path.h"

#include <algorithm>
#include <cmath>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <fmt/core.h>

#include "harness/core/dtype.h"
#include "harness/core/error.h"
#include "harness/core/shared_per_checkpoint.h"
#include "kernels/common/cublas_handle.h"
#include "kernels/common/device_buffer.h"
#include "kernels/common/stream.h"
#include "kernels/common/upload.h"
#include "kernels/ref64/ref64_ops.h"
#include "reference/decoder_path.h"
#include "reference/normal_sampler.h"
#include "kernels/metrics/device_taps.h"

namespace fusecheck::cuda {

namespace {

// A weight matrix as ref64-cpu converts it (convert_matrix): every stored format but F64
// widens exactly through float, so it is kept as float on the device (half the memory:
// an 8B model's FP64 copy would not fit beside the other paths) and widened into an
// FP64 scratch right before its GEMMs; an F64 checkpoint's matrix is kept as is.
struct Fp64Matrix {
  DeviceBuffer<float> narrow;
  DeviceBuffer<double> wide;
  std::size_t size() const { return narrow.size() + wide.size(); }
};

struct Ref64Layer {
  DeviceBuffer<double> attn_norm, bq, bk, bv, q_norm, k_norm, mlp_norm;
  Fp64Matrix wq, wk, wv, wo, w_gate, w_up, w_down;
};

// Every weight on the device; immutable, shared by a run's instances.
struct Ref64Weights {
  std::vector<Ref64Layer> layers;
  DeviceBuffer<double> final_norm;
  Fp64Matrix lm_head;
};

void check_shape(const Checkpoint& ckpt, const TensorView* t, const char* role, std::int64_t rows,
                 std::int64_t cols) {
  if (!t) throw InputError(ckpt.path().string(), fmt::format("missing tensor for {}", role));
  if (t->numel() != rows * cols || t->rows() != rows) {
    throw InputError(t->file, fmt::format("tensor {} ({}) has {} elements, expected [{}, {}]", t->name, role,
                                          t->numel(), rows, cols));
  }
}

Fp64Matrix upload_matrix(const Checkpoint& ckpt, const TensorView* t, const char* role, std::int64_t rows,
                         std::int64_t cols, cudaStream_t s) {
  check_shape(ckpt, t, role, rows, cols);
  Fp64Matrix m;
  if (t->dtype == DType::F64) {
    const std::vector<double> v = t->to_double();
    m.wide.upload(v, s);
  } else {
    m.narrow.resize(static_cast<std::size_t>(t->numel()));
    cuda::FloatUploadScratch scratch;
    cuda::upload_as_float(*t, m.narrow.data(), s, scratch);  // 16-bit storage widened on the device
  }
  CUDA_CHECK(cudaStreamSynchronize(s));  // the host copy is freed on return
  return m;
}

// A norm weight or bias, widened once (they are small).
DeviceBuffer<double> upload_vector(const Checkpoint& ckpt, const TensorView* t, const char* role, std::int64_t n,
                                   cudaStream_t s) {
  Fp64Matrix m = upload_matrix(ckpt, t, role, n, 1, s);
  if (m.wide.size()) return std::move(m.wide);
  DeviceBuffer<double> d(m.narrow.size());
  ref64::widen(m.narrow.data(), d.data(), m.narrow.size(), s);
  CUDA_CHECK(cudaStreamSynchronize(s));
  return d;
}

std::shared_ptr<const Ref64Weights> upload_weights(const Checkpoint& ckpt) {
  const ModelSpec& s = ckpt.spec();
  const ModelTensors& m = ckpt.model();
  Stream up;
  auto w = std::make_shared<Ref64Weights>();
  w->layers.resize(static_cast<std::size_t>(s.n_layers));
  const std::int64_t h = s.hidden, qw = s.q_width(), kw = s.kv_width(), im = s.intermediate, hd = s.head_dim;
  for (int l = 0; l < s.n_layers; ++l) {
    const LayerTensors& t = m.layers.at(static_cast<std::size_t>(l));
    Ref64Layer& L = w->layers[static_cast<std::size_t>(l)];
    L.attn_norm = upload_vector(ckpt, t.attn_norm, "attn_norm", h, up);
    L.wq = upload_matrix(ckpt, t.wq, "q_proj", qw, h, up);
    L.wk = upload_matrix(ckpt, t.wk, "k_proj", kw, h, up);
    L.wv = upload_matrix(ckpt, t.wv, "v_proj", kw, h, up);
    if (s.has_qkv_bias) {
      L.bq = upload_vector(ckpt, t.bq, "q_proj.bias", qw, up);
      L.bk = upload_vector(ckpt, t.bk, "k_proj.bias", kw, up);
      L.bv = upload_vector(ckpt, t.bv, "v_proj.bias", kw, up);
    }
    if (s.has_qk_norm) {
      L.q_norm = upload_vector(ckpt, t.q_norm, "q_norm", hd, up);
      L.k_norm = upload_vector(ckpt, t.k_norm, "k_norm", hd, up);
    }
    L.wo = upload_matrix(ckpt, t.wo, "o_proj", h, qw, up);
    L.mlp_norm = upload_vector(ckpt, t.mlp_norm, "mlp_norm", h, up);
    L.w_gate = upload_matrix(ckpt, t.w_gate, "gate_proj", im, h, up);
    L.w_up = upload_matrix(ckpt, t.w_up, "up_proj", im, h, up);
    L.w_down = upload_matrix(ckpt, t.w_down, "down_proj", h, im, up);
  }
  w->final_norm = upload_vector(ckpt, m.final_norm, "final_norm", h, up);
  w->lm_head = upload_matrix(ckpt, m.lm_head, "lm_head", s.vocab, h, up);
  return w;
}

// The FP64 activations of one layer call, one buffer per tap; grown, never shrunk.
struct Activations {
  int rows = 0;
  DeviceBuffer<double> input, attn_norm, q, k, v, q_normed, k_normed, q_rope, k_rope, attn, o_proj, resid_mid,
      mlp_norm, gate, up, act, down, resid_out;

  std::vector<DeviceBuffer<double>*> taps() {
    return {&attn_norm, &q, &k, &v, &q_normed, &k_normed, &q_rope, &k_rope, &attn,
            &o_proj, &resid_mid, &mlp_norm, &gate, &up, &act, &down, &resid_out};
  }
  void ensure(const ModelSpec& s, int r) {
    if (r <= rows) return;
    const auto n = static_cast<std::size_t>(r);
    for (auto* b : {&input, &attn_norm, &o_proj, &resid_mid, &mlp_norm, &down, &resid_out}) {
      b->resize(n * static_cast<std::size_t>(s.hidden));
    }
    for (auto* b : {&q, &q_normed, &q_rope, &attn}) b->resize(n * static_cast<std::size_t>(s.q_width()));
    for (auto* b : {&k, &v, &k_normed, &k_rope}) b->resize(n * static_cast<std::size_t>(s.kv_width()));
    for (auto* b : {&gate, &up, &act}) b->resize(n * static_cast<std::size_t>(s.intermediate));
    rows = r;
  }
};

int select_device(int device) {
  CUDA_CHECK(cudaSetDevice(device));
  return device;
}

class Ref64CudaPath final : public Path {
 public:
  Ref64CudaPath(const Checkpoint& ckpt, int device, bool poison)
      : spec_(ckpt.spec()),
        host_(ckpt, "ref64-cpu"),
        device_(select_device(device)),
        poison_(poison),
        cublas_(stream_.get()) {
    cudaDeviceProp prop{};
    CUDA_CHECK(cudaGetDeviceProperties(&prop, device_));
    device_name_ = prop.name;
    max_keys_ = ref64::attention_max_keys(spec_.head_dim, device_);
    weights_ = shared_per_checkpoint<Ref64Weights>(ckpt, device_, [&] { return upload_weights(ckpt); });
    for (Tap t : kLayerTaps) {
      if (!spec_.has_qk_norm && (t == Tap::q_normed || t == Tap::k_normed)) continue;
      taps_.push_back(t);
    }
    reset(1, spec_.max_position > 0 ? std::min(spec_.max_position, 4096) : 4096);
  }

  std::string name() const override { return "ref64-cuda"; }
  std::string device() const override { return device_name_; }
  std::vector<Tap> taps() const override {
    std::vector<Tap> out = taps_;
    out.insert(out.end(), kHeadTaps.begin(), kHeadTaps.end());
    return out;
  }

  void reset(int batch, int capacity) override {
    if (batch <= 0 || capacity <= 0) throw std::invalid_argument("ref64-cuda: reset needs batch, capacity > 0");
    if (capacity > max_keys_) {
      throw InputError("", fmt::format("ref64-cuda: {} tokens per sequence exceed the {} keys its attention "
                                       "holds in one block's shared memory (head_dim {})",
                                       capacity, max_keys_, spec_.head_dim));
    }
    CUDA_CHECK(cudaSetDevice(device_));
    batch_ = batch;
    capacity_ = capacity;
    k_cache_.clear();
    v_cache_.clear();
    k_cache_.resize(static_cast<std::size_t>(spec_.n_layers));
    v_cache_.resize(static_cast<std::size_t>(spec_.n_layers));
    cached_.assign(static_cast<std::size_t>(spec_.n_layers), 0);
    // ref64-cpu's table (FP64 angles, std::cos/std::sin) for every position, uploaded once.
    const ref::RopeTable<double> table = ref::rope_table<double>(spec_, 0, capacity);
    rope_cos_.upload(table.cos.data(), static_cast<std::size_t>(table.cos.size()), stream_);
    rope_sin_.upload(table.sin.data(), static_cast<std::size_t>(table.sin.size()), stream_);
    stream_.synchronize();  // the host table goes out of scope
    perturb_calls_ = 0;
  }

  TapMatrix embed(std::span<const std::int32_t> tokens) override { return host_.embed(tokens); }

  TapSet layer(int l, const TapMatrix& input) override;
  TapSet head(const TapMatrix& hidden) override;
  // Device taps (docs/gpu.md): the FP64 buffers themselves.
  DeviceTapSet layer_on_device(int l, const TapInput& input) override { return views(run_layer(l, input)); }
  DeviceTapSet head_on_device(const TapInput& hidden) override { return views(run_head(hidden)); }

  void keep_taps(std::optional<std::vector<Tap>> taps) override { keep_ = std::move(taps); }
  PathCapabilities capabilities() const override { return {.perturbation = true, .device_taps = true}; }
  void set_perturbation(std::optional<Perturbation> p) override {
    host_.set_perturbation(p);  // ref64-cpu's checks of the layer and tap
    perturbation_ = p;
    perturb_calls_ = 0;
  }

 private:
  bool wanted(Tap t) const {
    return t == Tap::resid_out || !keep_ || std::find(keep_->begin(), keep_->end(), t) != keep_->end();
  }
  void perturb(int layer, Tap tap, DeviceBuffer<double>& buf, std::size_t count);
  struct TapSource {
    Tap tap;
    const double* data;
    Eigen::Index rows, cols;
  };
  // Every source's values as host matrices: one page-locked staging area for all of them
  // (pageable copies run at a fraction of the link's speed), copied out on every core.
  TapSet download(const std::vector<TapSource>& sources);
  DeviceTapSet views(const std::vector<TapSource>& sources) const;
  // Runs the layer (or head) on `input`; every tap of the model as a source.
  std::vector<TapSource> run_layer(int l, const TapInput& input);
  std::vector<TapSource> run_head(const TapInput& hidden);
  // A device input as FP64 into device_in_ (before any buffer the input may be in changes).
  void stage_device_input(const TapInput& input);
  void gemm(int rows, int out, int in, const double* x, const double* w, double* y,
            const DeviceBuffer<double>* bias = nullptr);
  // logits = normed lm_head^T, over slices of lm_head's rows when it is widened.
  void lm_head(int rows, const double* normed, double* logits);
  // The FP64 values of `m`: its own, or widened into the scratch at `cursor` (advanced).
  const double* fp64(const Fp64Matrix& m, std::size_t& cursor);

  const ModelSpec spec_;
  ref::Ref64Path host_;  // embedding rows and argument checks only: it converts no weight
  int device_;
  bool poison_;
  std::string device_name_;
  Stream stream_;
  CublasHandle cublas_;
  int max_keys_ = 0;
  std::shared_ptr<const Ref64Weights> weights_;
  std::vector<Tap> taps_;  // layer taps

  int batch_ = 0, capacity_ = 0;
  std::vector<DeviceBuffer<double>> k_cache_, v_cache_;  // per layer [batch][capacity][kv_width]
  std::vector<int> cached_;
  DeviceBuffer<double> rope_cos_, rope_sin_;  // [capacity x head_dim / 2]
  Activations act_;
  DeviceBuffer<double> head_in_, head_norm_, head_logits_;
  DeviceBuffer<double> device_in_;  // a device input, widened to FP64
  DeviceBuffer<double> scratch_;  // one layer's weight matrices (or a slice of lm_head) in FP64
  std::optional<std::vector<Tap>> keep_;
  std::optional<Perturbation> perturbation_;
  std::uint64_t perturb_calls_ = 0;
  struct PinnedDeleter {
    void operator()(double* p) const {
      if (p) CUDA_CHECK_NOTHROW(cudaFreeHost(p));
    }
  };
  std::unique_ptr<double, PinnedDeleter> staging_;  // grown to the largest download, reused
  std::size_t staging_size_ = 0;
};

// ref::DecoderPath::perturb on the tap's values brought to the host: rms over the values
// in row-major order, one sampler stream per call from the seed and the call count.
void Ref64CudaPath::perturb(int layer, Tap tap, DeviceBuffer<double>& buf, std::size_t count) {
  if (!perturbation_ || perturbation_->tap != tap) return;
  const bool head_tap = tap == Tap::final_norm || tap == Tap::logits;
  if (!head_tap && perturbation_->layer != layer) return;
  std::vector<double> host(count);
  CUDA_CHECK(cudaMemcpyAsync(host.data(), buf.data(), count * sizeof(double), cudaMemcpyDeviceToHost, stream_));
  stream_.synchronize();
  double sumsq = 0;
  for (double v : host) sumsq += v * v;
  const double rms = std::sqrt(sumsq / static_cast<double>(std::max<std::size_t>(1, count)));
  ref::NormalSampler normal(perturbation_->seed ^ (0x9e3779b97f4a7c15ull * ++perturb_calls_));
  const double scale = perturbation_->relative_size * rms;
  for (double& v : host) v += scale * normal.next();
  CUDA_CHECK(cudaMemcpyAsync(buf.data(), host.data(), count * sizeof(double), cudaMemcpyHostToDevice, stream_));
  stream_.synchronize();  // host is freed on return
}

TapSet Ref64CudaPath::download(const std::vector<TapSource>& sources) {
  std::size_t total = 0;
  for (const TapSource& s : sources) total += static_cast<std::size_t>(s.rows * s.cols);
  if (staging_size_ < total) {
    staging_.reset();
    double* p = nullptr;
    CUDA_CHECK(cudaMallocHost(reinterpret_cast<void**>(&p), total * sizeof(double)));
    staging_.reset(p);
    staging_size_ = total;
  }
  std::size_t offset = 0;
  for (const TapSource& s : sources) {
    const std::size_t n = static_cast<std::size_t>(s.rows * s.cols);
    if (n) {
      CUDA_CHECK(cudaMemcpyAsync(staging_.get() + offset, s.data, n * sizeof(double), cudaMemcpyDeviceToHost,
                                 stream_));
    }
    offset += n;
  }
  stream_.synchronize();
  TapSet taps;
  offset = 0;
  for (const TapSource& s : sources) {
    TapMatrix m(s.rows, s.cols);
    const double* src = staging_.get() + offset;
    double* dst = m.data();
    const auto n = static_cast<std::ptrdiff_t>(m.size());
#pragma omp parallel for schedule(static)
    for (std::ptrdiff_t i = 0; i < n; ++i) dst[i] = src[i];
    offset += static_cast<std::size_t>(n);
    taps[s.tap] = std::move(m);
  }
  return taps;
}

void Ref64CudaPath::gemm(int rows, int out, int in, const double* x, const double* w, double* y,
                         const DeviceBuffer<double>* bias) {
  // A Qwen2 bias is added to the product, as ref64-cpu adds it after its GEMM.
  const bool has_bias = bias && bias->size() > 0;
  if (has_bias) ref64::broadcast_rows(bias->data(), y, rows, out, stream_);
  ref64::gemm_xwt(cublas_, rows, out, in, x, w, y, has_bias ? 1.0 : 0.0);
}

const double* Ref64CudaPath::fp64(const Fp64Matrix& m, std::size_t& cursor) {
  if (m.wide.size()) return m.wide.data();
  double* out = scratch_.data() + cursor;
  ref64::widen(m.narrow.data(), out, m.narrow.size(), stream_);
  cursor += m.narrow.size();
  return out;
}

DeviceTapSet Ref64CudaPath::views(const std::vector<TapSource>& sources) const {
  DeviceTapSet taps;
  for (const TapSource& s : sources) {
    DeviceTap t;
    t.data = s.data;
    t.dtype = DType::F64;
    t.rows = s.rows, t.cols = s.cols, t.row_stride = s.cols;
    t.device = device_;
    taps[s.tap] = t;
  }
  return taps;
}

void Ref64CudaPath::stage_device_input(const TapInput& input) {
  if (!input.device) return;
  const auto count = static_cast<std::size_t>(input.rows() * input.cols());
  if (device_in_.size() < count) device_in_.resize(count);
  copy_input(*input.device, DType::F64, device_in_.data(), stream_);
}

TapSet Ref64CudaPath::layer(int l, const TapMatrix& input) {
  std::vector<TapSource> sources = run_layer(l, TapInput{&input, nullptr});
  std::erase_if(sources, [&](const TapSource& s) { return !wanted(s.tap); });
  return download(sources);
}

std::vector<Ref64CudaPath::TapSource> Ref64CudaPath::run_layer(int l, const TapInput& input) {
  if (l < 0 || l >= spec_.n_layers) throw std::out_of_range(fmt::format("ref64-cuda: no layer {}", l));
  if (input.cols() != spec_.hidden || input.rows() == 0 || input.rows() % batch_ != 0) {
    throw std::invalid_argument(fmt::format("ref64-cuda: layer input is {}x{}, expected (batch {} x n) x {}",
                                            input.rows(), input.cols(), batch_, spec_.hidden));
  }
  const int rows = static_cast<int>(input.rows());
  const int n = rows / batch_;
  const int past = cached_[static_cast<std::size_t>(l)];
  if (past + n > capacity_) {
    throw std::length_error(fmt::format("ref64-cuda: layer {} KV cache holds {} tokens; {} more exceed its "
                                        "capacity {}", l, past, n, capacity_));
  }
  CUDA_CHECK(cudaSetDevice(device_));
  stage_device_input(input);
  const Ref64Layer& W = weights_->layers.at(static_cast<std::size_t>(l));
  Activations& A = act_;
  A.ensure(spec_, rows);
  if (poison_) {
    for (auto* b : A.taps()) b->fill_poison(stream_);  // 0xFF bytes: NaN in FP64 too
  }
  const std::size_t kvw = static_cast<std::size_t>(spec_.kv_width()), cap = static_cast<std::size_t>(capacity_);
  auto& kc = k_cache_[static_cast<std::size_t>(l)];
  auto& vc = v_cache_[static_cast<std::size_t>(l)];
  if (kc.size() == 0) {
    kc.resize(static_cast<std::size_t>(batch_) * cap * kvw);
    vc.resize(static_cast<std::size_t>(batch_) * cap * kvw);
  }
  const auto n_input = static_cast<std::size_t>(input.rows() * input.cols());
  CUDA_CHECK(cudaMemcpyAsync(A.input.data(), input.host ? input.host->data() : device_in_.data(),
                             n_input * sizeof(double), input.host ? cudaMemcpyHostToDevice : cudaMemcpyDeviceToDevice,
                             stream_));
  std::size_t need = 0;
  for (const Fp64Matrix* m : {&W.wq, &W.wk, &W.wv, &W.wo, &W.w_gate, &W.w_up, &W.w_down}) need += m->narrow.size();
  if (scratch_.size() < need) scratch_.resize(need);
  std::size_t cursor = 0;
  const double* wq = fp64(W.wq, cursor);
  const double* wk = fp64(W.wk, cursor);
  const double* wv = fp64(W.wv, cursor);
  const double* wo = fp64(W.wo, cursor);
  const double* w_gate = fp64(W.w_gate, cursor);
  const double* w_up = fp64(W.w_up, cursor);
  const double* w_down = fp64(W.w_down, cursor);

  const int h = spec_.hidden, qw = spec_.q_width(), kw = spec_.kv_width(), im = spec_.intermediate;
  const int H = spec_.n_heads, KVH = spec_.n_kv_heads, D = spec_.head_dim;
  const double eps = spec_.rms_eps;
  auto count = [rows](int cols) { return static_cast<std::size_t>(rows) * static_cast<std::size_t>(cols); };

  ref64::rms_norm(A.input.data(), W.attn_norm.data(), A.attn_norm.data(), rows, h, eps, stream_);
  perturb(l, Tap::attn_norm, A.attn_norm, count(h));
  gemm(rows, qw, h, A.attn_norm.data(), wq, A.q.data(), &W.bq);
  perturb(l, Tap::q, A.q, count(qw));
  gemm(rows, kw, h, A.attn_norm.data(), wk, A.k.data(), &W.bk);
  perturb(l, Tap::k, A.k, count(kw));
  gemm(rows, kw, h, A.attn_norm.data(), wv, A.v.data(), &W.bv);
  perturb(l, Tap::v, A.v, count(kw));
  const double* q_in = A.q.data();
  const double* k_in = A.k.data();
  if (spec_.has_qk_norm) {
    ref64::rms_norm(A.q.data(), W.q_norm.data(), A.q_normed.data(), rows * H, D, eps, stream_);
    perturb(l, Tap::q_normed, A.q_normed, count(qw));
    ref64::rms_norm(A.k.data(), W.k_norm.data(), A.k_normed.data(), rows * KVH, D, eps, stream_);
    perturb(l, Tap::k_normed, A.k_normed, count(kw));
    q_in = A.q_normed.data();
    k_in = A.k_normed.data();
  }
  const bool interleaved = spec_.rope_style == RopeStyle::Interleaved;
  ref64::rope(q_in, A.q_rope.data(), rows, n, H, D, interleaved, rope_cos_.data(), rope_sin_.data(), past, stream_);
  perturb(l, Tap::q_rope, A.q_rope, count(qw));
  ref64::rope(k_in, A.k_rope.data(), rows, n, KVH, D, interleaved, rope_cos_.data(), rope_sin_.data(), past,
              stream_);
  perturb(l, Tap::k_rope, A.k_rope, count(kw));

  // Sequence b's n new rows go to rows [past, past + n) of its cache.
  const std::size_t row_bytes = kvw * sizeof(double);
  const std::size_t offset = static_cast<std::size_t>(past) * kvw;
  CUDA_CHECK(cudaMemcpy2DAsync(kc.data() + offset, cap * row_bytes, A.k_rope.data(), n * row_bytes, n * row_bytes,
                               static_cast<std::size_t>(batch_), cudaMemcpyDeviceToDevice, stream_));
  CUDA_CHECK(cudaMemcpy2DAsync(vc.data() + offset, cap * row_bytes, A.v.data(), n * row_bytes, n * row_bytes,
                               static_cast<std::size_t>(batch_), cudaMemcpyDeviceToDevice, stream_));
  ref64::AttentionShape a;
  a.batch = batch_;
  a.n_new = n;
  a.start = past;
  a.n_heads = H;
  a.n_kv_heads = KVH;
  a.head_dim = D;
  a.capacity = capacity_;
  a.scale = 1.0 / std::sqrt(static_cast<double>(D));
  ref64::attention(A.q_rope.data(), kc.data(), vc.data(), A.attn.data(), a, device_, stream_);
  cached_[static_cast<std::size_t>(l)] = past + n;
  perturb(l, Tap::attn, A.attn, count(qw));

  gemm(rows, h, qw, A.attn.data(), wo, A.o_proj.data());
  perturb(l, Tap::o_proj, A.o_proj, count(h));
  ref64::add(A.input.data(), A.o_proj.data(), A.resid_mid.data(), count(h), stream_);
  perturb(l, Tap::resid_mid, A.resid_mid, count(h));
  ref64::rms_norm(A.resid_mid.data(), W.mlp_norm.data(), A.mlp_norm.data(), rows, h, eps, stream_);
  perturb(l, Tap::mlp_norm, A.mlp_norm, count(h));
  gemm(rows, im, h, A.mlp_norm.data(), w_gate, A.gate.data());
  perturb(l, Tap::gate, A.gate, count(im));
  gemm(rows, im, h, A.mlp_norm.data(), w_up, A.up.data());
  perturb(l, Tap::up, A.up, count(im));
  ref64::silu_mul(A.gate.data(), A.up.data(), A.act.data(), count(im), stream_);
  perturb(l, Tap::act, A.act, count(im));
  gemm(rows, h, im, A.act.data(), w_down, A.down.data());
  perturb(l, Tap::down, A.down, count(h));
  ref64::add(A.resid_mid.data(), A.down.data(), A.resid_out.data(), count(h), stream_);
  perturb(l, Tap::resid_out, A.resid_out, count(h));

  const std::pair<Tap, const DeviceBuffer<double>*> buffers[] = {
      {Tap::attn_norm, &A.attn_norm}, {Tap::q, &A.q},           {Tap::k, &A.k},
      {Tap::v, &A.v},                 {Tap::q_normed, &A.q_normed}, {Tap::k_normed, &A.k_normed},
      {Tap::q_rope, &A.q_rope},       {Tap::k_rope, &A.k_rope}, {Tap::attn, &A.attn},
      {Tap::o_proj, &A.o_proj},       {Tap::resid_mid, &A.resid_mid}, {Tap::mlp_norm, &A.mlp_norm},
      {Tap::gate, &A.gate},           {Tap::up, &A.up},         {Tap::act, &A.act},
      {Tap::down, &A.down},           {Tap::resid_out, &A.resid_out}};
  std::vector<TapSource> sources;
  for (const auto& [tap, buf] : buffers) {
    if (std::find(taps_.begin(), taps_.end(), tap) == taps_.end()) continue;
    sources.push_back({tap, buf->data(), rows, static_cast<Eigen::Index>(buf->size() / static_cast<std::size_t>(A.rows))});
  }
  stream_.synchronize();
  return sources;
}

void Ref64CudaPath::lm_head(int rows, const double* normed, double* logits) {
  const Fp64Matrix& lm = weights_->lm_head;
  const int vocab = spec_.vocab, h = spec_.hidden;
  if (lm.wide.size()) return gemm(rows, vocab, h, normed, lm.wide.data(), logits);
  // Slices of at least 16M values (128 MiB), or the layer scratch when it is larger.
  const std::size_t want = std::max<std::size_t>(scratch_.size(), std::size_t{1} << 24);
  const int slice = static_cast<int>(std::clamp<std::size_t>(want / static_cast<std::size_t>(h), 1, vocab));
  if (scratch_.size() < static_cast<std::size_t>(slice) * h) scratch_.resize(static_cast<std::size_t>(slice) * h);
  for (int v0 = 0; v0 < vocab; v0 += slice) {
    const int n = std::min(slice, vocab - v0);
    const std::size_t count = static_cast<std::size_t>(n) * h;
    ref64::widen(lm.narrow.data() + static_cast<std::size_t>(v0) * h, scratch_.data(), count, stream_);
    ref64::gemm_xwt(cublas_, rows, n, h, normed, scratch_.data(), logits + v0, 0.0, vocab);
  }
}

TapSet Ref64CudaPath::head(const TapMatrix& hidden) { return download(run_head(TapInput{&hidden, nullptr})); }

std::vector<Ref64CudaPath::TapSource> Ref64CudaPath::run_head(const TapInput& hidden) {
  if (hidden.cols() != spec_.hidden) {
    throw std::invalid_argument(fmt::format("ref64-cuda: head input has {} columns, expected {}", hidden.cols(),
                                            spec_.hidden));
  }
  CUDA_CHECK(cudaSetDevice(device_));
  stage_device_input(hidden);
  const int rows = static_cast<int>(hidden.rows());
  const std::size_t n_hidden = static_cast<std::size_t>(hidden.rows() * hidden.cols());
  const std::size_t n_logits = static_cast<std::size_t>(rows) * static_cast<std::size_t>(spec_.vocab);
  if (head_in_.size() < n_hidden) {
    head_in_.resize(n_hidden);
    head_norm_.resize(n_hidden);
  }
  if (head_logits_.size() < n_logits) head_logits_.resize(n_logits);
  if (poison_) {
    head_norm_.fill_poison(stream_);
    head_logits_.fill_poison(stream_);
  }
  CUDA_CHECK(cudaMemcpyAsync(head_in_.data(), hidden.host ? hidden.host->data() : device_in_.data(),
                             n_hidden * sizeof(double),
                             hidden.host ? cudaMemcpyHostToDevice : cudaMemcpyDeviceToDevice, stream_));
  ref64::rms_norm(head_in_.data(), weights_->final_norm.data(), head_norm_.data(), rows, spec_.hidden,
                  spec_.rms_eps, stream_);
  perturb(spec_.n_layers, Tap::final_norm, head_norm_, n_hidden);
  lm_head(rows, head_norm_.data(), head_logits_.data());
  perturb(spec_.n_layers, Tap::logits, head_logits_, n_logits);
  stream_.synchronize();
  return {{Tap::final_norm, head_norm_.data(), rows, spec_.hidden}, {Tap::logits, head_logits_.data(), rows, spec_.vocab}};
}

}  // namespace
}  // namespace fusecheck::cuda

namespace fusecheck {

std::unique_ptr<Path> make_ref64_cuda_path(const Checkpoint& ckpt, const PathOptions& opts,
                                           const Ref64CudaOptions& extra) {
  return std::make_unique<cuda::Ref64CudaPath>(ckpt, opts.device_index, extra.poison_activations);
}

}  // namespace fusecheck
