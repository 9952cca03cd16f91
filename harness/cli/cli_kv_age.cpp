// `fusecheck kv-age MODEL [--recipe fp8-kv...] [--prefill N --steps S --seed K]`: the
// attention output's error from the FP8 KV cache by key age (reference/kv_age.h) over S
// greedy decode steps on emulated-cpu, per age bucket: over all layers and the worst layer.
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <fmt/core.h>

#include "harness/cli/command.h"
#include "harness/core/checkpoint.h"
#include "harness/core/error.h"
#include "reference/kv_age.h"
#include "reference/recipe.h"

namespace fusecheck::cli {

namespace {

struct Options {
  std::string model;
  std::string recipe = "fp8-kv";
  int prefill = 16;
  int steps = 64;
  std::uint64_t seed = 7;
};

int run(const Options& o) {
  const auto ck = Checkpoint::open(o.model);
  const Recipe& recipe = find_recipe(o.recipe);
  if (!recipe.kv_fp8) {
    throw InputError("", fmt::format("recipe {} has no FP8 KV cache (the fp8-kv recipes do)", o.recipe));
  }
  std::mt19937_64 rng(o.seed);
  std::uniform_int_distribution<std::int32_t> id(0, ck->spec().vocab - 1);
  std::vector<std::int32_t> prompt(static_cast<std::size_t>(o.prefill));
  for (auto& t : prompt) t = id(rng);
  const auto r = ref::measure_kv_age_error(*ck, recipe, prompt, o.steps);
  fmt::print("error against KV age: {} on emulated-cpu, prefill {} (seed {}), {} greedy decode steps measured\n",
             o.recipe, o.prefill, o.seed, o.steps);
  fmt::print("(attention output error from the FP8 cache's keys of each age, relative to the output's norm)\n");
  fmt::print("{:>11} {:>12} {:>14} {:>22}\n", "age", "keys", "rel error", "worst layer");
  for (const auto& b : r.buckets) {
    std::size_t worst = 0;
    for (std::size_t l = 1; l < b.rel_error_by_layer.size(); ++l) {
      if (b.rel_error_by_layer[l] > b.rel_error_by_layer[worst]) worst = l;
    }
    const std::string age = b.lo == b.hi ? std::to_string(b.lo) : fmt::format("{}-{}", b.lo, b.hi);
    fmt::print("{:>11} {:>12} {:>14.3e} {:>12.3e} (L{})\n", age, b.keys, b.rel_error, b.rel_error_by_layer[worst],
               worst);
  }
  return 0;
}

const CommandRegistrar registrar({
    "kv-age",
    "FP8 KV cache: attention error by cached key age over greedy decode steps on emulated-cpu (docs/recipes.md)",
    [](CLI::App& sub) -> std::function<int()> {
      auto o = std::make_shared<Options>();
      sub.add_option("MODEL", o->model, "HF checkpoint directory or .gguf file")->required();
      sub.add_option("--recipe", o->recipe, "fp8-kv, fp8-kv-per-head, fp8-kv-dynamic or fp8-kv-per-head-dynamic");
      sub.add_option("--prefill", o->prefill, "seeded prompt tokens")->check(CLI::Range(1, 4096));
      sub.add_option("--steps", o->steps, "greedy decode steps (measured)")->check(CLI::Range(1, 8192));
      sub.add_option("--seed", o->seed, "seed of the prompt tokens");
      return [o]() { return run(*o); };
    },
});

}  // namespace

}  // namespace fusecheck::cli
