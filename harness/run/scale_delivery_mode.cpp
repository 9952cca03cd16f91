// add_scale_delivery (scale_delivery_mode.h).
#include "harness/run/scale_delivery_mode.h"

#include "reference/recipe.h"
#include "reference/scale_delivery.h"

namespace fusecheck::run {

void add_scale_delivery(RunResult& result, const Checkpoint& ckpt, std::span<const std::int32_t> prompt,
                        int greedy_steps) {
  if (greedy_steps <= 0 || prompt.empty()) return;
  for (PathResult& p : result.paths) {
    if (p.slot.name != "emulated-cpu" || p.slot.recipe.find('+') != std::string::npos || p.slot.recipe.empty()) continue;
    const Recipe& recipe = find_recipe(p.slot.recipe);
    if (!recipe.kv_fp8) continue;
    auto span = result.phases.span("scale_delivery:" + p.slot.label());
    const ref::ScaleDeliveryResult r = ref::check_scale_delivery(ckpt, recipe, prompt, greedy_steps);
    ScaleDeliveryRecord rec;
    rec.reference_multiplier = r.reference_multiplier;
    rec.fp8_rel_l2 = r.fp8_rel_l2;
    rec.limit = r.limit;
    rec.decode_steps = greedy_steps;
    for (const auto& row : r.rows) {
      rec.multipliers.push_back(row.multiplier);
      rec.clipped.push_back(static_cast<double>(row.clipped));
      rec.judged.push_back(row.judged ? 1.0 : 0.0);
      rec.rel_l2.push_back(row.rel_l2);
    }
    rec.verdict = r.passed() ? "pass" : r.inconclusive() ? "inconclusive" : "fail";
    if (!r.passed()) ++result.gate_failures;
    p.scale_delivery = std::move(rec);
  }
}

}  // namespace fusecheck::run
