// `fusecheck report` hands the rendering to scripts/report (python3 with h5py and
// matplotlib: the plots are better there than anything hand-written in C++). This finds
// the script and the interpreter and runs it.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

namespace fusecheck::results {

// FUSECHECK_REPORT_SCRIPT when set, else scripts/report of the source tree this binary
// was built from.
std::filesystem::path report_script();

// Runs `python3 report_script() args...` (Debian's /usr/bin/python3 first: it has h5py
// and matplotlib) with FUSECHECK_REPORT_VALIDATED=1 in its environment, and returns its
// exit status. The caller validates the inputs first (harness/results/validate.h).
// Throws InputError when the script or the interpreter is missing.
int run_report_script(const std::vector<std::string>& args);

}  // namespace fusecheck::results
