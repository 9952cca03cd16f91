// The results file's place and the early writability check (see run_output.h).
#include "harness/run/run_output.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <system_error>

#include "harness/core/error.h"
#include "harness/core/temp_files.h"
#include "harness/core/untrusted.h"

namespace fusecheck::run {

std::filesystem::path results_file_path(const std::optional<std::filesystem::path>& out,
                                        const std::filesystem::path& results_dir,
                                        const std::string& scenario_name, const std::string& stamp) {
  if (out) {
    if (out->empty()) throw InputError("--out", "is empty: name a results file, or leave --out out for the default");
    return *out;
  }
  return results_dir / (stamp + "-" + file_name_component(scenario_name, "scenario") + ".h5");
}

void prepare_results_folder(const std::filesystem::path& file) {
  std::error_code ec;
  if (std::filesystem::is_directory(file, ec)) throw InputError(file.string(), "is a folder, not a results file");
  const auto folder = file.parent_path();
  if (!folder.empty()) {
    std::filesystem::create_directories(folder, ec);
    if (ec) throw InputError(folder.string(), "cannot create the results folder: " + ec.message());
  }
  // Only the writer's own names: the folder may be any folder of the user's.
  const std::string name = file.filename().string();
  reclaim_stale_temps(folder.empty() ? "." : folder, [&](const std::string& final_name) {
    return final_name == name || (final_name.size() > 3 && final_name.ends_with(".h5"));
  });
  // The very file the writer will create, so that any reason it could not (permissions,
  // a read-only file system, a name too long) shows now.
  // Registered before it exists, so that SIGINT/SIGTERM between the open and the unlink
  // remove it too.
  const RegisteredTemp registered(temp_path_for(file));
  const auto& probe = registered.path();
  const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) throw InputError(file.string(), std::string("cannot write the results here: ") + std::strerror(errno));
  ::close(fd);
  ::unlink(probe.c_str());
}

}  // namespace fusecheck::run
