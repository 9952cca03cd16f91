// RecipeRounding: the rounding hook of emulated-cpu (see reference/ops.h). Rounds a value
// when the recipe rounds at that point and records every value's overflow headroom, per
// slot (one slot per layer, then one for the head). fp8-kv recipes also quantize what
// enters the KV cache (reference/kv_fp8.h), one quantizer per layer and tensor; fp8-w8a8
// runs the layer's GEMMs in E4M3 (reference/w8a8.h) and counts weights and inputs per GEMM.
// A recipe mix (harness/core/recipe_mix.h) gives every slot its own recipe, all of one format.
#pragma once

#include <array>
#include <map>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "reference/kv_fp8.h"
#include "reference/recipe.h"
#include "reference/w8a8.h"

namespace fusecheck::ref {

class RecipeRounding {
 public:
  static constexpr bool kRounds = true;

  RecipeRounding(const Recipe& recipe, int slots)
      : RecipeRounding(std::vector<Recipe>(static_cast<std::size_t>(slots), recipe)) {}
  // One recipe per slot (layers, then the head); all must round to one format (the
  // residual stream between layers has one).
  explicit RecipeRounding(std::vector<Recipe> per_slot)
      : recipes_(std::move(per_slot)), acc_(recipes_.size()), gemm_fp8_(recipes_.size()) {
    if (recipes_.empty()) throw std::logic_error("RecipeRounding needs a recipe per slot");
    for (const Recipe& r : recipes_) {
      if (r.format != recipes_.front().format) throw std::logic_error("a recipe mix must keep one format");
    }
    max_finite_ = dtype_max_finite(recipes_.front().format);
    for (std::size_t s = 0; s < acc_.size(); ++s) clear_slot(s, true);
  }

  // The selected slot's recipe.
  const Recipe& recipe() const { return recipes_[static_cast<std::size_t>(slot_)]; }
  void select(int slot) { slot_ = slot; }

  float operator()(RoundPoint p, float x) {
    const Recipe& recipe = recipes_[static_cast<std::size_t>(slot_)];
    const float r = recipe.round(x);
    acc_[slot_][static_cast<int>(p)].add(x, r);
    return recipe.rounds_at(p) ? r : x;
  }
  void measure(RoundPoint p, float x) { acc_[slot_][static_cast<int>(p)].add(x, recipe().round(x)); }

  // Forgets what was recorded (weights excepted: they are converted once, not per run)
  // and, for fp8-kv, the calibrated scales.
  void clear() {
    for (std::size_t s = 0; s < acc_.size(); ++s) clear_slot(s, false);
    kv_fp8_.clear();
    for (auto& slot : gemm_fp8_) {
      for (auto& [point, counts] : slot) counts.input = Fp8Stats{};
    }
  }

  // fp8-w8a8: replaces the rows of GEMM `p`'s weight (selected slot) by their E4M3 values
  // and returns the per-output-channel scales; counted once (`record`: first conversion).
  std::vector<float> quantize_weight(Mat<float>& w, RoundPoint p, bool record) {
    Fp8Stats discard;
    return quantize_rows_e4m3(w, record ? gemm_fp8_.at(slot_)[p].weight : discard,
                              fmt::format("layer {} {} weight", slot_, round_point_name(p)));
  }
  // fp8-w8a8: GEMM `p` of the selected slot on E4M3 weights (from quantize_weight), its
  // input quantized per token; FP32 out, before the recipe's output rounding.
  Mat<float> fp8_gemm(const Mat<float>& in, const Mat<float>& w_e4m3, const std::vector<float>& w_scale,
                      RoundPoint p) {
    return fp8_scaled_gemm(in, w_e4m3, w_scale, gemm_fp8_.at(slot_)[p].input,
                           fmt::format("layer {} {} input", slot_, round_point_name(p)));
  }

  // fp8-kv: replaces one append's k_rope and v rows of the selected layer by what the FP8
  // cache reads back. No-op for the other recipes.
  void store_kv(Mat<float>& k, Mat<float>& v, int n_kv_heads) {
    const auto& cfg = recipe().kv_fp8;
    if (!cfg) return;
    auto it = kv_fp8_.find(slot_);
    if (it == kv_fp8_.end()) {
      it = kv_fp8_.emplace(slot_, std::pair{KvFp8Quantizer(*cfg, n_kv_heads), KvFp8Quantizer(*cfg, n_kv_heads)}).first;
    }
    auto& [kq, vq] = it->second;
    kq.append(k, fmt::format("layer {} k_cache", slot_));
    vq.append(v, fmt::format("layer {} v_cache", slot_));
  }
  // fp8-kv: the K and V quantizers of `slot` (nullptr before its first append).
  const std::pair<KvFp8Quantizer, KvFp8Quantizer>* kv_fp8(int slot) const {
    const auto it = kv_fp8_.find(slot);
    return it == kv_fp8_.end() ? nullptr : &it->second;
  }

  std::map<std::string, Headroom> report(int slot) const {
    std::map<std::string, Headroom> out;
    for (int p = 0; p < kRoundPointCount; ++p) {
      const Headroom& h = acc_.at(slot)[p];
      if (h.n_values > 0) out.emplace(std::string(round_point_name(static_cast<RoundPoint>(p))), h);
    }
    // The FP8 tensors' headroom in units of the format: |x / s| against 448.
    auto put_fp8 = [&out](std::string name, const Fp8Stats& st) {
      if (st.n_values == 0) return;
      Headroom h;
      h.max_abs = st.max_abs_scaled;
      h.max_finite = kE4m3Max;
      h.n_values = st.n_values;
      h.n_saturated = st.n_clipped;
      h.n_flushed = st.n_flushed;
      h.n_nonfinite_in = st.n_nonfinite;
      h.rounded = true;
      out.emplace(std::move(name), h);
    };
    if (const auto* kv = kv_fp8(slot)) {
      put_fp8("k_cache.fp8", kv->first.stats());
      put_fp8("v_cache.fp8", kv->second.stats());
    }
    for (const auto& [point, counts] : gemm_fp8_.at(slot)) {
      put_fp8(fmt::format("{}.weight.fp8", round_point_name(point)), counts.weight);
      put_fp8(fmt::format("{}.input.fp8", round_point_name(point)), counts.input);
    }
    return out;
  }

 private:
  void clear_slot(std::size_t s, bool weights_too) {
    auto& slot = acc_[s];
    for (int p = 0; p < kRoundPointCount; ++p) {
      if (!weights_too && p == static_cast<int>(RoundPoint::weights)) continue;
      slot[p] = Headroom{};
      slot[p].max_finite = max_finite_;
      slot[p].rounded = recipes_[s].rounds_at(static_cast<RoundPoint>(p));
    }
  }

  std::vector<Recipe> recipes_;  // per slot
  double max_finite_ = 0;
  std::vector<std::array<Headroom, kRoundPointCount>> acc_;
  std::map<int, std::pair<KvFp8Quantizer, KvFp8Quantizer>> kv_fp8_;  // slot -> K, V
  // fp8-w8a8, per slot and GEMM (keyed by its output point): weights since conversion,
  // inputs since clear().
  struct GemmFp8 {
    Fp8Stats weight, input;
  };
  std::vector<std::map<RoundPoint, GemmFp8>> gemm_fp8_;
  int slot_ = 0;
};

}  // namespace fusecheck::ref
