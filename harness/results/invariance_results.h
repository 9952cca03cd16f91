// Reading the /invariance group of a run (docs/results-format.md): the validator's
// requirements for it and what `fusecheck compare` makes of two certificates (a path
// that loses an invariance its baseline had is a regression; gaining one is a note).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "harness/results/compare.h"
#include "harness/results/run_results.h"

namespace fusecheck::results {

// One (path, check) cell as stored.
struct InvarianceCell {
  std::string path, check;
  std::string status;  // invariant | differs | n/a
  std::string reason;
  long first_layer = -1;
  std::string first_tap;
  long first_row = -1;
  double max_ulp = 0;
  std::string max_ulp_dtype;
  // The scaled distance (docs/invariance.md); absent from files written before it, then
  // nullopt and the bit distance is all there is.
  std::optional<double> first_scaled_ulp;
  std::string first_scaled_ulp_dtype;
  std::optional<long> sign_crossings;
};

// Every cell of /invariance in path then check order; empty when the group is absent.
// Throws InputError (via Run::fail) on a cell without a known status.
std::vector<InvarianceCell> read_invariance(const Run& run);

// The validator's part: when `modes` includes invariance, /invariance must hold a group
// for every path of /paths, each cell with a known status.
void validate_invariance(const Run& run, bool mode_ran);

// Adds compare findings (kind "invariance") for the cells of `base`.
void compare_invariance(const Run& fresh, const Run& base, RunComparison& out);

}  // namespace fusecheck::results
