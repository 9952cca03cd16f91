// add_kv_age (kv_age_mode.h).
#include "harness/run/kv_age_mode.h"

#include "reference/kv_age.h"
#include "reference/recipe.h"

namespace fusecheck::run {

void add_kv_age(RunResult& result, const Checkpoint& ckpt, std::span<const std::int32_t> prompt, int greedy_steps) {
  if (greedy_steps <= 0 || prompt.empty()) return;
  for (PathResult& p : result.paths) {
    if (p.slot.name != "emulated-cpu" || p.slot.recipe.find('+') != std::string::npos || p.slot.recipe.empty()) continue;
    const Recipe& recipe = find_recipe(p.slot.recipe);
    if (!recipe.kv_fp8) continue;
    auto span = result.phases.span("kv_age:" + p.slot.label());
    const ref::KvAgeReport r = ref::measure_kv_age_error(ckpt, recipe, prompt, greedy_steps);
    for (const auto& b : r.buckets) {
      p.kv_age.push_back({b.lo, b.hi, static_cast<double>(b.keys), b.rel_error, b.rel_error_by_layer});
    }
  }
}

}  // namespace fusecheck::run
