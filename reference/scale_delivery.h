// Scale delivery check of the fp8-kv recipes (docs/recipes.md, "Scale delivery check"):
// the same run with the calibrated KV scales multiplied by 1, 4 and 16 (values quantized
// and dequantized with the multiplied scale) must give the same logits within FP8
// rounding. A kernel that never receives the scales (TensorRT-LLM PR 16916) dequantizes
// with the wrong factor, and its logits move with the multiplier.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "harness/core/checkpoint.h"
#include "reference/recipe.h"

namespace fusecheck::ref {

struct ScaleDeliveryRow {
  float multiplier = 1;
  double rel_l2 = 0;  // logits against multiplier 1, over prefill and every decode step
};

struct ScaleDeliveryResult {
  std::vector<ScaleDeliveryRow> rows;  // multipliers 1, 4, 16
  double fp8_rel_l2 = 0;  // logits of the recipe (scales delivered) against it without FP8 cache
  double limit = 0;       // rows pass at rel_l2 <= limit
  bool passed() const;
};

// Every multiplier's run: prefill `prompt`, then `decode_steps` greedy steps of the x1
// run's tokens (so every run reads the same inputs). `recipe` must be an fp8-kv recipe.
ScaleDeliveryResult check_scale_delivery(const Checkpoint& ckpt, const Recipe& recipe,
                                         std::span<const std::int32_t> prompt, int decode_steps);

}  // namespace fusecheck::ref
