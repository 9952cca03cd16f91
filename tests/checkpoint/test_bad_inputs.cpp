// Every malformed checkpoint gives one InputError naming the file and the problem, both
// from Checkpoint::open and from `fusecheck info` (exit code 2, one line on stderr).
#include <algorithm>

#include <gtest/gtest.h>

#include "harness/core/checkpoint.h"
#include "harness/core/error.h"
#include "tests/checkpoint/bad_inputs.h"
#include "tests/common/test_support.h"

namespace fusecheck::test {
namespace {

namespace fs = std::filesystem;

class BadInputTest : public ::testing::TestWithParam<BadInput> {
 protected:
  // run_fusecheck() empties scratch_dir(), so fixtures live in a sibling directory.
  static fs::path fixture_dir() {
    fs::path dir = scratch_dir().string() + ".fixture";
    fs::remove_all(dir);
    fs::create_directories(dir);
    return dir;
  }
  static std::string named_file(const BadInput& c, const fs::path& dir, const fs::path& opened) {
    return c.file_named.empty() ? opened.string() : (dir / c.file_named).string();
  }
};

TEST_P(BadInputTest, OpenThrowsInputErrorNamingFileAndProblem) {
  const BadInput& c = GetParam();
  const fs::path dir = fixture_dir();
  const fs::path model = c.make(dir);
  try {
    Checkpoint::open(model);
    FAIL() << "opened a malformed checkpoint: " << model;
  } catch (const InputError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(named_file(c, dir, model)), std::string::npos) << msg;
    for (const std::string& word : c.expected) EXPECT_NE(msg.find(word), std::string::npos) << "'" << word << "' not in: " << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }
}

TEST_P(BadInputTest, InfoExitsTwoWithOneErrorLine) {
  const BadInput& c = GetParam();
  const fs::path dir = fixture_dir();
  const fs::path model = c.make(dir);
  const CommandResult r = run_fusecheck("info '" + model.string() + "'");
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_NE(r.err.find("error: " + named_file(c, dir, model)), std::string::npos) << r.err;
  for (const std::string& word : c.expected) EXPECT_NE(r.err.find(word), std::string::npos) << r.err;
  EXPECT_TRUE(r.out.empty()) << r.out;
}

INSTANTIATE_TEST_SUITE_P(Checkpoint, BadInputTest, ::testing::ValuesIn(bad_inputs()),
                         [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace fusecheck::test
