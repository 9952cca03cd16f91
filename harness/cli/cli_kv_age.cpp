// `fusecheck kv-age MODEL [--recipe fp8-kv...] [--prefill N --steps S --seed K]`: the
// attention output's error from the FP8 KV cache by key age (reference/kv_age.h) over S
// greedy decode steps on emulated-cpu, per age bucket: over all layers and the worst layer.
#include <memory>
#include <string>

#include <fmt/core.h>

#include "harness/cli/command.h"
#include "harness/cli/fp8_kv_command.h"
#include "reference/kv_age.h"

namespace fusecheck::cli {

namespace {

int run(const Fp8KvOptions& o) {
  const Fp8KvInputs in = load_fp8_kv_inputs(o);
  const auto r = ref::measure_kv_age_error(*in.ck, in.recipe, in.prompt, o.steps);
  fmt::print("error against KV age: {} on emulated-cpu, {}, {} greedy decode steps measured\n", o.recipe,
             prompt_text(o), o.steps);
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
      auto o = std::make_shared<Fp8KvOptions>();
      o->steps = 64;
      add_fp8_kv_options(sub, *o, "greedy decode steps (measured)", CLI::Range(1, 8192));
      return [o]() { return run(*o); };
    },
});

}  // namespace

}  // namespace fusecheck::cli
