// `fusecheck calibrate RESULTS_DIR [--out thresholds.json] [--report calibration.html]`:
// holds both static scorers against the outcomes of a calibration sweep, fits the
// fusecheck scorer's thresholds and writes them in the file `fusecheck check
// --thresholds` reads; the HTML report is rendered by scripts/calibration-report
// (python3 + matplotlib) from a JSON of the figures written beside it.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include "harness/calibrate/calibrate.h"
#include "harness/check/thresholds.h"
#include "harness/cli/command.h"
#include "harness/core/error.h"

namespace fusecheck::cli {
namespace {

struct CalibrateArgs {
  std::string results_dir;
  std::string out;
  std::string report;
  double max_miss_rate = 0.05;
  int bootstrap = 2000;
  std::uint64_t seed = 0;
  double margin_floor = calibrate::default_outcome_rule().margin_floor;
  double kl_mean_limit = calibrate::default_outcome_rule().kl_mean_limit;
  double top1_min = calibrate::default_outcome_rule().top1_confident_min;
  std::vector<std::string> exclude_families;
  std::vector<std::string> held_out_families;
  std::string baseline;
};

void write_file(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
  out.close();
  if (!out) throw InputError(path, "cannot write it");
}

int run_calibrate(const CalibrateArgs& a) {
  calibrate::CalibrateOptions options;
  options.max_miss_rate = a.max_miss_rate;
  options.bootstrap_resamples = a.bootstrap;
  options.seed = a.seed;
  options.rule = {a.margin_floor, a.kl_mean_limit, a.top1_min};
  options.held_out_families = a.held_out_families;
  if (!a.baseline.empty()) options.baseline = check::load_thresholds(a.baseline);
  if (!(a.margin_floor >= 0 && std::isfinite(a.margin_floor))) throw InputError("--margin-floor", "must be a finite number >= 0");
  if (!(a.kl_mean_limit > 0 && std::isfinite(a.kl_mean_limit))) throw InputError("--kl-limit", "must be a finite number > 0");
  if (!(a.top1_min >= 0 && a.top1_min <= 1)) throw InputError("--top1-min", "must be in [0, 1]");
  if (!(a.max_miss_rate >= 0 && a.max_miss_rate < 1)) throw InputError("--max-miss-rate", "must be in [0, 1)");
  if (a.bootstrap < 1) throw InputError("--bootstrap", "must be at least 1");
  if (!a.out.empty() && !a.report.empty()) {
    // The report's data goes to REPORT with .json: it must not overwrite the thresholds.
    std::filesystem::path data = a.report;
    data.replace_extension(".json");
    if (std::filesystem::weakly_canonical(data) == std::filesystem::weakly_canonical(a.out))
      throw InputError(a.out, "--out and the report's data file (" + data.string() +
                                  ") are the same file; give the report another name");
  }

  auto runs = calibrate::load_results_dir(a.results_dir);
  if (!a.exclude_families.empty()) {
    std::erase_if(runs, [&](const calibrate::RunRecord& r) {
      return std::find(a.exclude_families.begin(), a.exclude_families.end(), r.family) != a.exclude_families.end();
    });
    if (runs.empty()) throw InputError("--exclude-family", "every run was excluded");
  }
  const calibrate::Calibration c = calibrate::calibrate(std::move(runs), options);
  std::fputs(calibrate::summary_text(c).c_str(), stdout);
  if (!a.out.empty()) {
    write_file(a.out, calibrate::thresholds_file_json(c));
    std::printf("\nthresholds: %s  (use: fusecheck check MODEL --thresholds %s)\n", a.out.c_str(), a.out.c_str());
  }
  if (!a.report.empty()) {
    std::filesystem::path data = a.report;
    data.replace_extension(".json");
    write_file(data.string(), calibrate::report_data(c).dump(1) + "\n");
    const int rc = calibrate::render_report_html(data.string(), a.report);
    if (rc != 0) {
      std::fprintf(stderr, "fusecheck calibrate: the report script failed (exit %d); its data is in %s\n", rc,
                   data.c_str());
      return 2;
    }
    std::printf("report: %s\n", a.report.c_str());
  }
  return 0;
}

const CommandRegistrar registrar{CommandSpec{
    "calibrate",
    "Hold the static scorers against a calibration sweep's outcomes; fit thresholds (docs/calibration.md)",
    [](CLI::App& sub) {
      auto a = std::make_shared<CalibrateArgs>();
      sub.add_option("RESULTS_DIR", a->results_dir, "folder of run results (*.h5, scripts/sweep output)")->required();
      sub.add_option("--out", a->out, "write the fitted thresholds file (fusecheck check --thresholds)");
      sub.add_option("--report", a->report, "write the HTML calibration report (and its data as .json beside it)");
      sub.add_option("--max-miss-rate", a->max_miss_rate, "share of divergent runs the fitted fail cuts may miss (0.05)");
      sub.add_option("--bootstrap", a->bootstrap, "bootstrap resamples for the AUC intervals (2000)");
      sub.add_option("--seed", a->seed, "bootstrap seed (0)");
      sub.add_option("--margin-floor", a->margin_floor, "outcome rule: reference top-2 margin (nats) above which "
                                                        "top-1 agreement counts");
      sub.add_option("--kl-limit", a->kl_mean_limit, "outcome rule: mean next-token KL (nats) above which a path diverges");
      sub.add_option("--top1-min", a->top1_min, "outcome rule: confident top-1 agreement below which a path diverges");
      sub.add_option("--exclude-family", a->exclude_families,
                     "leave a sweep family out (repeatable), e.g. massive: what no weights-only norm score can see");
      sub.add_option("--baseline", a->baseline,
                     "thresholds file the fit is compared with (default: the built-in default.json)");
      sub.add_option("--held-out-family", a->held_out_families,
                     "never fit on this family, only score it (repeatable; scripts/sweep passes sweep.yaml's held_out)");
      return [a] { return run_calibrate(*a); };
    }}};

}  // namespace
}  // namespace fusecheck::cli
