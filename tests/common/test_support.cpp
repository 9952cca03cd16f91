#include "tests/common/test_support.h"

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <sys/wait.h>

#include <gtest/gtest.h>

namespace fusecheck::test {

std::filesystem::path source_dir() { return FUSECHECK_SOURCE_DIR; }

std::optional<std::filesystem::path> models_dir() {
  std::filesystem::path dir;
  if (const char* env = std::getenv("FUSECHECK_MODELS"); env && *env) {
    dir = env;
  } else {
    dir = source_dir().parent_path() / "shared" / "models";
  }
  if (std::filesystem::is_directory(dir)) return dir;
  return std::nullopt;
}

std::string models_dir_skip_reason() {
  return "real test models not found: set FUSECHECK_MODELS or provide ../shared/models";
}

std::filesystem::path scratch_dir() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::string name = info ? std::string(info->test_suite_name()) + "." + info->name() : "scratch";
  for (char& c : name) {
    if (c == '/') c = '_';
  }
  const char* bin = std::getenv("FUSECHECK_BINARY_DIR");
  std::filesystem::path root = bin ? std::filesystem::path(bin) : std::filesystem::temp_directory_path();
  auto dir = root / "test-scratch" / name;
  // Emptied once per test, so fixtures written before run_fusecheck() survive it.
  static std::string emptied_for;
  if (emptied_for != name) {
    std::filesystem::remove_all(dir);
    emptied_for = name;
  }
  std::filesystem::create_directories(dir);
  return dir;
}

std::filesystem::path fusecheck_binary() {
  const char* bin = std::getenv("FUSECHECK_BINARY_DIR");
  return std::filesystem::path(bin ? bin : ".") / "harness" / "cli" / "fusecheck";
}

CommandResult run_fusecheck(const std::string& args) {
  auto dir = scratch_dir() / "cmd";
  std::filesystem::create_directories(dir);
  auto out = dir / "stdout.txt";
  auto err = dir / "stderr.txt";
  std::string cmd = fusecheck_binary().string() + " " + args + " >" + out.string() + " 2>" + err.string();
  int status = std::system(cmd.c_str());
  CommandResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  auto slurp = [](const std::filesystem::path& p) {
    std::ifstream f(p);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
  };
  r.out = slurp(out);
  r.err = slurp(err);
  return r;
}

}  // namespace fusecheck::test
