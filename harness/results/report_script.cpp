// Locating and running scripts/report (see report_script.h).
#include "harness/results/report_script.h"

#include <cstdlib>
#include <sys/wait.h>
#include <unistd.h>

#include "harness/core/error.h"

namespace fusecheck::results {

std::filesystem::path report_script() {
  if (const char* env = std::getenv("FUSECHECK_REPORT_SCRIPT"); env && *env) return env;
  return std::filesystem::path(FUSECHECK_SOURCE_DIR) / "scripts" / "report";
}

int run_report_script(const std::vector<std::string>& args) {
  auto script = report_script();
  if (!std::filesystem::is_regular_file(script)) {
    throw InputError(script.string(), "report script not found (set FUSECHECK_REPORT_SCRIPT)");
  }
  std::string python = std::filesystem::exists("/usr/bin/python3") ? "/usr/bin/python3" : "python3";
  std::vector<std::string> argv_s = {python, script.string()};
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = ::fork();
  if (pid < 0) throw InputError(python, "cannot start the report script");
  if (pid == 0) {
    // Tells the script its inputs were validated (by the caller, before this) and where
    // this binary is; run on its own, the script comes back through `fusecheck report`.
    ::setenv("FUSECHECK_REPORT_VALIDATED", "1", 1);
    ::execvp(argv[0], argv.data());
    _exit(127);
  }
  int status = 0;
  if (::waitpid(pid, &status, 0) < 0) return 70;
  if (WIFEXITED(status)) {
    if (WEXITSTATUS(status) == 127) throw InputError(python, "python3 not found");
    return WEXITSTATUS(status);
  }
  return 70;
}

}  // namespace fusecheck::results
