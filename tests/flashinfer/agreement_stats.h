// The numbers behind flashinfer-cuda's agreement bounds: per tap and case, the largest
// distance in bf16 ulps of the twin's element, the share of elements more than one ulp
// apart and the relative L2 distance. With FUSECHECK_AGREEMENT_TSV=FILE every comparison
// appends one line to FILE (scripts/gpu-check-16 sets it and tabulates the maxima), so a
// GPU run gives the measured values each bound in test_flashinfer_path.cpp cites.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "harness/core/path.h"
#include "tests/common/path_agreement.h"

namespace fusecheck::test {

// The distances of path_agreement.h, under the name the agreement table uses.
using TapStats = TapDistance;
inline TapStats tap_stats(const TapMatrix& got, const TapMatrix& twin) { return distance(got, twin); }

// Appends "check<TAB>where<TAB>tap<TAB>phase<TAB>max_ulp<TAB>share_off<TAB>rel_l2" to
// $FUSECHECK_AGREEMENT_TSV when it is set; `check` names the comparison.
inline void record_stats(const std::string& check, const std::string& where, Tap tap, bool prefill,
                         const TapStats& s) {
  const char* file = std::getenv("FUSECHECK_AGREEMENT_TSV");
  if (file == nullptr || *file == '\0') return;
  if (std::FILE* f = std::fopen(file, "a")) {
    std::fprintf(f, "%s\t%s\t%s\t%s\t%.3f\t%.6f\t%.4e\n", check.c_str(), where.c_str(), std::string(tap_name(tap)).c_str(),
                 prefill ? "prefill" : "decode", s.max_ulp, s.share_off, s.rel_l2);
    std::fclose(f);
  }
}

}  // namespace fusecheck::test
