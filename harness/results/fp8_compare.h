// FP8 clipping in `fusecheck compare` (issue 17): for every path of the baseline, the
// FP8 points of its recipe_headroom (k_cache.fp8, v_cache.fp8: docs/results-format.md)
// whose saturation_count was 0 (or absent) in the baseline and is above 0 now: values
// clipped at 448 that were not before, a regression whatever the divergence figures say
// (clipping grows with generation length; a short run's errors can hide it).
#pragma once

#include <vector>

#include "harness/results/compare.h"
#include "harness/results/h5_tree.h"

namespace fusecheck::results {

void compare_fp8_clipping(const H5Node& fresh_root, const H5Node& base_root, std::vector<Finding>& findings);

// Error against KV age (/paths/<label>/kv_age): a bucket of ages whose relative error is
// more than kKvAgeGrowth times the baseline's for the same path and ages: a regression (the
// loss that grows with generation length shows at the young ages first).
inline constexpr double kKvAgeGrowth = 1.25;
void compare_kv_age(const H5Node& fresh_root, const H5Node& base_root, std::vector<Finding>& findings);

// The scale delivery check (/paths/<label>/scale_delivery): a path whose check passed in
// the baseline and now fails or is inconclusive, or that newly runs it and fails: a
// regression (the scales no longer reach attention the same way at every multiplier).
void compare_scale_delivery(const H5Node& fresh_root, const H5Node& base_root, std::vector<Finding>& findings);

}  // namespace fusecheck::results
