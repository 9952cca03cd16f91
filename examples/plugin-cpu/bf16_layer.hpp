// Bf16Layer: a decoder layer in bf16 storage with FP32 arithmetic, as a plug-in path
// (fusecheck::plugin::Path), written against nothing but the installed plug-in headers.
// Every tap is rounded to bf16 once, where a bf16 engine stores it; sums, norms, RoPE and
// softmax run in FP32. The SwiGLU activation is a hook so that examples/plugin-minimal can
// run it on the GPU; examples/plugin-cpu runs it all on the CPU. Its numbers are not a
// reference: it exists to exercise the whole plug-in ABI (docs/plugin-paths.md).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <fusecheck/path_plugin.hpp>

namespace example {

using fusecheck::plugin::HostMatrix;
using fusecheck::plugin::Input;
using fusecheck::plugin::TapValues;
using fusecheck::plugin::float_to_bf16_bits;
using fusecheck::plugin::bf16_bits_to_float;

inline float bf16(float x) { return bf16_bits_to_float(float_to_bf16_bits(x)); }

// Dense [rows x cols] FP32 activations whose values are already bf16-representable.
struct Act {
  int rows = 0, cols = 0;
  std::vector<float> v;
  Act(int r, int c) : rows(r), cols(c), v(static_cast<std::size_t>(r) * c) {}
  float* row(int r) { return v.data() + static_cast<std::size_t>(r) * cols; }
  const float* row(int r) const { return v.data() + static_cast<std::size_t>(r) * cols; }
};

inline HostMatrix to_bf16_matrix(const Act& a) {
  HostMatrix m(FC_BF16, a.rows, a.cols);
  auto* out = m.data<std::uint16_t>();
  for (std::size_t i = 0; i < a.v.size(); ++i) out[i] = float_to_bf16_bits(a.v[i]);
  return m;
}

struct Weights {
  std::vector<float> w;  // [out x in]
  int out = 0, in = 0;
};

inline Weights matrix(const fc_tensor& t, const char* what) {
  if (t.rank != 2) throw std::invalid_argument(std::string("weight ") + what + " is not a matrix");
  return {fusecheck::plugin::to_float(t), static_cast<int>(t.shape[0]), static_cast<int>(t.shape[1])};
}
inline std::vector<float> vec(const fc_tensor& t) { return t.rank ? fusecheck::plugin::to_float(t) : std::vector<float>{}; }

// y = x W^T (+ b), FP32 accumulation, rounded to bf16.
inline Act linear(const Act& x, const Weights& w, const std::vector<float>& bias = {}) {
  if (x.cols != w.in) throw std::invalid_argument("linear: width mismatch");
  Act y(x.rows, w.out);
  for (int r = 0; r < x.rows; ++r) {
    const float* xr = x.row(r);
    for (int o = 0; o < w.out; ++o) {
      const float* wr = w.w.data() + static_cast<std::size_t>(o) * w.in;
      float acc = 0;
      for (int i = 0; i < w.in; ++i) acc += xr[i] * wr[i];
      if (!bias.empty()) acc += bias[static_cast<std::size_t>(o)];
      y.row(r)[o] = bf16(acc);
    }
  }
  return y;
}

// RMSNorm over groups of `width` columns (width == cols: the whole row; head_dim: per head).
inline Act rms_norm(const Act& x, const std::vector<float>& weight, int width, float eps) {
  Act y(x.rows, x.cols);
  for (int r = 0; r < x.rows; ++r) {
    for (int g = 0; g < x.cols; g += width) {
      float ss = 0;
      for (int i = 0; i < width; ++i) ss += x.row(r)[g + i] * x.row(r)[g + i];
      const float scale = 1.0f / std::sqrt(ss / static_cast<float>(width) + eps);
      for (int i = 0; i < width; ++i) y.row(r)[g + i] = bf16(x.row(r)[g + i] * scale * weight[static_cast<std::size_t>(i)]);
    }
  }
  return y;
}

inline Act add(const Act& a, const Act& b) {
  Act y(a.rows, a.cols);
  for (std::size_t i = 0; i < y.v.size(); ++i) y.v[i] = bf16(a.v[i] + b.v[i]);
  return y;
}

struct Layer {
  std::vector<float> attn_norm, q_norm, k_norm, mlp_norm, bq, bk, bv;
  Weights wq, wk, wv, wo, w_gate, w_up, w_down;
};

// act[i] = bf16(silu(gate[i]) * up[i]) for i < n (values bf16-representable floats).
using SwigluFn = void (*)(const float* gate, const float* up, float* act, std::size_t n);

inline void swiglu_cpu(const float* gate, const float* up, float* act, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) act[i] = bf16(gate[i] / (1.0f + std::exp(-gate[i])) * up[i]);
}

