// Where `fusecheck run` writes its results, settled before the run starts: the file the
// user named with --out, or <results folder>/<date>-<scenario name>.h5 with the name made
// one safe file name component (a scenario named "x/../../../../ESCAPED-RUN" must not
// write outside the results folder). The place is checked writable first, so that a bad
// --out is found in milliseconds, not after the whole run.
#pragma once

#include <filesystem>
#include <optional>
#include <string>

namespace fusecheck::run {

// `out` when given (InputError when empty), else results_dir / "<stamp>-<safe name>.h5".
std::filesystem::path results_file_path(const std::optional<std::filesystem::path>& out,
                                        const std::filesystem::path& results_dir,
                                        const std::string& scenario_name, const std::string& stamp);

// Creates the file's missing folders and creates and removes the temporary file the
// results writer will use; InputError naming the file (or its folder) and the reason.
// Also reclaims temporary results files that killed runs left in that folder.
void prepare_results_folder(const std::filesystem::path& file);

}  // namespace fusecheck::run
