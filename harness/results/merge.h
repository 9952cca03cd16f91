// `fusecheck merge`: combines the results of several runs (for example the shards of a
// nightly job) into one merged file, format "fusecheck-merged": each run's whole file
// copied unchanged under /runs/<scenario name>/, so every reader of a run reads it there.
#pragma once

#include <filesystem>
#include <vector>

namespace fusecheck::results {

// Writes `out` (through a temporary file renamed on success) from `inputs`, each a run
// file or an earlier merged file. Two runs of one scenario are an InputError: a merged
// file pairs runs with baselines by scenario, so the name must be unique.
// Returns the number of runs written.
std::size_t merge_results(const std::vector<std::filesystem::path>& inputs,
                          const std::filesystem::path& out);

}  // namespace fusecheck::results
