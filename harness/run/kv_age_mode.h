// Error against KV age in a run (docs/results-format.md, /paths/<label>/kv_age): for every
// emulated-cpu path on an fp8-kv recipe (fp8-w8a8 included) in a scenario with greedy
// steps and `end_to_end.kv_age: true`, the attention error from the FP8 cache by cached key age over those steps
// (reference/kv_age.h), so a loss that grows with generation length is in the results
// file, fp8_summary and compare, not only in `fusecheck kv-age`.
#pragma once

#include <cstdint>
#include <span>

#include "harness/core/checkpoint.h"
#include "harness/run/driver.h"

namespace fusecheck::run {

// Fills PathResult::kv_age of the eligible paths (mixes are skipped: kv_age measures one
// recipe in every layer). `prompt`: the first sequence's prefill tokens.
void add_kv_age(RunResult& result, const Checkpoint& ckpt, std::span<const std::int32_t> prompt, int greedy_steps);

}  // namespace fusecheck::run
