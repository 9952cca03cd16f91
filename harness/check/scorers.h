// Internal: the two scorers behind score_norm_weights (weights already validated finite).
#pragma once

#include <span>
#include <string>

#include "harness/check/check.h"

namespace fusecheck::check::detail {

CompatibilityResult score_braidinfer(const ModelNormWeights& weights, const Thresholds& thresholds);
CompatibilityResult score_fusecheck(const ModelNormWeights& weights, const Thresholds& thresholds);

// Python's repr of a list of ints: "[0, 1, 2]" (the seed prints layer lists this way).
std::string python_int_list(std::span<const int> values);

}  // namespace fusecheck::check::detail
