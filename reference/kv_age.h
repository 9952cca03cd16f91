// Error against KV age for the fp8-kv recipes (issue 17): how much of the attention
// output's error comes from cached keys of each age (query position - key position), so
// that a loss that grows with generation length (static scales calibrated on the prefill,
// clipping later keys) shows as error concentrated at young ages. Measured from
// emulated-cpu's taps: each layer's k_rope and v taps are the exact (bf16) cache, the
// same rows through reference/kv_fp8.h are the FP8 cache the path attended over (bit for
// bit: tests/reference/test_fp8_kv.cpp), and each decode step's q_rope is the query.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "harness/core/checkpoint.h"
#include "reference/recipe.h"

namespace fusecheck::ref {

// Ages [lo, hi]: 0, 1, 2-3, 4-7, ... (powers of two).
struct KvAgeBucket {
  int lo = 0, hi = 0;
  std::int64_t keys = 0;  // (query, head, key) triples counted
  // sqrt(sum over queries and heads of sum over the bucket's keys of
  //      |p8_j v8_j - p_j v_j|^2) / sqrt(sum over queries and heads of |sum_j p_j v_j|^2):
  // p, v with the exact cache, p8, v8 with the FP8 one; per layer and over all layers.
  std::vector<double> rel_error_by_layer;
  double rel_error = 0;
};

struct KvAgeReport {
  std::vector<KvAgeBucket> buckets;
  int decode_steps = 0;
};

// Prefill `prompt`, then `decode_steps` greedy steps on emulated-cpu with `recipe` (an
// fp8-kv recipe); the queries of the decode steps are measured.
KvAgeReport measure_kv_age_error(const Checkpoint& ckpt, const Recipe& recipe,
                                 std::span<const std::int32_t> prompt, int decode_steps);

}  // namespace fusecheck::ref
