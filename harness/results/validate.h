// The one check that a run holds everything a comparison or a report reads
// (docs/results-format.md, "What a reader requires"). compare, merge and report all call
// it, so a file one of them refuses is refused by all: a damaged or truncated baseline is
// "incomparable" (exit 2, naming what is missing), never silently compared on what is left.
#pragma once

#include <set>
#include <string>

#include "harness/results/run_results.h"

namespace fusecheck::results {

// Metric tables every mode group (and its head) must hold, whatever the rules judge.
const std::set<std::string>& required_metrics();

// Throws InputError naming the run and the first missing or misshapen object, prefixed
// "incomparable:". `extra_metrics`: tables the caller's rules judge, required as well.
void validate_run(const Run& run, const std::set<std::string>& extra_metrics = {});

// Every run of `file`.
void validate_file(const ResultsFile& file, const std::set<std::string>& extra_metrics = {});

}  // namespace fusecheck::results
