// The fallback decision the seed documented but never wired in: given a static check's
// result and the user's --force-fused flag, run the fused or the standard path, and why.
#pragma once

#include <string>

#include "harness/check/check.h"

namespace fusecheck::check {

struct FallbackDecision {
  bool use_fused = true;
  bool warn = false;    // the caller should print `reason` as a warning
  std::string reason;   // one line naming the status, score and scorer
};

// COMPATIBLE: fused. WARNING: fused, with a warning. INCOMPATIBLE: standard, unless
// force_fused (then fused, with a warning that the check was overridden).
FallbackDecision decide_fused_or_standard(const CompatibilityResult& result, bool force_fused);

}  // namespace fusecheck::check