class Bf16Layer final : public fusecheck::plugin::Path {
 public:
  Bf16Layer(const fc_model& m, SwigluFn swiglu) : s_(m.spec), swiglu_(swiglu) {
    if (std::string(s_.rope_scaling_type) != "none") {
      throw std::invalid_argument(std::string("RoPE scaling '") + s_.rope_scaling_type + "' is not implemented");
    }
    if (s_.rope_dim != s_.head_dim) throw std::invalid_argument("partial RoPE is not implemented");
    embed_ = matrix(m.embed, "embed");
    lm_head_ = matrix(m.lm_head, "lm_head");
    final_norm_ = vec(m.final_norm);
    for (int l = 0; l < s_.n_layers; ++l) {
      const fc_layer_weights& w = m.layers[l];
      layers_.push_back({vec(w.attn_norm), vec(w.q_norm), vec(w.k_norm), vec(w.mlp_norm), vec(w.bq), vec(w.bk),
                         vec(w.bv), matrix(w.wq, "wq"), matrix(w.wk, "wk"), matrix(w.wv, "wv"), matrix(w.wo, "wo"),
                         matrix(w.w_gate, "w_gate"), matrix(w.w_up, "w_up"), matrix(w.w_down, "w_down")});
    }
  }

  std::vector<fc_tap> taps() const override {
    std::vector<fc_tap> t = {FC_TAP_ATTN_NORM, FC_TAP_Q, FC_TAP_K, FC_TAP_V};
    if (s_.has_qk_norm) t.insert(t.end(), {FC_TAP_Q_NORMED, FC_TAP_K_NORMED});
    t.insert(t.end(), {FC_TAP_Q_ROPE, FC_TAP_K_ROPE, FC_TAP_ATTN, FC_TAP_O_PROJ, FC_TAP_RESID_MID, FC_TAP_MLP_NORM,
                       FC_TAP_GATE, FC_TAP_UP, FC_TAP_ACT, FC_TAP_DOWN, FC_TAP_RESID_OUT});
    return t;
  }

  void reset(int batch, int capacity) override {
    if (batch < 1 || capacity < 1) throw std::invalid_argument("reset: batch and capacity must be positive");
    batch_ = batch;
    capacity_ = capacity;
    const std::size_t per_layer = static_cast<std::size_t>(batch) * capacity * s_.n_kv_heads * s_.head_dim;
    k_cache_.assign(static_cast<std::size_t>(s_.n_layers), std::vector<float>(per_layer));
    v_cache_.assign(static_cast<std::size_t>(s_.n_layers), std::vector<float>(per_layer));
    kv_len_.assign(static_cast<std::size_t>(s_.n_layers), 0);
  }

  HostMatrix embed(const std::int32_t* tokens, std::int64_t n) override {
    Act x(static_cast<int>(n), s_.hidden);
    for (std::int64_t i = 0; i < n; ++i) {
      if (tokens[i] < 0 || tokens[i] >= embed_.out) throw std::out_of_range("token id out of the vocabulary");
      const float* e = embed_.w.data() + static_cast<std::size_t>(tokens[i]) * s_.hidden;
      for (int c = 0; c < s_.hidden; ++c) x.row(static_cast<int>(i))[c] = bf16(e[c]);
    }
    return to_bf16_matrix(x);
  }

