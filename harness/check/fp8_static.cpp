// The FP8 key bound (fp8_static.h). RMSNorm's normalized vector u = x / sqrt(mean(x^2) +
// eps) has ||u||_2 < sqrt(width) for any input, so
// - with k_norm (Qwen3): k_j = w_j u_j over head_dim; RoPE rotates pairs (k_i, k_p), so
//   |k_rope_i| <= sqrt(k_i^2 + k_p^2) <= max|w| * sqrt(head_dim);
// - without: k_i = r_i . u + b_i with r_i = Wk_i * attn_norm (elementwise), so by
//   Cauchy-Schwarz and the same pair argument |k_rope_i| <= sqrt(2) * (sqrt(hidden) *
//   max_i ||r_i|| + max|b|).
// Exact bounds, reached only when an input puts all its energy where the weights are
// largest; real keys sit well below them. Their use: a bound under 448 * s proves no key
// can clip at scale s.
#include "harness/check/fp8_static.h"

#include <cmath>
#include <map>

#include <fmt/core.h>

#include "harness/core/error.h"
#include "harness/core/fp8.h"

namespace fusecheck::check {

namespace {

std::vector<float> values(const TensorView* t, const std::string& what, const std::string& file) {
  if (!t) throw InputError(file, "FP8 key bound: missing tensor " + what);
  std::vector<float> v(static_cast<std::size_t>(t->numel()));
  t->to_float(std::span<float>(v));
  return v;
}

double max_abs(const std::vector<float>& v) {
  double m = 0;
  for (float x : v) m = std::max(m, std::fabs(static_cast<double>(x)));
  return m;
}

// Static scales are fixed before the keys they must hold are seen: a bound above the
// cache's range means some input can clip (fail); above half of it, the margin is one
// binade (warn). Dynamic scales are not judged.
const std::map<std::string, std::optional<Fp8Thresholds>>& table() {
  static const std::map<std::string, std::optional<Fp8Thresholds>> t = {
      {"fp8-kv", Fp8Thresholds{0.5, 1.0}},
      {"fp8-kv-per-head", Fp8Thresholds{0.5, 1.0}},
      {"fp8-w8a8", Fp8Thresholds{0.5, 1.0}},
      {"fp8-kv-dynamic", std::nullopt},
      {"fp8-kv-per-head-dynamic", std::nullopt},
  };
  return t;
}

}  // namespace

bool is_fp8_recipe(const std::string& recipe) { return table().count(recipe) > 0; }

std::optional<Fp8Thresholds> fp8_static_thresholds(const std::string& recipe) {
  const auto it = table().find(recipe);
  if (it == table().end()) {
    std::string known;
    for (const auto& [name, t] : table()) known += (known.empty() ? "" : ", ") + name;
    throw InputError("--fp8-recipe", fmt::format("'{}' is not an FP8 recipe (known: {})",
                                                 recipe.substr(0, 64), known));
  }
  return it->second;
}

Fp8StaticFigure fp8_key_bound(const Checkpoint& ckpt, const std::string& recipe, double scale) {
  if (!(scale > 0) || !std::isfinite(scale)) {
    throw InputError("--fp8-scale", fmt::format("the KV scale must be a finite number above zero, got {}", scale));
  }
  Fp8StaticFigure f;
  f.recipe = recipe;
  f.scale = scale;
  f.thresholds = fp8_static_thresholds(recipe);
  const ModelSpec& s = ckpt.spec();
  const std::string file = ckpt.path().string();
  for (int l = 0; l < s.n_layers; ++l) {
    const LayerTensors& t = ckpt.model().layers.at(static_cast<std::size_t>(l));
    Fp8LayerBound b;
    b.layer = l;
    if (s.has_qk_norm) {
      b.from_k_norm = true;
      b.bound = max_abs(values(t.k_norm, fmt::format("layer {} k_norm", l), file)) * std::sqrt(double(s.head_dim));
    } else {
      const auto norm = values(t.attn_norm, fmt::format("layer {} attn_norm", l), file);
      const auto wk = values(t.wk, fmt::format("layer {} k_proj", l), file);
      if (norm.size() != static_cast<std::size_t>(s.hidden) ||
          wk.size() != static_cast<std::size_t>(s.hidden) * static_cast<std::size_t>(s.kv_width())) {
        throw InputError(file, fmt::format("FP8 key bound: layer {} attn_norm or k_proj has the wrong size", l));
      }
      double row_max = 0;
      for (int i = 0; i < s.kv_width(); ++i) {
        double sq = 0;
        for (int j = 0; j < s.hidden; ++j) {
          const double r = double(wk[std::size_t(i) * std::size_t(s.hidden) + std::size_t(j)]) * norm[std::size_t(j)];
          sq += r * r;
        }
        row_max = std::max(row_max, std::sqrt(sq));
      }
      const double bias = t.bk ? max_abs(values(t.bk, fmt::format("layer {} k_proj.bias", l), file)) : 0.0;
      b.bound = std::sqrt(2.0) * (std::sqrt(double(s.hidden)) * row_max + bias);
    }
    b.ratio = b.bound / (kE4m3Max * scale);
    if (f.layers.empty() || b.ratio > f.layers[std::size_t(f.worst_layer)].ratio) f.worst_layer = l;
    f.layers.push_back(b);
  }
  const double worst = f.layers.empty() ? 0 : f.layers[std::size_t(f.worst_layer)].ratio;
  if (!f.thresholds) {
    f.status = "not judged";
  } else if (!(worst <= f.thresholds->fail)) {
    f.status = "fail";
  } else {
    f.status = worst > f.thresholds->warn ? "warn" : "ok";
  }
  return f;
}

std::string render_fp8_static(const Fp8StaticFigure& f) {
  std::string out = fmt::format("\nFP8 key bound ({}, KV scale {}; a key above 448 x scale clips)\n", f.recipe, f.scale);
  for (const auto& b : f.layers) {
    out += fmt::format("  layer {:>3}: |k| <= {:10.4g} ({}) = {:8.3f} x 448 x scale\n", b.layer, b.bound,
                       b.from_k_norm ? "k_norm" : "attn_norm, k_proj", b.ratio);
  }
  const auto& w = f.layers.empty() ? Fp8LayerBound{} : f.layers[std::size_t(f.worst_layer)];
  if (f.thresholds) {
    out += fmt::format("FP8 KEY BOUND: {} (worst layer {}: {:.3f}; warn above {}, fail above {})\n",
                       f.status == "ok" ? "OK" : f.status == "warn" ? "WARNING" : "FAIL", w.layer, w.ratio,
                       f.thresholds->warn, f.thresholds->fail);
  } else {
    out += fmt::format("FP8 KEY BOUND: not judged ({} scales follow the keys; worst layer {}: {:.3f})\n",
                       f.recipe, w.layer, w.ratio);
  }
  return out;
}

int fp8_static_exit_code(const Fp8StaticFigure& f) { return f.status == "fail" ? 2 : f.status == "warn" ? 1 : 0; }

}  // namespace fusecheck::check
