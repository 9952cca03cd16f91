// The bad-input cases of the checkpoint readers: each writes one malformed checkpoint and
// names the words its error must contain. Shared by the API test and the CLI test.
#pragma once

#include <filesystem>
#include <functional>
#include <ostream>
#include <string>
#include <vector>

namespace fusecheck::test {

struct BadInput {
  std::string name;  // test name suffix
  // Writes the checkpoint under `dir`; returns the path to open.
  std::function<std::filesystem::path(const std::filesystem::path& dir)> make;
  // Substrings the one-line error must contain besides the file name (tensor, problem).
  std::vector<std::string> expected;
  // The file the error must name, relative to `dir` ("" = the returned path).
  std::string file_named = "";
};

const std::vector<BadInput>& bad_inputs();

// GoogleTest prints a parameter with this (its name, not its bytes).
inline void PrintTo(const BadInput& c, std::ostream* os) { *os << c.name; }

}  // namespace fusecheck::test
