// `fusecheck check MODEL`: the weights-only compatibility score, with the seed's flags and
// exit codes (0 compatible, 1 warning, 2 incompatible, 3 error).
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <memory>
#include <optional>
#include <string>

#include <fmt/core.h>

#include "harness/check/check.h"
#include "harness/check/fp8_static.h"
#include "harness/check/report.h"
#include "harness/check/thresholds.h"
#include "harness/cli/command.h"
#include "harness/core/checkpoint.h"
#include "harness/core/error.h"

namespace fusecheck::cli {

namespace {

constexpr int kErrorExitCode = 3;  // the seed's exit code for any error

struct CheckOptions {
  std::string model;
  std::string scorer = "fusecheck";
  bool verbose = false;
  std::optional<double> threshold;
  std::string thresholds_file;
  std::string export_file;
  std::string format = "text";
  bool deep = false;
  std::string fp8_recipe;  // set: the FP8 key bound too (harness/check/fp8_static.h)
  double fp8_scale = 1.0;
};

int run_check(const CheckOptions& o) {
  const auto scorer = check::scorer_from_name(o.scorer);
  if (!scorer) throw InputError("--scorer", fmt::format("unknown scorer \"{}\" (braidinfer or fusecheck)", o.scorer));
  const auto format = check::report_format_from_name(o.format);
  if (!format) throw InputError("--format", fmt::format("unknown format \"{}\" (text, json or markdown)", o.format));

  check::Thresholds thresholds =
      o.thresholds_file.empty() ? check::default_thresholds() : check::load_thresholds(o.thresholds_file);
  if (o.threshold) check::apply_threshold_flag(thresholds, *o.threshold);

  const auto checkpoint = Checkpoint::open(o.model);
  const check::CompatibilityResult result = check::check_model(*checkpoint, thresholds, *scorer, o.deep);
  std::string report = check::render_report(result, *format, o.verbose);
  int exit_code = check::status_exit_code(result.status);
  if (!o.fp8_recipe.empty()) {
    if (*format == check::ReportFormat::Json) throw InputError("--fp8-recipe", "the FP8 key bound is text only");
    const check::Fp8StaticFigure fp8 = check::fp8_key_bound(*checkpoint, o.fp8_recipe, o.fp8_scale);
    report += check::render_fp8_static(fp8);
    exit_code = std::max(exit_code, check::fp8_static_exit_code(fp8));
  }
  std::fputs(report.c_str(), stdout);

  if (!o.export_file.empty()) {
    std::ofstream out(o.export_file, std::ios::binary);
    out << report;
    out.close();
    if (!out) throw InputError(o.export_file, "cannot write the exported report");
    // Keep stdout parseable for --format json: the note goes to stderr.
    std::fprintf(stderr, "Report exported to: %s\n", o.export_file.c_str());
  }
  return exit_code;
}

const CommandRegistrar registrar{CommandSpec{
    "check",
    "Weights-only compatibility score of a model for fused kernels (exit 0 compatible, 1 warning, "
    "2 incompatible, 3 error)",
    [](CLI::App& sub) {
      auto o = std::make_shared<CheckOptions>();
      sub.add_option("MODEL", o->model, "HF checkpoint directory or .gguf file")->required();
      sub.add_option("--scorer", o->scorer, "braidinfer (the seed's formula) or fusecheck (default)");
      sub.add_flag("-v,--verbose", o->verbose, "Per layer, every analysed norm tensor: max, median, ratio");
      sub.add_option("--threshold", o->threshold,
                     "Seed semantics: safe ratio T, warning ratio 0.75 T (fusecheck scorer: norm-ratio fail T, "
                     "warn 0.75 T)");
      sub.add_option("--thresholds", o->thresholds_file,
                     "Thresholds JSON file for the fusecheck scorer (default: results/thresholds/default.json, built in)");
      sub.add_option("--export", o->export_file, "Also write the report (with the verbose part under -v) to FILE");
      sub.add_option("--format", o->format, "text (default), json or markdown");
      sub.add_flag("--deep", o->deep,
                   "Also read every MLP down projection (and the rows feeding its largest entry) to find super "
                   "weights; the report gives the bytes read and the time (fusecheck scorer only)");
      sub.add_option("--fp8-recipe", o->fp8_recipe,
                     "Also bound |k| from the weights against an FP8 cache's 448 x scale for this fp8 recipe "
                     "(text and markdown; exit code joins the score's)");
      sub.add_option("--fp8-scale", o->fp8_scale, "KV scale for --fp8-recipe (default 1, engines' default "
                                                  "without calibrated scales)");
      return [o]() -> int {
        try {
          return run_check(*o);
        } catch (const InputError&) {
          throw;  // main prints it as one line and exits with input_error_exit_code (3)
        } catch (const std::exception& e) {
          // Any other failure is also the seed's "error" (3), still as one line.
          std::fprintf(stderr, "fusecheck check: error: %s\n", e.what());
          return kErrorExitCode;
        }
      };
    },
    kErrorExitCode}};

}  // namespace

}  // namespace fusecheck::cli
