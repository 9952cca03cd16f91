// Merging run files into one (see merge.h).
#include "harness/results/merge.h"

#include <map>
#include <string>
#include <unistd.h>

#include <fmt/core.h>
#include <hdf5.h>

#include "harness/core/error.h"
#include "harness/core/version.h"
#include "harness/results/h5_write.h"
#include "harness/results/run_results.h"
#include "harness/results/validate.h"

namespace fusecheck::results {

std::size_t merge_results(const std::vector<std::filesystem::path>& inputs,
                          const std::filesystem::path& out) {
  if (inputs.empty()) throw InputError(out.string(), "nothing to merge: no input files");
  // Validate every input before writing anything, and find each run's scenario name.
  struct Source {
    std::filesystem::path file;
    std::string object;  // "/" or "/runs/<name>"
    std::string scenario;
  };
  std::vector<Source> sources;
  std::map<std::string, std::string> seen;  // scenario -> file it came from
  for (const auto& in : inputs) {
    ResultsFile rf = ResultsFile::load(in);
    validate_file(rf);  // a merged file must be one compare and report accept
    for (const Run& run : rf.runs()) {
      const std::string& name = run.identity().scenario_name;
      if (auto it = seen.find(name); it != seen.end()) {
        throw InputError(in.string(), fmt::format("scenario '{}' is also in {}; a merged file holds one "
                                                  "run per scenario", name, it->second));
      }
      if (name.empty() || name.find('/') != std::string::npos || name == "." || name == "..") {
        throw InputError(in.string(), fmt::format("scenario name '{}' cannot name an HDF5 group", name));
      }
      seen[name] = in.string();
      std::string object = run.label() == rf.file() ? "/" : run.label().substr(rf.file().size() + 1);
      sources.push_back({in, object, name});
    }
  }

  auto tmp = out;
  tmp += fmt::format(".tmp-{}", ::getpid());
  {
    H5Writer w(tmp);
    w.attr("/", "format", std::string(kMergedFormat));
    w.attr("/", "format_version", static_cast<long long>(kRunFormatVersion));
    w.attr("/", "fusecheck_version", version_string());
    w.attr("/", "git_sha", git_sha());
    std::string from;
    for (const auto& in : inputs) from += (from.empty() ? "" : "\n") + in.string();
    w.attr("/", "merged_from", from);
    w.group("/runs");
    for (const auto& s : sources) w.copy_from(s.file, s.object, "/runs/" + s.scenario);
  }
  std::error_code ec;
  std::filesystem::rename(tmp, out, ec);
  if (ec) {
    std::filesystem::remove(tmp, ec);
    throw InputError(out.string(), "cannot write the merged file");
  }
  return sources.size();
}

}  // namespace fusecheck::results
