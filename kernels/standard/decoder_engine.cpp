// The one-kernel-per-op decoder: op lists for a layer and the head (see decoder_engine.h).
#include "kernels/standard/decoder_engine.h"

#include <cmath>
#include <stdexcept>

#include "kernels/standard/ops.h"

namespace fusecheck::cuda {

namespace {
EngineOptions select_device(EngineOptions o) {
  CUDA_CHECK(cudaSetDevice(o.device));
  return o;
}
constexpr std::size_t kCublasWorkspaceBytes = std::size_t(32) << 20;
}  // namespace

template <class T>
void LayerActivations<T>::ensure(const ModelSpec& s, int r) {
  if (r <= rows) return;
  const auto n = static_cast<std::size_t>(r);
  const auto hidden = static_cast<std::size_t>(s.hidden), qw = static_cast<std::size_t>(s.q_width()),
             kvw = static_cast<std::size_t>(s.kv_width()), inter = static_cast<std::size_t>(s.intermediate);
  for (DeviceBuffer<T>* b : {&input, &attn_norm, &o_proj, &resid_mid, &mlp_norm, &down, &resid_out}) {
    b->resize(n * hidden);
  }
  for (DeviceBuffer<T>* b : {&q, &q_normed, &q_rope, &attn}) b->resize(n * qw);
  for (DeviceBuffer<T>* b : {&k, &v, &k_normed, &k_rope}) b->resize(n * kvw);
  for (DeviceBuffer<T>* b : {&gate, &up, &act}) b->resize(n * inter);
  rows = r;
}

template <class T>
void LayerActivations<T>::poison(cudaStream_t s) {
  for (DeviceBuffer<T>* b : {&attn_norm, &q, &k, &v, &q_normed, &k_normed, &q_rope, &k_rope, &attn,
                             &o_proj, &resid_mid, &mlp_norm, &gate, &up, &act, &down, &resid_out}) {
    b->fill_poison(s);
  }
}

template <class T>
DecoderEngine<T>::DecoderEngine(ModelSpec spec, std::vector<DeviceLayer<T>> layers,
                                DeviceHead<T> head, EngineOptions opts)
    : DecoderEngine(std::move(spec),
                    std::make_shared<const EngineWeights<T>>(EngineWeights<T>{std::move(layers), std::move(head)}),
                    opts) {}

template <class T>
DecoderEngine<T>::DecoderEngine(ModelSpec spec, std::shared_ptr<const EngineWeights<T>> weights,
                                EngineOptions opts)
    : spec_(std::move(spec)),
      weights_(std::move(weights)),
      opts_(select_device(opts)),
      cublas_(stream_.get()),
      cublas_workspace_(kCublasWorkspaceBytes) {
  // An explicit workspace keeps cuBLAS from allocating inside a graph capture.
  CUBLAS_CHECK(cublasSetWorkspace(cublas_.get(), cublas_workspace_.data(), cublas_workspace_.bytes()));
}

template <class T>
DecoderState<T> DecoderEngine<T>::make_state(int batch, int capacity) const {
  if (batch <= 0 || capacity <= 0) throw std::invalid_argument("decoder state needs batch, capacity > 0");
  DecoderState<T> st;
  st.batch = batch;
  st.capacity = capacity;
  st.k_cache.resize(static_cast<std::size_t>(spec_.n_layers));
  st.v_cache.resize(static_cast<std::size_t>(spec_.n_layers));
  st.cached.assign(static_cast<std::size_t>(spec_.n_layers), 0);
  const RopeTableHost table = make_rope_table(spec_, capacity, opts_.rope_angles);
  std::vector<T> c(table.cos.size()), s(table.sin.size());
  for (std::size_t i = 0; i < c.size(); ++i) {
    // Rounded once to T (HF casts its FP32 cos/sin to the model dtype).
    if constexpr (std::is_same_v<T, float>) {
      c[i] = table.cos[i];
      s[i] = table.sin[i];
    } else {
      c[i] = __float2bfloat16_rn(table.cos[i]);
      s[i] = __float2bfloat16_rn(table.sin[i]);
    }
  }
  st.rope_cos.upload(c, stream_.get());
  st.rope_sin.upload(s, stream_.get());
  stream_.synchronize();  // the host vectors go out of scope
  return st;
}

template <class T>
void DecoderEngine<T>::ensure_cache(DecoderState<T>& st, int layer) const {
  const auto n = static_cast<std::size_t>(st.batch) * st.capacity * spec_.kv_width();
  auto& k = st.k_cache.at(static_cast<std::size_t>(layer));
  auto& v = st.v_cache.at(static_cast<std::size_t>(layer));
  if (k.size() != n) k.resize(n);
  if (v.size() != n) v.resize(n);
}

template <class T>
void DecoderEngine<T>::gemm(int rows, int out, int in, const T* x, const T* w, T* y, float beta) {
  if constexpr (std::is_same_v<T, float>) {
    gemm_xwt(cublas_.get(), rows, out, in, x, w, y, opts_.fp32_gemm, beta);
  } else {
    gemm_xwt(cublas_.get(), rows, out, in, x, w, y, beta);
  }
}

template <class T>
std::vector<DeviceOp> DecoderEngine<T>::layer_ops(DecoderState<T>& st, int layer, int n_new) {
  const ModelSpec& s = spec_;
  const DeviceLayer<T>& L = weights_->layers.at(static_cast<std::size_t>(layer));
  LayerActivations<T>& A = st.act;
  ensure_cache(st, layer);
  const int B = st.batch, n = n_new, rows = B * n, start = st.cached[static_cast<std::size_t>(layer)];
  if (start + n > st.capacity) {
    throw std::logic_error("layer " + std::to_string(layer) + ": " + std::to_string(start) + " + " +
                           std::to_string(n) + " tokens exceed the cache capacity " +
                           std::to_string(st.capacity));
  }
  if (A.rows < rows) throw std::logic_error("layer activations hold fewer rows than batch * n_new");
  const int hidden = s.hidden, qw = s.q_width(), kvw = s.kv_width(), inter = s.intermediate;
  const int H = s.n_heads, KVH = s.n_kv_heads, D = s.head_dim;
  const float eps = static_cast<float>(s.rms_eps);
  const double sz = sizeof(T);
  const bool interleaved = s.rope_style == RopeStyle::Interleaved;
  T* kc = st.k_cache[static_cast<std::size_t>(layer)].data();
  T* vc = st.v_cache[static_cast<std::size_t>(layer)].data();
  const T* cos = st.rope_cos.data();
  const T* sin = st.rope_sin.data();

  std::vector<DeviceOp> list;
  auto norm_op = [&](std::string name, const T* x, const T* w, T* y, int r, int cols) {
    list.push_back({std::move(name), sz * (2.0 * r * cols + cols), 5.0 * r * cols,
                   [=](cudaStream_t st_) { ops::rms_norm(x, w, y, r, cols, eps, st_); }});
  };
  auto gemm_op = [&](std::string name, const T* x, const T* w, const T* bias, T* y, int out, int in) {
    const double bytes = sz * (double(rows) * in + double(out) * in + double(rows) * out + (bias ? out : 0));
    list.push_back({std::move(name), bytes, gemm_flops(rows, out, in), [=, this](cudaStream_t st_) {
                     if (bias) ops::broadcast_rows(bias, y, rows, out, st_);
                     gemm(rows, out, in, x, w, y, bias ? 1.0f : 0.0f);
                   }});
  };
  auto ew_op = [&](std::string name, std::size_t count, double flops_per, std::function<void(cudaStream_t)> f) {
    list.push_back({std::move(name), sz * 3.0 * static_cast<double>(count),
                   flops_per * static_cast<double>(count), std::move(f)});
  };

  norm_op("attn_norm", A.input.data(), L.attn_norm.data(), A.attn_norm.data(), rows, hidden);
  gemm_op("q_proj", A.attn_norm.data(), L.wq.data(), L.bq.size() ? L.bq.data() : nullptr, A.q.data(), qw, hidden);
  gemm_op("k_proj", A.attn_norm.data(), L.wk.data(), L.bk.size() ? L.bk.data() : nullptr, A.k.data(), kvw, hidden);
  gemm_op("v_proj", A.attn_norm.data(), L.wv.data(), L.bv.size() ? L.bv.data() : nullptr, A.v.data(), kvw, hidden);
  const T* q_in = A.q.data();
  const T* k_in = A.k.data();
  if (s.has_qk_norm) {
    norm_op("q_norm", A.q.data(), L.q_norm.data(), A.q_normed.data(), rows * H, D);
    norm_op("k_norm", A.k.data(), L.k_norm.data(), A.k_normed.data(), rows * KVH, D);
    q_in = A.q_normed.data();
    k_in = A.k_normed.data();
  }
  const double rope_pairs_q = double(rows) * qw / 2, rope_pairs_k = double(rows) * kvw / 2;
  list.push_back({"rope_q", sz * (2.0 * rows * qw + 2.0 * (start + n) * D), 6.0 * rope_pairs_q,
                 [=, q_rope = A.q_rope.data()](cudaStream_t st_) {
                   ops::rope(q_in, q_rope, rows, n, H, D, interleaved, cos, sin, start, st_);
                 }});
  list.push_back({"rope_k", sz * (2.0 * rows * kvw + 2.0 * (start + n) * D), 6.0 * rope_pairs_k,
                 [=, k_rope = A.k_rope.data()](cudaStream_t st_) {
                   ops::rope(k_in, k_rope, rows, n, KVH, D, interleaved, cos, sin, start, st_);
                 }});
  const std::size_t row_bytes = static_cast<std::size_t>(kvw) * sizeof(T);
  const std::size_t cap = static_cast<std::size_t>(st.capacity);
  list.push_back({"kv_append", sz * 4.0 * rows * kvw, 0.0,
                 [=, k_rope = A.k_rope.data(), v = A.v.data()](cudaStream_t st_) {
                   // Sequence b's n new rows go to rows [start, start + n) of its cache.
                   CUDA_CHECK(cudaMemcpy2DAsync(kc + start * std::size_t(kvw), cap * row_bytes, k_rope,
                                                n * row_bytes, n * row_bytes, B, cudaMemcpyDeviceToDevice, st_));
                   CUDA_CHECK(cudaMemcpy2DAsync(vc + start * std::size_t(kvw), cap * row_bytes, v,
                                                n * row_bytes, n * row_bytes, B, cudaMemcpyDeviceToDevice, st_));
                 }});
  ops::AttentionShape a;
  a.batch = B;
  a.n_new = n;
  a.start = start;
  a.n_heads = H;
  a.n_kv_heads = KVH;
  a.head_dim = D;
  a.capacity = st.capacity;
  a.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(D)));
  {
    ops::AttentionShape full = a;  // the largest this state can ask for with n new tokens
    full.start = st.capacity - n;
    const std::size_t need = ops::attention_workspace_elems(full);
    if (st.attn_scores.size() < need) st.attn_scores.resize(need);
  }
  // Executed work, as eager attention does it: both GEMMs over every (query, key < start + n)
  // pair (the masked upper triangle included), ~5 FLOPs per score in the softmax. Bytes: Q,
  // K, V read once, out written once, and the scores' round trip (GEMM write, softmax read
  // and write in place, P @ V read).
  const double kv_total = double(start) + n, score_elems = double(B) * H * n * kv_total;
  const double attn_bytes = sz * (2.0 * rows * qw + 2.0 * B * kv_total * kvw + 4.0 * score_elems);
  const double attn_flops = 4.0 * score_elems * D + 5.0 * score_elems;
  list.push_back({"attention", attn_bytes, attn_flops,
                 [=, this, q_rope = A.q_rope.data(), attn = A.attn.data(), ws = st.attn_scores.data(),
                  ws_elems = st.attn_scores.size()](cudaStream_t st_) {
                   ops::attention(cublas_.get(), q_rope, kc, vc, attn, ws, ws_elems, a, st_);
                 }});
  gemm_op("o_proj", A.attn.data(), L.wo.data(), nullptr, A.o_proj.data(), hidden, qw);
  const std::size_t nh = static_cast<std::size_t>(rows) * hidden;
  ew_op("resid_add_attn", nh, 1.0, [=, x = A.input.data(), o = A.o_proj.data(), r = A.resid_mid.data()](cudaStream_t st_) {
    ops::add(x, o, r, nh, st_);
  });
  norm_op("mlp_norm", A.resid_mid.data(), L.mlp_norm.data(), A.mlp_norm.data(), rows, hidden);
  gemm_op("gate_proj", A.mlp_norm.data(), L.w_gate.data(), nullptr, A.gate.data(), inter, hidden);
  gemm_op("up_proj", A.mlp_norm.data(), L.w_up.data(), nullptr, A.up.data(), inter, hidden);
  const std::size_t ni = static_cast<std::size_t>(rows) * inter;
  ew_op("silu_mul", ni, 6.0, [=, g = A.gate.data(), u = A.up.data(), o = A.act.data()](cudaStream_t st_) {
    ops::silu_mul(g, u, o, ni, st_);
  });
  gemm_op("down_proj", A.act.data(), L.w_down.data(), nullptr, A.down.data(), hidden, inter);
  ew_op("resid_add_mlp", nh, 1.0, [=, r = A.resid_mid.data(), d = A.down.data(), o = A.resid_out.data()](cudaStream_t st_) {
    ops::add(r, d, o, nh, st_);
  });
  return list;
}

