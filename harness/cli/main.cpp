// fusecheck: one binary, subcommands registered by harness/cli/cli_*.cpp. Errors print as
// one bounded, printable line (exit 2 or the command's input-error code for bad input,
// 70 for fusecheck's own bugs); SIGINT/SIGTERM remove the run's temp files first.
#include <algorithm>
#include <cstdio>
#include <memory>
#include <vector>

#include <fmt/core.h>

#include "harness/cli/command.h"
#include "harness/core/error.h"
#include "harness/core/temp_files.h"
#include "harness/core/untrusted.h"
#include "harness/core/version.h"

namespace fusecheck::cli {

namespace {
std::vector<CommandSpec>& commands() {
  static std::vector<CommandSpec> c;
  return c;
}
// An error names a file, perhaps one 100k characters long, from input: one short line.
constexpr std::size_t kMaxErrorChars = 600;
}  // namespace

CommandRegistrar::CommandRegistrar(CommandSpec spec) { commands().push_back(std::move(spec)); }
const std::vector<CommandSpec>& registered_commands() { return commands(); }

}  // namespace fusecheck::cli

int main(int argc, char** argv) {
  using namespace fusecheck;
  install_interrupt_cleanup();
  CLI::App app{"fusecheck: validates and benchmarks fused LLM kernels against FP32/FP64 references"};
  app.set_version_flag("--version", fmt::format("fusecheck {} (git {})", version_string(), git_sha()));
  app.require_subcommand(1);

  auto specs = cli::registered_commands();
  std::sort(specs.begin(), specs.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  std::vector<std::function<int()>> runners(specs.size());
  std::vector<CLI::App*> subs(specs.size());
  for (std::size_t i = 0; i < specs.size(); ++i) {
    subs[i] = app.add_subcommand(specs[i].name, specs[i].help);
    runners[i] = specs[i].setup(*subs[i]);
  }

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);  // prints help/version (code 0) or the parse error
    if (code == 0) return 0;
    // A bad flag is bad input: the command's documented input-error code, else 2.
    for (std::size_t i = 0; i < specs.size(); ++i) {
      if (subs[i]->parsed()) return specs[i].input_error_exit_code;
    }
    return 2;
  }
  for (std::size_t i = 0; i < specs.size(); ++i) {
    if (!subs[i]->parsed()) continue;
    // An error the interruption caused (its temp files vanishing) is not reported.
    try {
      const int code = runners[i]();
      wait_if_interrupted();
      return code;
    } catch (const InputError& e) {
      wait_if_interrupted();
      std::fprintf(stderr, "fusecheck %s: error: %s\n", specs[i].name.c_str(),
                   printable(e.what(), cli::kMaxErrorChars).c_str());
      return specs[i].input_error_exit_code;
    } catch (const PluginError& e) {
      wait_if_interrupted();
      std::fprintf(stderr, "fusecheck %s: plug-in error: %s\n", specs[i].name.c_str(),
                   printable(e.what(), cli::kMaxErrorChars).c_str());
      return 70;
    } catch (const std::exception& e) {
      wait_if_interrupted();
      std::fprintf(stderr, "fusecheck %s: internal error: %s\n", specs[i].name.c_str(),
                   printable(e.what(), cli::kMaxErrorChars).c_str());
      return 70;
    }
  }
  return 0;
}
