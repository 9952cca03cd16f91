// The scale delivery check in a run (docs/recipes.md "Scale delivery check";
// docs/results-format.md, /paths/<label>/scale_delivery): for every emulated-cpu path on an
// fp8-kv recipe (fp8-w8a8 included, whose attention reads an fp8-kv cache) in a scenario
// with greedy steps and `end_to_end.scale_delivery: true`, ref::check_scale_delivery on
// the run's prompt and steps. A check that fails or says nothing (inconclusive) is a gate
// failure of the run (exit 1), so a nightly scenario catches scales that stop reaching
// attention, the failure of TensorRT-LLM PR 16916.
#pragma once

#include <cstdint>
#include <span>

#include "harness/core/checkpoint.h"
#include "harness/run/driver.h"

namespace fusecheck::run {

// Fills PathResult::scale_delivery of the eligible paths (mixes are skipped: the check
// multiplies one recipe's scales in every layer) and adds one gate failure per check that
// does not pass. `prompt`: the first sequence's prefill tokens.
void add_scale_delivery(RunResult& result, const Checkpoint& ckpt, std::span<const std::int32_t> prompt,
                        int greedy_steps);

}  // namespace fusecheck::run