template <class T>
std::vector<DeviceOp> DecoderEngine<T>::head_ops(const T* hidden, T* final_norm, T* logits, int rows) {
  const int h = spec_.hidden, vocab = spec_.vocab;
  const float eps = static_cast<float>(spec_.rms_eps);
  const double sz = sizeof(T);
  const T* w = weights_->head.final_norm.data();
  const T* lm = weights_->head.lm_head.data();
  std::vector<DeviceOp> list;
  list.push_back({"final_norm", sz * (2.0 * rows * h + h), 5.0 * rows * h,
                 [=](cudaStream_t s) { ops::rms_norm(hidden, w, final_norm, rows, h, eps, s); }});
  list.push_back({"lm_head", sz * (double(rows) * h + double(vocab) * h + double(rows) * vocab),
                 gemm_flops(rows, vocab, h),
                 [=, this](cudaStream_t) { gemm(rows, vocab, h, final_norm, lm, logits); }});
  return list;
}

template <class T>
void DecoderEngine<T>::run(const std::vector<DeviceOp>& ops) {
  enqueue_all(ops, stream_.get());
}

template struct LayerActivations<float>;
template struct LayerActivations<__nv_bfloat16>;
template class DecoderEngine<float>;
template class DecoderEngine<__nv_bfloat16>;

}  // namespace fusecheck::cuda
