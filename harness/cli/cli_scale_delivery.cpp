// `fusecheck scale-delivery MODEL [--recipe fp8-kv...]`: the scale delivery check of the
// fp8-kv recipes (docs/recipes.md, "Scale delivery check") on emulated-cpu: the same
// seeded prompt and greedy steps with the KV scales x1, x4 and x16; exit 0 when every
// multiplier stays within the limit, 1 when not. --drop-scales runs the broken variant
// (scales never reach attention) that the check must catch.
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <fmt/core.h>

#include "harness/cli/command.h"
#include "harness/core/checkpoint.h"
#include "harness/core/error.h"
#include "reference/recipe.h"
#include "reference/scale_delivery.h"

namespace fusecheck::cli {

namespace {

struct Options {
  std::string model;
  std::string recipe = "fp8-kv";
  int prefill = 16;
  int steps = 16;
  std::uint64_t seed = 7;
  bool drop_scales = false;
};

int run(const Options& o) {
  const auto ck = Checkpoint::open(o.model);
  Recipe recipe = find_recipe(o.recipe);
  if (!recipe.kv_fp8) {
    throw InputError("", fmt::format("recipe {} has no FP8 KV cache (the fp8-kv recipes do)", o.recipe));
  }
  recipe.kv_fp8->drop_scale_on_load = o.drop_scales;
  std::mt19937_64 rng(o.seed);
  std::uniform_int_distribution<std::int32_t> id(0, ck->spec().vocab - 1);
  std::vector<std::int32_t> prompt(static_cast<std::size_t>(o.prefill));
  for (auto& t : prompt) t = id(rng);
  const auto r = ref::check_scale_delivery(*ck, recipe, prompt, o.steps);
  fmt::print("scale delivery check: {} on emulated-cpu{}, prefill {} (seed {}), {} greedy steps\n", o.recipe,
             o.drop_scales ? " with the scales dropped on load (broken variant)" : "", o.prefill, o.seed, o.steps);
  fmt::print("FP8 cache effect (logits rel L2 vs no FP8 cache): {:.3e}; limit {:.3e}\n", r.fp8_rel_l2, r.limit);
  for (const auto& row : r.rows) {
    const char* verdict = !row.judged ? "not judged: clipped more than x16 (headroom, see k_cache.fp8)"
                          : row.rel_l2 <= r.limit ? "ok" : "FAIL";
    fmt::print("  scales x{:<3g} clipped {:>8}  logits rel L2 vs x16 {:.3e}  {}\n", row.multiplier, row.clipped,
               row.rel_l2, verdict);
  }
  fmt::print("{}\n", r.passed()         ? "PASS: the scales reach attention"
                     : r.inconclusive() ? "FAIL: inconclusive (x1 and x4 clip more than x16)"
                                        : "FAIL: outputs move with the scales");
  return r.passed() ? 0 : 1;
}

const CommandRegistrar registrar({
    "scale-delivery",
    "FP8 KV cache scale delivery check on emulated-cpu: scales x1, x4, x16 must give the same logits (docs/recipes.md)",
    [](CLI::App& sub) -> std::function<int()> {
      auto o = std::make_shared<Options>();
      sub.add_option("MODEL", o->model, "HF checkpoint directory or .gguf file")->required();
      sub.add_option("--recipe", o->recipe, "fp8-kv, fp8-kv-per-head, fp8-kv-dynamic or fp8-kv-per-head-dynamic");
      sub.add_option("--prefill", o->prefill, "seeded prompt tokens")->check(CLI::Range(1, 4096));
      sub.add_option("--steps", o->steps, "greedy decode steps")->check(CLI::Range(0, 4096));
      sub.add_option("--seed", o->seed, "seed of the prompt tokens");
      sub.add_flag("--drop-scales", o->drop_scales, "the broken variant: dequantize with scale 1");
      return [o]() { return run(*o); };
    },
});

}  // namespace

}  // namespace fusecheck::cli
