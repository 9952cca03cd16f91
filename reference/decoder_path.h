// The CPU decoder paths: ref64-cpu (double), ref32-cpu (float) and emulated-cpu (float,
// rounded at a recipe's points). One implementation serves all three, so the emulated
// recipe differs from the FP32 reference only where the recipe says it rounds.
#pragma once

#include <cstddef>
#include <list>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "harness/core/checkpoint.h"
#include "harness/core/path.h"
#include "reference/ops.h"
#include "reference/recipe.h"
#include "reference/rounding.h"

namespace fusecheck::ref {

// Converted weights of one layer (or, for the head entry, final norm and lm_head), in S,
// rounded to the recipe's format for emulated-cpu.
template <class S>
struct ConvertedWeights {
  Mat<S> wq, wk, wv, wo, w_gate, w_up, w_down, lm_head;
  Vec<S> attn_norm, mlp_norm, q_norm, k_norm, bq, bk, bv, final_norm;
  // fp8-w8a8: the GEMM matrices hold E4M3 values; their per-output-channel scales, keyed
  // by the GEMM's output point (q, k, v, o_proj, gate, up, down).
  std::map<RoundPoint, std::vector<float>> fp8_scale;
  std::size_t bytes = 0;
};

// The weights a reference path multiplies with: the checkpoint's values exactly (a
// quantized GGUF tensor dequantized as ggml defines it), or those values rounded once to
// bf16 as the GPU and emulated paths store them (ref32-cpu-bf16w: how much of a bf16
// path's divergence the weight rounding alone explains). Recipes round their weights
// themselves (RoundPoint::weights).
enum class WeightFormat { as_stored, bf16 };

template <class S, class R>
class DecoderPath final : public Path {
 public:
  // `recipe` is required for emulated-cpu (R = RecipeRounding) and ignored otherwise.
  // Throws InputError when the checkpoint's spec is one this path cannot run.
  DecoderPath(const Checkpoint& ckpt, std::string name, const Recipe* recipe = nullptr,
              WeightFormat weights = WeightFormat::as_stored);
  // emulated-cpu with a recipe per slot (a recipe mix: n_layers layers, then the head;
  // reference/recipe.h recipes_per_slot). std::logic_error for the references.
  DecoderPath(const Checkpoint& ckpt, std::string name, std::vector<Recipe> recipe_per_slot);

  std::string name() const override { return name_; }
  std::string device() const override { return "cpu"; }
  std::vector<Tap> taps() const override;
  void reset(int batch, int capacity) override;
  TapMatrix embed(std::span<const std::int32_t> tokens) override;
  TapSet layer(int layer, const TapMatrix& input) override;
  TapSet head(const TapMatrix& hidden) override;
  // Reference paths only (emulated-cpu throws std::logic_error). A perturbation at
  // final_norm or logits applies in head() whatever its layer.
  PathCapabilities capabilities() const override { return {.perturbation = !R::kRounds, .headroom = R::kRounds}; }
  void set_perturbation(std::optional<Perturbation> p) override;

  // emulated-cpu: overflow headroom at every point of `layer` (spec().n_layers: the head)
  // since reset(); weights since they were converted. Empty for the references.
  std::map<std::string, Headroom> headroom(int layer) const override;
  const Recipe* recipe() const;
  // fp8-kv recipes: the KV cache quantizers of `layer` (K, V: scales, clipping, flush to
  // zero) since reset(); nullptr for other recipes and before the first append after reset().
  const std::pair<KvFp8Quantizer, KvFp8Quantizer>* kv_fp8(int layer) const;
  // Bytes of converted weights kept between calls (least recently used layers are
  // dropped beyond it). Default: FUSECHECK_REF_CACHE_MB or 6144 MiB.
  void set_weight_cache_budget(std::size_t bytes) { budget_ = bytes; }
  std::size_t cached_weight_bytes() const { return cached_bytes_; }

 private:
  DecoderPath(const Checkpoint& ckpt, std::string name, R round, WeightFormat weights);
  using Weights = ConvertedWeights<S>;
  std::shared_ptr<const Weights> weights(int slot);
  std::shared_ptr<const Weights> convert_layer(int layer);
  std::shared_ptr<const Weights> convert_head();
  Mat<S> convert_matrix(const TensorView* t, std::int64_t rows, std::int64_t cols,
                        const char* role, bool record);
  Vec<S> convert_vector(const TensorView* t, std::int64_t n, const char* role, bool record);
  Mat<S> to_scalar(const TapMatrix& m, RoundPoint input_point);
  S weight_value(float stored) const;
  void perturb(int layer, Tap tap, Mat<S>& m);
  void put_tap(TapSet& out, Tap tap, const Mat<S>& m) const;

  const Checkpoint& ckpt_;
  const ModelSpec spec_;
  std::string name_;
  R round_;
  WeightFormat weight_format_;
  std::vector<Tap> taps_;
  int batch_ = 0;
  int capacity_ = 0;
  std::vector<std::vector<Mat<S>>> k_cache_, v_cache_;  // [layer][sequence]
  std::vector<int> cached_len_;                          // per layer
  std::optional<Perturbation> perturbation_;
  std::uint64_t perturb_calls_ = 0;

  std::map<int, std::shared_ptr<const Weights>> cache_;  // slot n_layers: the head
  std::list<int> lru_;                                   // most recent first
  std::vector<bool> weights_recorded_;                   // headroom of weights counted once
  std::size_t cached_bytes_ = 0;
  std::size_t budget_ = 0;
};

using Ref64Path = DecoderPath<double, NoRounding<double>>;
using Ref32Path = DecoderPath<float, NoRounding<float>>;
using EmulatedPath = DecoderPath<float, RecipeRounding>;

}  // namespace fusecheck::ref
