// Helpers every test area shares: where the real test models are, a scratch directory,
// the path of the built fusecheck binary, and running it.
#pragma once

#include <filesystem>
#include <optional>
#include <string>

namespace fusecheck::test {

// FUSECHECK_MODELS, else ../shared/models beside the project root; nullopt when absent.
// Tests use it as: auto dir = models_dir(); if (!dir) GTEST_SKIP() << models_dir_skip_reason();
std::optional<std::filesystem::path> models_dir();
std::string models_dir_skip_reason();

// A directory under the build tree named after the running test; emptied on the first
// call in each test, kept for later calls in the same test.
std::filesystem::path scratch_dir();

std::filesystem::path source_dir();
// The built `fusecheck` binary (FUSECHECK_BINARY_DIR/harness/cli/fusecheck).
std::filesystem::path fusecheck_binary();

struct CommandResult {
  int exit_code = -1;
  std::string out;  // stdout
  std::string err;  // stderr
};
// Runs `fusecheck ARGS` (args is a shell-quoted string) and captures its output.
CommandResult run_fusecheck(const std::string& args);
// `p` in single quotes, for the args of run_fusecheck.
inline std::string quoted(const std::filesystem::path& p) { return "'" + p.string() + "'"; }
// Lines in `s` (its newlines): an error is one line.
inline std::size_t line_count(const std::string& s) {
  std::size_t n = 0;
  for (const char c : s) n += c == '\n';
  return n;
}

}  // namespace fusecheck::test
