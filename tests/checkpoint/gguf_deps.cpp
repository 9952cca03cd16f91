// Locations of the pinned GGUF test dependencies and the runner of scripts/gguf_tool.py.
#include "tests/checkpoint/gguf_deps.h"

#include <cstdio>
#include <cstdlib>
#include <sys/wait.h>

#include "tests/common/test_support.h"

namespace fusecheck::test {

namespace fs = std::filesystem;

namespace {
fs::path env_or(const char* name, const fs::path& fallback) {
  const char* v = std::getenv(name);
  return v && *v ? fs::path(v) : fallback;
}
}  // namespace

std::optional<fs::path> gguf_python_site() {
  const fs::path site = env_or("FUSECHECK_PYDEPS", source_dir() / ".deps-py") / "site";
  if (fs::is_regular_file(site / "gguf" / "quants.py")) return site;
  return std::nullopt;
}

std::string gguf_python_skip_reason() {
  return "the gguf Python package is not in $FUSECHECK_PYDEPS/site (.deps-py/site): run scripts/setup";
}

std::optional<fs::path> quantized_model() {
  const fs::path model = env_or("FUSECHECK_MODEL_CACHE", source_dir() / "models") / "stories260K-Q8_0.gguf";
  if (fs::is_regular_file(model)) return model;
  return std::nullopt;
}

std::string quantized_model_skip_reason() {
  return "stories260K-Q8_0.gguf is not in $FUSECHECK_MODEL_CACHE (models/): run scripts/setup "
         "(it needs the gguf package and ../shared/models/stories260K.gguf)";
}

int run_gguf_tool(const fs::path& site, const std::string& args, std::string& log) {
  const char* python = fs::exists("/usr/bin/python3") ? "/usr/bin/python3" : "python3";
  const std::string cmd = "PYTHONPATH='" + site.string() + "' " + python + " '" +
                          (source_dir() / "scripts" / "gguf_tool.py").string() + "' " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return -1;
  char buf[4096];
  while (std::fgets(buf, sizeof buf, p)) log += buf;
  const int status = pclose(p);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

}  // namespace fusecheck::test
