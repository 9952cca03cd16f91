// Scale delivery check of the fp8-kv recipes (docs/recipes.md, "Scale delivery check"):
// the same run with the calibrated KV scales multiplied by 1, 4 and 16 (values quantized
// and dequantized with the multiplied scale) must give the same logits within FP8
// rounding. A kernel that never receives the scales (TensorRT-LLM PR 16916) dequantizes
// with the wrong factor, and its logits move with the multiplier. Clipping is told apart:
// a static scale from the prefill may clip later keys at x1 and not at x16, which moves
// the logits too but is a headroom finding (k_cache.fp8 / v_cache.fp8 counts), not a
// delivery failure.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "harness/core/checkpoint.h"
#include "harness/core/path.h"
#include "reference/recipe.h"

namespace fusecheck::ref {

struct ScaleDeliveryRow {
  float multiplier = 1;
  std::int64_t clipped = 0;  // K and V values clipped over the run, all layers
  bool judged = false;       // clipped no more than the x16 run: held to the limit
  double rel_l2 = 0;         // logits against the x16 run, over prefill and every decode step
};

struct ScaleDeliveryResult {
  std::vector<ScaleDeliveryRow> rows;  // multipliers 1, 4, 16 (the reference)
  double fp8_rel_l2 = 0;  // logits of the recipe (scales delivered) against it without FP8 cache
  double limit = 0;       // judged rows pass at rel_l2 <= limit
  // At least one judged row besides x16, and every judged row within the limit.
  bool passed() const;
  // No row besides x16 could be judged (x1 and x4 both clipped more): the check says nothing.
  bool inconclusive() const;
};

// Every multiplier's run: prefill `prompt`, then `decode_steps` greedy steps of the
// recipe's own tokens (scales delivered, x1), so every run reads the same inputs. `recipe` must be an fp8-kv recipe.
ScaleDeliveryResult check_scale_delivery(const Checkpoint& ckpt, const Recipe& recipe,
                                         std::span<const std::int32_t> prompt, int decode_steps);

// The same check on any path (of a model of `n_layers`) that runs a variant of the recipe: `make` returns a fresh path
// following `variant` (the recipe with its KvCacheFp8 multiplied, or without kv_fp8: no FP8
// cache); clipping is read from its headroom() (k_cache.fp8 / v_cache.fp8 saturation), so
// the path needs the headroom capability. emulated-cpu above; fused-cuda:fp8-kv* on a GPU.
using RecipePathMaker = std::function<std::unique_ptr<Path>(const Recipe& variant)>;
ScaleDeliveryResult check_scale_delivery(const Recipe& recipe, int n_layers, std::span<const std::int32_t> prompt,
                                         int decode_steps, const RecipePathMaker& make);

}  // namespace fusecheck::ref
