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

namespace fusecheck::test {

struct TapStats {
  double max_ulp = 0, share_off = 0, rel_l2 = 0;
};

// Distances of `got` from `twin` (same shape); the ulp is the twin element's bf16 ulp.
inline TapStats tap_stats(const TapMatrix& got, const TapMatrix& twin) {
  TapStats s;
  double num = 0, den = 0;
  long off = 0;
  for (Eigen::Index i = 0; i < got.size(); ++i) {
    const double x = got.data()[i], y = twin.data()[i];
    const double ulp = std::ldexp(1.0, std::ilogb(std::max(std::fabs(y), 1e-30)) - 7);
    const double ulps = std::fabs(x - y) / ulp;
    s.max_ulp = std::max(s.max_ulp, ulps);
    off += !(ulps <= 1.01);
    num += (x - y) * (x - y);
    den += y * y;
  }
  s.share_off = got.size() > 0 ? static_cast<double>(off) / got.size() : 0;
  s.rel_l2 = den > 0 ? std::sqrt(num / den) : (num > 0 ? 1 : 0);
  return s;
}

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
