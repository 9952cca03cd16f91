// `fusecheck scale-delivery MODEL [--recipe fp8-kv...]`: the scale delivery check of the
// fp8-kv recipes (docs/recipes.md, "Scale delivery check") on emulated-cpu: the same
// prompt and greedy steps with the KV scales x1, x2, x4 and x8; exit 0 when every judged
// multiplier stays within the limit, 1 when not. --drop-scales runs the broken variant
// (scales never reach attention) that the check must catch.
#include <memory>
#include <string>

#include <fmt/core.h>

#include "harness/cli/command.h"
#include "harness/cli/fp8_kv_command.h"
#include "reference/scale_delivery.h"

namespace fusecheck::cli {

namespace {

struct Options : Fp8KvOptions {
  bool drop_scales = false;
};

int run(const Options& o) {
  Fp8KvInputs in = load_fp8_kv_inputs(o);
  in.recipe.kv_fp8->drop_scale_on_load = o.drop_scales;
  const auto r = ref::check_scale_delivery(*in.ck, in.recipe, in.prompt, o.steps);
  fmt::print("scale delivery check: {} on emulated-cpu{}, {}, {} greedy steps\n", o.recipe,
             o.drop_scales ? " with the scales dropped on load (broken variant)" : "", prompt_text(o), o.steps);
  fmt::print("FP8 cache effect (logits rel L2 vs no FP8 cache): {:.3e}; limit {:.3e}\n", r.fp8_rel_l2, r.limit);
  for (const auto& row : r.rows) {
    const char* verdict = row.multiplier == r.reference_multiplier ? "reference (fewest clipped, smallest multiplier)"
                          : row.multiplier < r.reference_multiplier
                              ? "not judged: clipped more than the reference (headroom, see k_cache.fp8)"
                          : !row.judged ? "shown, not judged (beyond twice the reference)"
                          : row.rel_l2 <= r.limit ? "ok"
                                                  : "FAIL";
    fmt::print("  scales x{:<3g} clipped {:>8}  logits rel L2 vs x{:g} {:.3e}  {}\n", row.multiplier, row.clipped,
               r.reference_multiplier, row.rel_l2, verdict);
  }
  fmt::print("{}\n", r.passed()         ? "PASS: the scales reach attention"
                     : r.inconclusive() ? "FAIL: inconclusive (only x8 clips as few values as it)"
                                        : "FAIL: outputs move with the scales");
  return r.passed() ? 0 : 1;
}

const CommandRegistrar registrar({
    "scale-delivery",
    "FP8 KV cache scale delivery check on emulated-cpu: scales x1, x2, x4, x8 must give the same logits (docs/recipes.md)",
    [](CLI::App& sub) -> std::function<int()> {
      auto o = std::make_shared<Options>();
      o->steps = 16;
      add_fp8_kv_options(sub, *o, "greedy decode steps", CLI::Range(0, 4096));
      sub.add_flag("--drop-scales", o->drop_scales, "the broken variant: dequantize with scale 1");
      return [o]() { return run(*o); };
    },
});

}  // namespace

}  // namespace fusecheck::cli
