// `fusecheck run SCENARIO.yaml`: every layer side by side (harness/run/run_command.h).
// `fusecheck run MODEL [--prompt TEXT | --prefill N] [--decode KV:STEPS] [--paths ...]`
// builds the scenario from flags (defaults below), writes it beside the results and runs
// it, so the file records the equivalent YAML; --print-scenario prints it instead.
// Exit codes: 0 every gate holds, 1 a gate failed, 2 bad input.
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>
#include <memory>
#include <optional>

#include <fmt/core.h>
#include <yaml-cpp/yaml.h>

#include "harness/cli/command.h"
#include "harness/core/error.h"
#include "harness/core/untrusted.h"
#include "harness/run/run_command.h"
#include "harness/tokenizer/tokenizer.h"

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
  std::vector<std::string> plugins;
  std::string check_json;
  bool force_fused = false, dump_failing = false, ref64 = false, no_progress = false;
  bool device_metrics = false, host_metrics = false;
  // The MODEL form.
  std::optional<std::string> prompt;
  std::string decode;
  int prefill = 0;
  std::vector<std::string> paths;
  bool print_scenario = false;
};

bool is_scenario_file(const std::filesystem::path& p) { return p.extension() == ".yaml" || p.extension() == ".yml"; }

// The model as an absolute path without a trailing separator (its stem names the run).
std::filesystem::path model_path(const std::string& arg) {
  std::filesystem::path p = std::filesystem::absolute(arg).lexically_normal();
  return p.has_filename() ? p : p.parent_path();
}

// "KV:STEPS" -> {kv_len, steps}.
std::pair<int, int> parse_decode(const std::string& text) {
  const auto colon = text.find(':');
  try {
    std::size_t used_kv = 0, used_steps = 0;
    if (colon == std::string::npos) throw std::invalid_argument(text);
    const int kv = std::stoi(text.substr(0, colon), &used_kv);
    const int steps = std::stoi(text.substr(colon + 1), &used_steps);
    if (used_kv != colon || used_steps != text.size() - colon - 1 || kv < 1 || steps < 1) throw std::invalid_argument(text);
    return {kv, steps};
  } catch (const std::logic_error&) {
    throw InputError("--decode", "'" + text + "' is not KV:STEPS with both at least 1 (e.g. 64:4)");
  }
}

// The scenario the MODEL form runs. Defaults: fused and standard paths (their emulated
// recipes on a CPU-only machine) against the auto reference; isolated, propagated and a
// perturbation of layer 0's k; 16 greedy steps; a text prompt sets the prefill length to
// its token count (BOS included), else 16 seeded tokens.
std::string model_scenario(const RunArgs& a) {
  const std::filesystem::path model = model_path(a.scenario);
  if (a.prompt.has_value() && a.prefill > 0) throw InputError("--prefill", "give --prompt or --prefill, not both");
  if (a.prefill > 0 && !a.decode.empty()) throw InputError("--prefill", "give --prefill or --decode, not both");
  YAML::Emitter y;
  y << YAML::BeginMap;
  y << YAML::Key << "name" << YAML::Value << model.stem().string();
  y << YAML::Key << "model" << YAML::Value << YAML::BeginMap << YAML::Key << "path" << YAML::Value << model.string()
    << YAML::EndMap;
  int n_tokens = a.prefill > 0 ? a.prefill : 16;
  y << YAML::Key << "tokens" << YAML::Value << YAML::Flow << YAML::BeginMap;
  if (a.prompt.has_value()) {
    const auto tokenizer = tok::load_tokenizer(model);
    if (!tokenizer) throw InputError(model.string(), "has no tokenizer (tokenizer.json or a GGUF vocabulary): use --prefill N");
    n_tokens = static_cast<int>(tok::encode_prompt(*tokenizer, *a.prompt, INT32_MAX).size());
    y << YAML::Key << "prompt" << YAML::Value << YAML::DoubleQuoted << *a.prompt;
  } else {
    y << YAML::Key << "seed" << YAML::Value << 1;
  }
  y << YAML::EndMap;
  y << YAML::Key << "phase" << YAML::Value << YAML::Flow << YAML::BeginMap;
  if (!a.decode.empty()) {
    const auto [kv, steps] = parse_decode(a.decode);
    if (a.prompt.has_value() && kv + steps != n_tokens) {
      throw InputError("--decode", fmt::format("{}:{} needs {} tokens but the prompt encodes to {}", kv, steps, kv + steps,
                                               n_tokens));
    }
    y << YAML::Key << "decode" << YAML::Value << YAML::BeginMap << YAML::Key << "kv_len" << YAML::Value << kv
      << YAML::Key << "steps" << YAML::Value << steps << YAML::EndMap;
  } else {
    y << YAML::Key << "prefill" << YAML::Value << n_tokens;
  }
  y << YAML::EndMap;
  const std::vector<std::string> paths = a.paths.empty() ? std::vector<std::string>{"fused-cuda", "standard-cuda"} : a.paths;
  y << YAML::Key << "paths" << YAML::Value << YAML::Flow << paths;
  y << YAML::Key << "reference" << YAML::Value << YAML::Flow << YAML::BeginMap << YAML::Key << "path" << YAML::Value
    << "auto" << YAML::Key << "ref64" << YAML::Value << a.ref64 << YAML::EndMap;
  y << YAML::Key << "modes" << YAML::Value << YAML::Flow << YAML::BeginSeq << "isolated" << "propagated" << YAML::BeginMap
    << YAML::Key << "perturb" << YAML::Value << YAML::BeginMap << YAML::Key << "layer" << YAML::Value << 0 << YAML::Key
    << "tap" << YAML::Value << "k" << YAML::Key << "size" << YAML::Value << 1.0e-3 << YAML::EndMap << YAML::EndMap
    << YAML::EndSeq;
  y << YAML::Key << "end_to_end" << YAML::Value << YAML::Flow << YAML::BeginMap << YAML::Key << "greedy_steps"
    << YAML::Value << 16 << YAML::EndMap;
  y << YAML::EndMap;
  return fmt::format("# What `fusecheck run {}` runs (defaults: docs/scenarios.md, \"One command on a model\").\n{}\n",
                     model.filename().string(), y.c_str());
}

