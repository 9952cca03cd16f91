// `fusecheck run SCENARIO.yaml`: every layer side by side (harness/run/run_command.h).
// Exit codes: 0 every gate holds, 1 a gate failed, 2 bad input.
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>
#include <memory>

#include "harness/cli/command.h"
#include "harness/run/run_command.h"

namespace fusecheck::cli {
namespace {

// The full command line for provenance (main() does not hand argv to commands).
std::vector<std::string> process_argv() {
  std::ifstream in("/proc/self/cmdline", std::ios::binary);
  std::vector<std::string> argv;
  std::string arg;
  while (std::getline(in, arg, '\0')) argv.push_back(arg);
  return argv;
}

struct RunArgs {
  std::string scenario, device, out;
  bool force_fused = false, dump_failing = false, ref64 = false, no_progress = false;
};

const CommandRegistrar kRun{{
    "run",
    "Runs a scenario: every layer and tap of every path against the reference, with "
    "amplification, speed and the static cross-check; writes an HDF5 results file",
    [](CLI::App& sub) -> std::function<int()> {
      auto args = std::make_shared<RunArgs>();
      sub.add_option("scenario", args->scenario, "scenario YAML (scenarios/*.yaml)")->required();
      sub.add_option("--device", args->device, "cuda or cpu (default: cuda when a GPU is usable); "
                                               "on cpu, GPU paths run as their emulated recipes")
          ->check(CLI::IsMember({"cuda", "cpu"}));
      CLI::Option* out = sub.add_option("--out", args->out, "results file (default results/runs/<date>-<scenario>.h5)");
      sub.add_flag("--force-fused", args->force_fused,
                   "run the fused path even when the static check says INCOMPATIBLE");
      sub.add_flag("--dump-failing", args->dump_failing, "store the tensors of failing taps in the results");
      sub.add_flag("--ref64", args->ref64, "also run ref64-cpu for the FP64 noise floor");
      sub.add_flag("--no-progress", args->no_progress, "no progress bar on stderr");
      return [args, out]() {
        run::RunOptions o;
        o.scenario = args->scenario;
        o.device = args->device;
        if (out->count() > 0) o.out = args->out;  // --out "" is an error, not the default
        o.force_fused = args->force_fused;
        o.dump_failing = args->dump_failing;
        o.ref64 = args->ref64;
        o.progress = !args->no_progress;
        o.argv = process_argv();
        const auto outcome = run::run_scenario(o);
        std::fputs(outcome.summary.c_str(), stdout);
        return outcome.exit_code;
      };
    },
}};

}  // namespace
}  // namespace fusecheck::cli
