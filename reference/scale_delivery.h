// Scale delivery check of the fp8-kv recipes (docs/recipes.md, "Scale delivery check"):
// the same run with the calibrated KV scales multiplied by 1, 2, 4 and 8 (values quantized
// and dequantized with the multiplied scale) must give the same logits within FP8
// rounding. A kernel that never receives the scales (TensorRT-LLM PR 16916) dequantizes
// with the wrong factor, and its logits move with the multiplier. Clipping is told apart:
// a static scale from the prefill may clip later keys at x1 and not at x4, which moves
// the logits too but is a headroom finding (k_cache.fp8 / v_cache.fp8 counts), not a
// delivery failure: the reference is the smallest multiplier among the runs that clip the
// fewest values, and the run at twice it is judged against it (the others are shown).
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

inline constexpr float kScaleDeliveryMultipliers[] = {1, 2, 4, 8};

struct ScaleDeliveryRow {
  float multiplier = 1;
  std::int64_t clipped = 0;  // K and V values clipped over the run, all layers
  bool judged = false;       // the run at twice the reference multiplier: held to the limit
  double rel_l2 = 0;         // logits against the reference run, over prefill and every decode step
};

struct ScaleDeliveryResult {
  std::vector<ScaleDeliveryRow> rows;  // one per kScaleDeliveryMultipliers
  float reference_multiplier = 0;      // the smallest multiplier among the runs that clip the fewest
  double fp8_rel_l2 = 0;  // logits of the recipe (scales delivered) against it without FP8 cache
  double limit = 0;       // judged rows pass at rel_l2 <= limit
  // At least one judged row, and every judged row within the limit.
  bool passed() const;
  // No row could be judged (only the x8 run clips the fewest values): the check says nothing.
  bool inconclusive() const;
  // The largest rel_l2 of the judged rows (0 when none; NaN when one is NaN).
  double worst_judged() const;
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
