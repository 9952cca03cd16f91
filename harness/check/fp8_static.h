// The static FP8 figure of `fusecheck check --fp8-recipe R` (docs/fp8-key-bound.md):
// from the weights alone, a bound on |k| as the FP8 KV cache stores it (after k_norm or
// the attention norm, the K projection and RoPE) per layer, against the largest value an
// E4M3 cache holds at a scale s, 448 * s. Thresholds per recipe (fp8_static.cpp): static
// scales can clip a key the prefill did not show; dynamic scales follow the keys (the
// figure is shown, never judged). Kept apart from the scorers (check.cpp).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "harness/core/checkpoint.h"

namespace fusecheck::check {

struct Fp8Thresholds {
  double warn = 0, fail = 0;  // on bound / (448 * scale)
};

struct Fp8LayerBound {
  int layer = 0;
  double bound = 0;  // largest |k_rope| any input can give (RMSNorm output norm is sqrt(width))
  double ratio = 0;  // bound / (448 * scale)
  bool from_k_norm = false;  // Qwen3: the k_norm weights alone bound it
};

struct Fp8StaticFigure {
  std::string recipe;
  double scale = 1;
  std::vector<Fp8LayerBound> layers;
  int worst_layer = 0;
  std::optional<Fp8Thresholds> thresholds;  // absent: dynamic scales, not judged
  std::string status;                        // "ok", "warn", "fail" or "not judged"
};

// Thresholds of an FP8 recipe; nullopt for the dynamic-scale ones. InputError naming the
// FP8 recipes for any other name.
std::optional<Fp8Thresholds> fp8_static_thresholds(const std::string& recipe);

// True when fp8_static_thresholds knows `recipe` (asking, where an unknown name is not an
// error: calibrate's per-recipe section meets every path's recipe).
bool is_fp8_recipe(const std::string& recipe);

// InputError when `scale` is not a finite number above zero or a tensor is missing.
Fp8StaticFigure fp8_key_bound(const Checkpoint& ckpt, const std::string& recipe, double scale);

// Plain-text section for the check report.
std::string render_fp8_static(const Fp8StaticFigure& f);
// 0 ok / not judged, 1 warn, 2 fail (the check's exit codes).
int fp8_static_exit_code(const Fp8StaticFigure& f);

}  // namespace fusecheck::check
