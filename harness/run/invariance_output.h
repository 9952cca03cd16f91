// Where invariance mode's results go: the /invariance group of the results file
// (docs/results-format.md) and the certificate table of the text summary.
#pragma once

#include <string>

#include "harness/results/h5_write.h"
#include "harness/run/invariance.h"

namespace fusecheck::run {

// Writes /invariance (attributes of the spec) and /invariance/<label>/<check> per cell.
void write_invariance(results::H5Writer& w, const InvarianceResult& result);

// The certificate: paths x checks ("yes", "NO L3 k 12ulp", "n/a"), then one line per
// cell that differs or is n/a, saying where or why.
std::string format_invariance_table(const InvarianceResult& result, int n_layers);

}  // namespace fusecheck::run