const CommandRegistrar kRun{{
    "run",
    "Runs a scenario: every layer and tap of every path against the reference, with "
    "amplification, speed and the static cross-check; writes an HDF5 results file",
    [](CLI::App& sub) -> std::function<int()> {
      auto args = std::make_shared<RunArgs>();
      sub.add_option("scenario", args->scenario,
                     "scenario YAML (scenarios/*.yaml), or a model (HF directory or .gguf) to run with the "
                     "defaults of docs/scenarios.md")->required();
      sub.add_option("--device", args->device, "cuda or cpu (default: cuda when a GPU is usable); "
                                               "on cpu, GPU paths run as their emulated recipes")
          ->check(CLI::IsMember({"cuda", "cpu"}));
      CLI::Option* out = sub.add_option("--out", args->out, "results file (default results/runs/<date>-<scenario>.h5)");
      sub.add_flag("--force-fused", args->force_fused,
                   "run the fused path even when the static check says INCOMPATIBLE");
      sub.add_flag("--dump-failing", args->dump_failing, "store the tensors of failing taps in the results");
      CLI::Option* dev_metrics = sub.add_flag("--device-metrics", args->device_metrics,
                                              "on cuda: compute the tap metrics on the GPU, taps stay there (docs/gpu.md)");
      sub.add_flag("--host-metrics", args->host_metrics, "compute every tap metric on the host (the CPU route)")
          ->excludes(dev_metrics);
      sub.add_flag("--ref64", args->ref64, "also run the FP64 reference for the noise floor (ref64-cuda on cuda, ref64-cpu on cpu)");
      sub.add_flag("--no-progress", args->no_progress, "no progress bar on stderr");
      CLI::Option* check_json = sub.add_option(
          "--check-json", args->check_json,
          "also write `fusecheck check MODEL --deep --format json` for the run's model to FILE (one process, one read "
          "of the checkpoint; scripts/sweep keeps it beside each point)");
      sub.add_option("--plugin", args->plugins, "path plug-in FILE.so to load (repeatable; docs/plugin-paths.md)")
          ->allow_extra_args(false);
      sub.add_option("--prompt", args->prompt, "MODEL form: prompt text (sets the prefill length)");
      sub.add_option("--prefill", args->prefill, "MODEL form: N seeded tokens (default 16)")->check(CLI::PositiveNumber);
      sub.add_option("--decode", args->decode, "MODEL form: decode phase KV:STEPS (kv_len tokens, then STEPS steps)");
      sub.add_option("--paths", args->paths, "MODEL form: paths to compare (default fused-cuda,standard-cuda)")
          ->delimiter(',');
      sub.add_flag("--print-scenario", args->print_scenario, "MODEL form: print the scenario YAML and exit");
      return [args, out, check_json]() {
        run::RunOptions o;
        o.scenario = args->scenario;
        if (!is_scenario_file(args->scenario)) {
          const std::string yaml = model_scenario(*args);
          if (args->print_scenario) {
            std::fputs(yaml.c_str(), stdout);
            return 0;
          }
          // Written beside the results, so the run reads it as any scenario and records it.
          const std::filesystem::path file =
              args->out.empty()
                  ? o.results_dir / (file_name_component(model_path(args->scenario).stem().string(), "model") + ".scenario.yaml")
                  : std::filesystem::path(args->out).replace_extension(".scenario.yaml");
          if (file.has_parent_path()) std::filesystem::create_directories(file.parent_path());
          std::ofstream written(file);
          written << yaml;
          if (!written.flush()) throw InputError(file.string(), "cannot be written");
          o.scenario = file;
        } else if (args->prompt.has_value() || args->prefill || !args->decode.empty() || !args->paths.empty() ||
                   args->print_scenario) {
          throw InputError("fusecheck run", "--prompt, --prefill, --decode, --paths and --print-scenario go with a "
                                            "MODEL, not a scenario file");
        }
        o.device = args->device;
        if (out->count() > 0) o.out = args->out;  // --out "" is an error, not the default
        o.force_fused = args->force_fused;
        o.dump_failing = args->dump_failing;
        if (args->device_metrics) o.device_metrics = true;
        if (args->host_metrics) o.device_metrics = false;
        o.ref64 = args->ref64;
        o.progress = !args->no_progress;
        o.argv = process_argv();
        o.plugins.assign(args->plugins.begin(), args->plugins.end());
        if (check_json->count() > 0) {
          if (args->check_json.empty()) throw InputError("--check-json", "needs a file name");
          o.check_json = args->check_json;
        }
        const auto outcome = run::run_scenario(o);
        std::fputs(outcome.summary.c_str(), stdout);
        return outcome.exit_code;
      };
    },
}};

}  // namespace
}  // namespace fusecheck::cli
