// DecoderPath: the layer-by-layer CPU forward (embedding, decoder layers with a KV cache,
// final norm and lm_head) behind ref64-cpu, ref32-cpu and emulated-cpu.
#include "reference/decoder_path.h"

#include <cstdlib>
#include <stdexcept>
#include <type_traits>

#include <fmt/core.h>

#include "harness/core/error.h"
#include "reference/normal_sampler.h"

namespace fusecheck::ref {

namespace {
template <class R>
R make_rounding(const Recipe* recipe, int slots) {
  if constexpr (std::is_same_v<R, RecipeRounding>) {
    if (!recipe) throw std::logic_error("emulated-cpu needs a recipe");
    return R(*recipe, slots);
  } else {
    return R{};
  }
}

template <class R>
R make_rounding(std::vector<Recipe> per_slot, int slots) {
  if constexpr (std::is_same_v<R, RecipeRounding>) {
    if (static_cast<int>(per_slot.size()) != slots) {
      throw std::logic_error("emulated-cpu needs one recipe per layer and one for the head");
    }
    return R(std::move(per_slot));
  } else {
    throw std::logic_error("only emulated-cpu takes a recipe per layer");
  }
}

std::size_t default_budget() {
  if (const char* mb = std::getenv("FUSECHECK_REF_CACHE_MB"); mb && *mb) {
    return static_cast<std::size_t>(std::strtoull(mb, nullptr, 10)) << 20;
  }
  return std::size_t{6144} << 20;
}

std::string shape_text(const TensorView& t) {
  std::string s = "[";
  for (std::size_t i = 0; i < t.shape.size(); ++i) s += (i ? ", " : "") + std::to_string(t.shape[i]);
  return s + "]";
}

void check_spec(const Checkpoint& ckpt) {
  const ModelSpec& s = ckpt.spec();
  const std::string where = ckpt.path().string();
  if (s.n_layers <= 0 || s.hidden <= 0 || s.n_heads <= 0 || s.n_kv_heads <= 0 ||
      s.head_dim <= 0 || s.intermediate <= 0 || s.vocab <= 0) {
    throw InputError(where, "model spec has a non-positive size");
  }
  if (s.n_heads % s.n_kv_heads != 0) {
    throw InputError(where, fmt::format("{} attention heads are not a multiple of {} kv heads",
                                        s.n_heads, s.n_kv_heads));
  }
  if (s.head_dim % 2 != 0 || (s.rope_dim != 0 && s.rope_dim != s.head_dim)) {
    throw InputError(where, fmt::format("RoPE over {} of {} head dims is not supported "
                                        "(needs an even head_dim, fully rotated)",
                                        s.rope_dim, s.head_dim));
  }
  const ModelTensors& m = ckpt.model();
  if (!m.embed || !m.final_norm || !m.lm_head || static_cast<int>(m.layers.size()) != s.n_layers) {
    throw InputError(where, "checkpoint lacks the embedding, final norm, lm_head or a layer");
  }
}
}  // namespace

template <class S, class R>
DecoderPath<S, R>::DecoderPath(const Checkpoint& ckpt, std::string name, const Recipe* recipe,
                               WeightFormat weights)
    : DecoderPath(ckpt, std::move(name), make_rounding<R>(recipe, ckpt.spec().n_layers + 1), weights) {}

template <class S, class R>
DecoderPath<S, R>::DecoderPath(const Checkpoint& ckpt, std::string name, std::vector<Recipe> recipe_per_slot)
    : DecoderPath(ckpt, std::move(name), make_rounding<R>(std::move(recipe_per_slot), ckpt.spec().n_layers + 1),
                  WeightFormat::as_stored) {}

template <class S, class R>
DecoderPath<S, R>::DecoderPath(const Checkpoint& ckpt, std::string name, R round, WeightFormat weights)
    : ckpt_(ckpt),
      spec_(ckpt.spec()),
      name_(std::move(name)),
      round_(std::move(round)),
      weight_format_(weights),
      budget_(default_budget()) {
  if (R::kRounds && weights != WeightFormat::as_stored) {
    throw std::logic_error(name_ + ": a recipe rounds its weights itself (RoundPoint::weights)");
  }
  check_spec(ckpt);
  for (Tap t : kLayerTaps) {
    if (!spec_.has_qk_norm && (t == Tap::q_normed || t == Tap::k_normed)) continue;
    taps_.push_back(t);
  }
  weights_recorded_.assign(spec_.n_layers + 1, false);
  reset(1, spec_.max_position > 0 ? std::min(spec_.max_position, 4096) : 4096);
}

template <class S, class R>
std::vector<Tap> DecoderPath<S, R>::taps() const {
  return taps_;
}

template <class S, class R>
const Recipe* DecoderPath<S, R>::recipe() const {
  if constexpr (R::kRounds) {
    return &round_.recipe();
  } else {
    return nullptr;
  }
}

template <class S, class R>
std::map<std::string, Headroom> DecoderPath<S, R>::headroom(int layer) const {
  if constexpr (R::kRounds) {
    return round_.report(layer);
  } else {
    return {};
  }
}

template <class S, class R>
const std::pair<KvFp8Quantizer, KvFp8Quantizer>* DecoderPath<S, R>::kv_fp8(int layer) const {
  if constexpr (R::kRounds) {
    return round_.kv_fp8(layer);
  } else {
    return nullptr;
  }
}

template <class S, class R>
void DecoderPath<S, R>::reset(int batch, int capacity) {
  if (batch <= 0 || capacity <= 0) throw std::invalid_argument(name_ + ": reset needs batch, capacity > 0");
  batch_ = batch;
  capacity_ = capacity;
  k_cache_.assign(spec_.n_layers, {});
  v_cache_.assign(spec_.n_layers, {});
  cached_len_.assign(spec_.n_layers, 0);
  perturb_calls_ = 0;
  if constexpr (R::kRounds) round_.clear();
}

template <class S, class R>
void DecoderPath<S, R>::set_perturbation(std::optional<Perturbation> p) {
  if constexpr (R::kRounds) {
    if (p) throw std::logic_error(name_ + " does not support perturbation (reference paths only)");
  }
  if (p) {
    const bool head_tap = p->tap == Tap::final_norm || p->tap == Tap::logits;
    if (!head_tap && (p->layer < 0 || p->layer >= spec_.n_layers)) {
      throw InputError("", fmt::format("perturbation layer {} is outside 0..{}", p->layer,
                                       spec_.n_layers - 1));
    }
    if (!spec_.has_qk_norm && (p->tap == Tap::q_normed || p->tap == Tap::k_normed)) {
      throw InputError("", fmt::format("perturbation tap {} does not exist in a {} model",
                                       tap_name(p->tap), spec_.architecture));
    }
  }
  perturbation_ = p;
  perturb_calls_ = 0;
}

template <class S, class R>
void DecoderPath<S, R>::perturb(int layer, Tap tap, Mat<S>& m) {
  if (!perturbation_ || perturbation_->tap != tap) return;
  const bool head_tap = tap == Tap::final_norm || tap == Tap::logits;
  if (!head_tap && perturbation_->layer != layer) return;
  double sumsq = 0;
  for (Index i = 0; i < m.size(); ++i) sumsq += static_cast<double>(m.data()[i]) * m.data()[i];
  const double rms = std::sqrt(sumsq / static_cast<double>(std::max<Index>(1, m.size())));
  // A fresh stream per call (decode steps each get their own noise), reproducible from seed.
  NormalSampler normal(perturbation_->seed ^ (0x9e3779b97f4a7c15ull * ++perturb_calls_));
  const double scale = perturbation_->relative_size * rms;
  for (Index i = 0; i < m.size(); ++i) m.data()[i] += static_cast<S>(scale * normal.next());
}

template <class S, class R>
Mat<S> DecoderPath<S, R>::convert_matrix(const TensorView* t, std::int64_t rows, std::int64_t cols,
                                         const char* role, bool record) {
  if (!t) throw InputError(ckpt_.path().string(), fmt::format("missing tensor for {}", role));
  if (t->numel() != rows * cols || t->rows() != rows) {
    throw InputError(t->file, fmt::format("tensor {} ({}) has shape {}, expected [{}, {}]",
                                          t->name, role, shape_text(*t), rows, cols));
  }
  Mat<S> m(rows, cols);
  if constexpr (std::is_same_v<S, double>) {
    if (t->dtype == DType::F64) {
      const std::vector<double> v = t->to_double();
      std::copy(v.begin(), v.end(), m.data());
    } else {
      // Every stored format but F64 widens exactly through float: one pass, one buffer.
      Mat<float> f(rows, cols);
      t->to_float(std::span<float>(f.data(), static_cast<std::size_t>(f.size())));
      m = f.template cast<double>();
    }
  } else {
    t->to_float(std::span<float>(m.data(), static_cast<std::size_t>(m.size())));
  }
  if constexpr (R::kRounds) {
    for (Index i = 0; i < m.size(); ++i) {
      m.data()[i] = record ? round_(RoundPoint::weights, m.data()[i]) : round_.recipe().round(m.data()[i]);
    }
  } else if (weight_format_ == WeightFormat::bf16) {
    for (Index i = 0; i < m.size(); ++i) m.data()[i] = weight_value(static_cast<float>(m.data()[i]));
  }
  return m;
}

template <class S, class R>
S DecoderPath<S, R>::weight_value(float stored) const {
  if constexpr (R::kRounds) {
    return round_.recipe().round(stored);
  } else {
    return static_cast<S>(weight_format_ == WeightFormat::bf16 ? round_to_bf16(stored) : stored);
  }
}

template <class S, class R>
Vec<S> DecoderPath<S, R>::convert_vector(const TensorView* t, std::int64_t n, const char* role,
                                         bool record) {
  Mat<S> m = convert_matrix(t, n, 1, role, record);
  return Eigen::Map<const Vec<S>>(m.data(), n);
}

template <class S, class R>
std::shared_ptr<const ConvertedWeights<S>> DecoderPath<S, R>::convert_layer(int l) {
  const LayerTensors& t = ckpt_.model().layers.at(l);
  const std::int64_t h = spec_.hidden, qw = spec_.q_width(), kw = spec_.kv_width(),
                     im = spec_.intermediate, hd = spec_.head_dim;
  const bool record = !weights_recorded_[l];
  weights_recorded_[l] = true;
  auto w = std::make_shared<Weights>();
  w->attn_norm = convert_vector(t.attn_norm, h, "attn_norm", record);
  w->wq = convert_matrix(t.wq, qw, h, "q_proj", record);
  w->wk = convert_matrix(t.wk, kw, h, "k_proj", record);
  w->wv = convert_matrix(t.wv, kw, h, "v_proj", record);
  if (spec_.has_qkv_bias) {
    w->bq = convert_vector(t.bq, qw, "q_proj.bias", record);
    w->bk = convert_vector(t.bk, kw, "k_proj.bias", record);
    w->bv = convert_vector(t.bv, kw, "v_proj.bias", record);
  }
  if (spec_.has_qk_norm) {
    w->q_norm = convert_vector(t.q_norm, hd, "q_norm", record);
    w->k_norm = convert_vector(t.k_norm, hd, "k_norm", record);
  }
  w->wo = convert_matrix(t.wo, h, qw, "o_proj", record);
  w->mlp_norm = convert_vector(t.mlp_norm, h, "mlp_norm", record);
  w->w_gate = convert_matrix(t.w_gate, im, h, "gate_proj", record);
  w->w_up = convert_matrix(t.w_up, im, h, "up_proj", record);
  w->w_down = convert_matrix(t.w_down, h, im, "down_proj", record);
  if constexpr (R::kRounds) {
    if (round_.recipe().gemm_fp8) {
      for (auto [m, point] : {std::pair{&w->wq, RoundPoint::q}, std::pair{&w->wk, RoundPoint::k},
                              std::pair{&w->wv, RoundPoint::v}, std::pair{&w->wo, RoundPoint::o_proj},
                              std::pair{&w->w_gate, RoundPoint::gate}, std::pair{&w->w_up, RoundPoint::up},
                              std::pair{&w->w_down, RoundPoint::down}}) {
        w->fp8_scale[point] = round_.quantize_weight(*m, point, record);
      }
    }
  }
  w->bytes = sizeof(S) * static_cast<std::size_t>(
      w->wq.size() + w->wk.size() + w->wv.size() + w->wo.size() + w->w_gate.size() +
      w->w_up.size() + w->w_down.size());
  return w;
}

template <class S, class R>
std::shared_ptr<const ConvertedWeights<S>> DecoderPath<S, R>::convert_head() {
  const int slot = spec_.n_layers;
  const bool record = !weights_recorded_[slot];
  weights_recorded_[slot] = true;
  auto w = std::make_shared<Weights>();
  w->final_norm = convert_vector(ckpt_.model().final_norm, spec_.hidden, "final_norm", record);
  w->lm_head = convert_matrix(ckpt_.model().lm_head, spec_.vocab, spec_.hidden, "lm_head", record);
  w->bytes = sizeof(S) * static_cast<std::size_t>(w->lm_head.size());
  return w;
}

template <class S, class R>
std::shared_ptr<const ConvertedWeights<S>> DecoderPath<S, R>::weights(int slot) {
  if (auto it = cache_.find(slot); it != cache_.end()) {
    lru_.remove(slot);
    lru_.push_front(slot);
    return it->second;
  }
  if constexpr (R::kRounds) round_.select(slot);
  auto w = slot == spec_.n_layers ? convert_head() : convert_layer(slot);
  // Keep it when it fits, dropping least recently used entries; a model larger than the
  // budget is converted again on every use (slower, bounded memory).
  while (!lru_.empty() && cached_bytes_ + w->bytes > budget_) {
    const int victim = lru_.back();
    lru_.pop_back();
    cached_bytes_ -= cache_.at(victim)->bytes;
    cache_.erase(victim);
  }
  if (cached_bytes_ + w->bytes <= budget_) {
    cache_.emplace(slot, w);
    lru_.push_front(slot);
    cached_bytes_ += w->bytes;
  }
  return w;
}

template <class S, class R>
TapMatrix DecoderPath<S, R>::embed(std::span<const std::int32_t> tokens) {
  const TensorView* table = ckpt_.model().embed;
  if (table->numel() != static_cast<std::int64_t>(spec_.vocab) * spec_.hidden) {
    throw InputError(table->file, fmt::format("embedding {} has shape {}, expected [{}, {}]",
                                              table->name, shape_text(*table), spec_.vocab,
                                              spec_.hidden));
  }
  TapMatrix out(static_cast<Index>(tokens.size()), spec_.hidden);
  std::vector<float> row(static_cast<std::size_t>(spec_.hidden));
  // ref64 reads an F64 table exactly; every other stored format widens exactly through
  // float, and a quantized table decodes whole rows (a row holds whole blocks).
  const bool exact_f64 = std::is_same_v<S, double> && table->dtype == DType::F64 && !table->codec &&
                         weight_format_ == WeightFormat::as_stored;
  for (std::size_t r = 0; r < tokens.size(); ++r) {
    const std::int32_t id = tokens[r];
    if (id < 0 || id >= spec_.vocab) {
      throw InputError("", fmt::format("token id {} is outside the vocabulary (0..{})", id,
                                       spec_.vocab - 1));
    }
    const std::int64_t base = static_cast<std::int64_t>(id) * spec_.hidden;
    if (exact_f64) {
      for (int c = 0; c < spec_.hidden; ++c) out(static_cast<Index>(r), c) = table->at(base + c);
      continue;
    }
    table->to_float(base, std::span<float>(row));
    // Rows in the path's precision and weight format (emulated: the recipe's format).
    for (int c = 0; c < spec_.hidden; ++c) {
      out(static_cast<Index>(r), c) = static_cast<double>(weight_value(row[static_cast<std::size_t>(c)]));
    }
  }
  return out;
}

template <class S, class R>
Mat<S> DecoderPath<S, R>::to_scalar(const TapMatrix& m, RoundPoint input_point) {
  Mat<S> x = m.template cast<S>();
  round_all(round_, input_point, x);
  return x;
}

template <class S, class R>
void DecoderPath<S, R>::put_tap(TapSet& out, Tap tap, const Mat<S>& m) const {
  out[tap] = m.template cast<double>();
}

template <class S, class R>
TapSet DecoderPath<S, R>::layer(int l, const TapMatrix& input) {
  if (l < 0 || l >= spec_.n_layers) throw std::out_of_range(fmt::format("{}: no layer {}", name_, l));
  if (input.cols() != spec_.hidden || input.rows() == 0 || input.rows() % batch_ != 0) {
    throw std::invalid_argument(fmt::format("{}: layer input is {}x{}, expected (batch {} x n) x {}",
                                            name_, input.rows(), input.cols(), batch_, spec_.hidden));
  }
  const Index n = input.rows() / batch_;
  const Index past = cached_len_[l];
  if (past + n > capacity_) {
    throw std::length_error(fmt::format("{}: layer {} KV cache holds {} tokens; {} more exceed "
                                        "its capacity {}", name_, l, past, n, capacity_));
  }
  const auto w = weights(l);
  if constexpr (R::kRounds) round_.select(l);
  const int hd = spec_.head_dim;
  const double eps = spec_.rms_eps;
  TapSet taps;

  Mat<S> x = to_scalar(input, RoundPoint::layer_input);
  Mat<S> attn_norm = rms_norm(x, w->attn_norm, eps, spec_.hidden, round_,
                              {RoundPoint::attn_norm_sumsq, RoundPoint::attn_norm_normalized,
                               RoundPoint::attn_norm});
  perturb(l, Tap::attn_norm, attn_norm);
  put_tap(taps, Tap::attn_norm, attn_norm);

  // Projections; a Qwen2 bias joins the FP32 accumulator before the output rounding.
  // fp8-w8a8: an FP8 GEMM (reference/w8a8.h) where the weight was quantized at load.
  auto project = [&](const Mat<S>& in, const Mat<S>& weight, const Vec<S>* bias, RoundPoint p, Tap tap) {
    const auto fp8 = w->fp8_scale.find(p);
    Mat<S> y = [&]() -> Mat<S> {
      if constexpr (R::kRounds) {
        if (fp8 != w->fp8_scale.end()) return round_.fp8_gemm(in, weight, fp8->second, p);
      }
      return in * weight.transpose();
    }();
    if (bias && bias->size() > 0) y.rowwise() += bias->transpose();
    round_all(round_, p, y);
    perturb(l, tap, y);
    put_tap(taps, tap, y);
    return y;
  };
  Mat<S> q = project(attn_norm, w->wq, &w->bq, RoundPoint::q, Tap::q);
  Mat<S> k = project(attn_norm, w->wk, &w->bk, RoundPoint::k, Tap::k);
  Mat<S> v = project(attn_norm, w->wv, &w->bv, RoundPoint::v, Tap::v);

  if (spec_.has_qk_norm) {
    q = rms_norm(q, w->q_norm, eps, hd, round_,
                 {RoundPoint::q_norm_sumsq, RoundPoint::q_norm_normalized, RoundPoint::q_normed});
    perturb(l, Tap::q_normed, q);
    put_tap(taps, Tap::q_normed, q);
    k = rms_norm(k, w->k_norm, eps, hd, round_,
                 {RoundPoint::k_norm_sumsq, RoundPoint::k_norm_normalized, RoundPoint::k_normed});
    perturb(l, Tap::k_normed, k);
    put_tap(taps, Tap::k_normed, k);
  }

  RopeTable<S> table;
  if constexpr (R::kRounds) {
    table = round_.recipe().rope_angles_in_fp32 ? rope_table_fp32_angles(spec_, past, n)
                                                : rope_table<S>(spec_, past, n);
    round_all(round_, RoundPoint::rope_cos_sin, table.cos);
    round_all(round_, RoundPoint::rope_cos_sin, table.sin);
  } else {
    table = rope_table<S>(spec_, past, n);
  }
  apply_rope(q, hd, spec_.rope_style, table, n, round_, RoundPoint::q_rope);
  perturb(l, Tap::q_rope, q);
  put_tap(taps, Tap::q_rope, q);
  apply_rope(k, hd, spec_.rope_style, table, n, round_, RoundPoint::k_rope);
  perturb(l, Tap::k_rope, k);
  put_tap(taps, Tap::k_rope, k);

  auto& kc = k_cache_[l];
  auto& vc = v_cache_[l];
  if (kc.empty()) {
    kc.assign(batch_, Mat<S>(capacity_, spec_.kv_width()));
    vc.assign(batch_, Mat<S>(capacity_, spec_.kv_width()));
  }
  const Index total = past + n;
  Mat<S> attn(x.rows(), spec_.q_width());
  const S scale = static_cast<S>(1.0 / std::sqrt(static_cast<double>(hd)));
  // fp8-kv: the cache holds what FP8 reads back (the k_rope and v taps keep bf16).
  if constexpr (R::kRounds) round_.store_kv(k, v, spec_.n_kv_heads);
  for (int b = 0; b < batch_; ++b) {
    kc[b].middleRows(past, n) = k.middleRows(b * n, n);
    vc[b].middleRows(past, n) = v.middleRows(b * n, n);
    Index partial_chunk = 0;
    const Recipe* partial = nullptr;
    if constexpr (R::kRounds) partial = &round_.recipe(), partial_chunk = partial->decode_partial_chunk;
    causal_gqa_attention<S>(q.middleRows(b * n, n), kc[b], vc[b], total, spec_.n_heads,
                            spec_.n_kv_heads, hd, scale, round_, attn.middleRows(b * n, n), partial_chunk,
                            partial);
  }
  cached_len_[l] = static_cast<int>(total);
  round_all(round_, RoundPoint::attn, attn);
  perturb(l, Tap::attn, attn);
  put_tap(taps, Tap::attn, attn);

  Mat<S> o = project(attn, w->wo, nullptr, RoundPoint::o_proj, Tap::o_proj);
  Mat<S> resid_sum = x + o;
  Mat<S> resid_mid = resid_sum;
  round_all(round_, RoundPoint::resid_mid, resid_mid);
  perturb(l, Tap::resid_mid, resid_mid);
  put_tap(taps, Tap::resid_mid, resid_mid);

  bool norm_reads_sum = false;
  if constexpr (R::kRounds) norm_reads_sum = round_.recipe().mlp_norm_reads_unrounded_sum;
  Mat<S> mlp_norm = rms_norm(norm_reads_sum ? resid_sum : resid_mid, w->mlp_norm, eps, spec_.hidden,
                             round_, {RoundPoint::mlp_norm_sumsq, RoundPoint::mlp_norm_normalized,
                                      RoundPoint::mlp_norm});
  perturb(l, Tap::mlp_norm, mlp_norm);
  put_tap(taps, Tap::mlp_norm, mlp_norm);

  Mat<S> gate = project(mlp_norm, w->w_gate, nullptr, RoundPoint::gate, Tap::gate);
  Mat<S> up = project(mlp_norm, w->w_up, nullptr, RoundPoint::up, Tap::up);
  Mat<S> act(gate.rows(), gate.cols());
  for (Index i = 0; i < act.size(); ++i) {
    const S s = round_(RoundPoint::silu, silu(gate.data()[i]));
    act.data()[i] = round_(RoundPoint::act, s * up.data()[i]);
  }
  perturb(l, Tap::act, act);
  put_tap(taps, Tap::act, act);

  Mat<S> down = project(act, w->w_down, nullptr, RoundPoint::down, Tap::down);
  Mat<S> resid_out = resid_mid + down;
  round_all(round_, RoundPoint::resid_out, resid_out);
  perturb(l, Tap::resid_out, resid_out);
  put_tap(taps, Tap::resid_out, resid_out);
  return taps;
}

template <class S, class R>
TapSet DecoderPath<S, R>::head(const TapMatrix& hidden) {
  if (hidden.cols() != spec_.hidden) {
    throw std::invalid_argument(fmt::format("{}: head input has {} columns, expected {}", name_,
                                            hidden.cols(), spec_.hidden));
  }
  const auto w = weights(spec_.n_layers);
  if constexpr (R::kRounds) round_.select(spec_.n_layers);
  TapSet taps;
  Mat<S> x = to_scalar(hidden, RoundPoint::layer_input);
  Mat<S> normed = rms_norm(x, w->final_norm, spec_.rms_eps, spec_.hidden, round_,
                           {RoundPoint::final_norm_sumsq, RoundPoint::final_norm_normalized,
                            RoundPoint::final_norm});
  perturb(spec_.n_layers, Tap::final_norm, normed);
  put_tap(taps, Tap::final_norm, normed);
  Mat<S> logits = normed * w->lm_head.transpose();
  round_all(round_, RoundPoint::logits, logits);
  perturb(spec_.n_layers, Tap::logits, logits);
  put_tap(taps, Tap::logits, logits);
  return taps;
}

template class DecoderPath<double, NoRounding<double>>;
template class DecoderPath<float, NoRounding<float>>;
template class DecoderPath<float, RecipeRounding>;

}  // namespace fusecheck::ref