  TapValues layer(int l, const Input& in) override {
    if (l < 0 || l >= s_.n_layers) throw std::out_of_range("layer index out of range");
    if (batch_ == 0) throw std::logic_error("layer() before reset()");
    if (in.cols != s_.hidden || in.rows % batch_ != 0) throw std::invalid_argument("layer input shape");
    const int rows = static_cast<int>(in.rows), n = rows / batch_, D = s_.head_dim;
    const int start = kv_len_[static_cast<std::size_t>(l)];
    if (start + n > capacity_) throw std::length_error("KV cache capacity exceeded");
    const Layer& w = layers_[static_cast<std::size_t>(l)];
    const float eps = static_cast<float>(s_.rms_eps);

    Act x(rows, s_.hidden);
    for (std::size_t i = 0; i < x.v.size(); ++i) x.v[i] = bf16(static_cast<float>(in.data[i]));
    TapValues out;
    auto keep = [&](fc_tap t, const Act& a) { out.emplace_back(t, to_bf16_matrix(a)); };

    const Act normed = rms_norm(x, w.attn_norm, s_.hidden, eps);
    keep(FC_TAP_ATTN_NORM, normed);
    Act q = linear(normed, w.wq, w.bq), k = linear(normed, w.wk, w.bk);
    const Act v = linear(normed, w.wv, w.bv);
    keep(FC_TAP_Q, q), keep(FC_TAP_K, k), keep(FC_TAP_V, v);
    if (s_.has_qk_norm) {
      q = rms_norm(q, w.q_norm, D, eps), k = rms_norm(k, w.k_norm, D, eps);
      keep(FC_TAP_Q_NORMED, q), keep(FC_TAP_K_NORMED, k);
    }
    for (int r = 0; r < rows; ++r) {
      const int pos = start + r % n;
      rope(q.row(r), s_.n_heads, pos), rope(k.row(r), s_.n_kv_heads, pos);
    }
    keep(FC_TAP_Q_ROPE, q), keep(FC_TAP_K_ROPE, k);

    auto& kc = k_cache_[static_cast<std::size_t>(l)];
    auto& vc = v_cache_[static_cast<std::size_t>(l)];
    const int KW = s_.n_kv_heads * D;
    for (int r = 0; r < rows; ++r) {
      const std::size_t at = (static_cast<std::size_t>(r / n) * capacity_ + start + r % n) * KW;
      std::copy(k.row(r), k.row(r) + KW, kc.begin() + static_cast<std::ptrdiff_t>(at));
      std::copy(v.row(r), v.row(r) + KW, vc.begin() + static_cast<std::ptrdiff_t>(at));
    }
    kv_len_[static_cast<std::size_t>(l)] = start + n;

    Act attn(rows, s_.n_heads * D);
    const int group = s_.n_heads / s_.n_kv_heads;
    const float scale = 1.0f / std::sqrt(static_cast<float>(D));
    std::vector<float> score(static_cast<std::size_t>(start + n));
    for (int r = 0; r < rows; ++r) {
      const int b = r / n, visible = start + r % n + 1;  // causal
      for (int h = 0; h < s_.n_heads; ++h) {
        const float* qh = q.row(r) + h * D;
        const int kvh = h / group;
        float mx = -INFINITY;
        for (int j = 0; j < visible; ++j) {
          const float* kj = kc.data() + (static_cast<std::size_t>(b) * capacity_ + j) * KW + kvh * D;
          float dot = 0;
          for (int d = 0; d < D; ++d) dot += qh[d] * kj[d];
          score[static_cast<std::size_t>(j)] = dot * scale;
          mx = std::max(mx, score[static_cast<std::size_t>(j)]);
        }
        float sum = 0;
        for (int j = 0; j < visible; ++j) sum += score[static_cast<std::size_t>(j)] = std::exp(score[static_cast<std::size_t>(j)] - mx);
        float* o = attn.row(r) + h * D;
        for (int d = 0; d < D; ++d) {
          float acc = 0;
          for (int j = 0; j < visible; ++j) {
            acc += score[static_cast<std::size_t>(j)] * vc[(static_cast<std::size_t>(b) * capacity_ + j) * KW + kvh * D + d];
          }
          o[d] = bf16(acc / sum);
        }
      }
    }
    keep(FC_TAP_ATTN, attn);
    const Act o_proj = linear(attn, w.wo);
    const Act resid_mid = add(x, o_proj);
    const Act mlp_in = rms_norm(resid_mid, w.mlp_norm, s_.hidden, eps);
    const Act gate = linear(mlp_in, w.w_gate), up = linear(mlp_in, w.w_up);
    Act act(rows, s_.intermediate);
    swiglu_(gate.v.data(), up.v.data(), act.v.data(), act.v.size());
    const Act down = linear(act, w.w_down);
    keep(FC_TAP_O_PROJ, o_proj), keep(FC_TAP_RESID_MID, resid_mid), keep(FC_TAP_MLP_NORM, mlp_in);
    keep(FC_TAP_GATE, gate), keep(FC_TAP_UP, up), keep(FC_TAP_ACT, act), keep(FC_TAP_DOWN, down);
    keep(FC_TAP_RESID_OUT, add(resid_mid, down));
    return out;
  }

  TapValues head(const Input& in) override {
    if (in.cols != s_.hidden) throw std::invalid_argument("head input shape");
    Act x(static_cast<int>(in.rows), s_.hidden);
    for (std::size_t i = 0; i < x.v.size(); ++i) x.v[i] = bf16(static_cast<float>(in.data[i]));
    const Act normed = rms_norm(x, final_norm_, s_.hidden, static_cast<float>(s_.rms_eps));
    TapValues out;
    out.emplace_back(FC_TAP_FINAL_NORM, to_bf16_matrix(normed));
    out.emplace_back(FC_TAP_LOGITS, to_bf16_matrix(linear(normed, lm_head_)));
    return out;
  }

 private:
  // Rotates every head of one row in place at position `pos`, then rounds to bf16.
  void rope(float* row, int heads, int pos) const {
    const int D = s_.head_dim, half = D / 2;
    for (int h = 0; h < heads; ++h) {
      float* x = row + h * D;
      for (int i = 0; i < half; ++i) {
        const double inv_freq = std::pow(s_.rope_theta, -2.0 * i / D);
        const float angle = static_cast<float>(pos * inv_freq);
        const float c = std::cos(angle), s = std::sin(angle);
        const int a = s_.rope_style == FC_ROPE_INTERLEAVED ? 2 * i : i;
        const int b = s_.rope_style == FC_ROPE_INTERLEAVED ? 2 * i + 1 : i + half;
        const float xa = x[a], xb = x[b];
        x[a] = bf16(xa * c - xb * s);
        x[b] = bf16(xb * c + xa * s);
      }
    }
  }

  fc_model_spec s_;
  SwigluFn swiglu_;
  Weights embed_, lm_head_;
  std::vector<float> final_norm_;
  std::vector<Layer> layers_;
  int batch_ = 0, capacity_ = 0;
  std::vector<std::vector<float>> k_cache_, v_cache_;
  std::vector<int> kv_len_;
};

}  // namespace example
