// Temporary files and folders a run writes before renaming them into place (results
// FILE.tmp-<pid>, synthetic models <cache>/<name>.tmp-<pid>). While one exists it is
// registered here, so that SIGINT or SIGTERM removes it before the process dies; the pid
// in its name lets a later run reclaim what a process that died without cleaning up
// (SIGKILL, a crash, a power cut) left behind.
#pragma once

#include <filesystem>
#include <functional>
#include <string>
#include <vector>

namespace fusecheck {

// "<final_path>.tmp-<pid of this process>".
std::filesystem::path temp_path_for(const std::filesystem::path& final_path);

// Registers `path` for removal on SIGINT/SIGTERM for as long as it lives. It does not
// remove the path itself: its owner renames it into place or removes it on failure.
class RegisteredTemp {
 public:
  explicit RegisteredTemp(std::filesystem::path path);
  ~RegisteredTemp();
  RegisteredTemp(const RegisteredTemp&) = delete;
  RegisteredTemp& operator=(const RegisteredTemp&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

// Installs the SIGINT/SIGTERM handling (once; main() calls it before any command runs):
// a watcher thread removes every registered path, then the process dies of the signal as
// it would have without the handler (exit status 128 + signal in a shell). Where no pipe
// can be made, the signals keep their default action.
void install_interrupt_cleanup();

// After a signal arrived, blocks until its cleanup ends the process: an error that the
// cleanup itself caused (a temp file vanishing under its writer) is then never printed.
// Returns at once when no signal arrived.
void wait_if_interrupted();

// Removes the entries of `dir` named "<final name>.tmp-<pid>" whose pid is not a live
// process (files and folders) and for which `ours(final name)` holds, and returns them.
// Entries of live processes, this one included, stay. A missing `dir` has nothing.
std::vector<std::filesystem::path> reclaim_stale_temps(const std::filesystem::path& dir,
                                                       const std::function<bool(const std::string&)>& ours);

}  // namespace fusecheck
