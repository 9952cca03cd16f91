// `fusecheck calibrate`: holds both static scorers against the outcomes observed in a
// folder of run results (the calibration sweep): labels each run by the outcome rule,
// ROC / AUC with a bootstrap interval, Spearman of predicted against observed
// amplification per layer and per model, confusion matrices at the seed's and at the
// fitted thresholds, thresholds fitted at a miss-rate bound and validated by holding out
// each family of models in turn. docs/calibration.md.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <span>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "harness/calibrate/fit.h"
#include "harness/calibrate/outcome.h"
#include "harness/calibrate/records.h"
#include "harness/calibrate/stats.h"
#include "harness/check/thresholds.h"

namespace fusecheck::calibrate {

struct CalibrateOptions {
  OutcomeRule rule = default_outcome_rule();
  double max_miss_rate = 0.01;   // the bound for the fitted `fail` cuts
  int bootstrap_resamples = 2000;
  std::uint64_t seed = 0;        // bootstrap seed (logged in the output)
};

// One path of one run with its observed outcome.
struct LabelledPath {
  std::size_t run = 0;  // index into Calibration::runs
  std::string label;
  std::string role;
  EndToEnd e2e;
  Outcome outcome;
};

// A scorer held against the primary (fused, bf16) path's outcome of every run.
struct ScorerEvaluation {
  std::string name;
  std::vector<double> risk;      // per run: 1 - score (larger = predicted worse)
  std::vector<int> predicted;    // per run: status INCOMPATIBLE
  double auc = 0;
  Interval auc_interval;
  std::vector<RocPoint> roc;
  Confusion confusion;
  double spearman_layers_pooled = 0;  // over every (run, layer): static figure vs local error / u
  double spearman_layers_median = 0;  // median over runs of the per-run Spearman
  double spearman_model = 0;          // over runs: model figure vs logits propagated error / u
};

struct HeldOutFold {
  std::string family;
  int runs = 0;
  int positives = 0;
  double auc = 0;  // NaN when the family has one class only
  Confusion confusion;
  check::Thresholds thresholds;  // fitted without this family
};

struct Calibration {
  CalibrateOptions options;
  std::string identity;  // results_identity()
  std::string created;   // ISO date
  std::vector<RunRecord> runs;
  std::vector<LabelledPath> paths;   // every low-precision path of every run
  std::vector<int> labels;           // per run: the primary path diverged (-1: no primary path)
  std::vector<std::size_t> used;     // runs with a primary path (what the scorers are held against)
  ScorerEvaluation braidinfer, fusecheck, fitted;
  CutFit fail_fit, warn_fit;
  check::Thresholds thresholds;      // fitted on every run
  std::vector<HeldOutFold> folds;
  double heldout_auc = 0;            // fusecheck, every run scored by the fold that left it out
  Interval heldout_auc_interval;
  // Diagnostics, not used by the fit: the AUC of single weights-only figures taken from
  // the fusecheck scorer's components (single_figures()), to show which figure carries
  // the prediction on this sweep.
  std::vector<std::pair<std::string, double>> single_figure_auc;
};

// Per run, figures derived from the fusecheck scorer's components: the largest norm
// ratio, hidden-norm gain and q/k amplification, the model amplification, and the
// geometric mean over layers of max(q/k amplification, 1) (1 with no q/k figures). Name
// and value pairs, in that order.
std::vector<std::pair<std::string, double>> single_figures(std::span<const StaticComponent> components);

// InputError when no run has a primary path or only one class was observed.
Calibration calibrate(std::vector<RunRecord> runs, const CalibrateOptions& options);

// The thresholds file (schema fusecheck-thresholds/1) with source, created and sweep
// filled, plus a "calibration" section (rule, counts, AUCs, confusion matrices, folds).
std::string thresholds_file_json(const Calibration& c);

// Everything the HTML report plots (scripts/calibration-report reads it).
nlohmann::json report_data(const Calibration& c);

// The text summary `fusecheck calibrate` prints.
std::string summary_text(const Calibration& c);

// Renders `html` from report_data() saved in `data_json`, with scripts/calibration-report
// (FUSECHECK_CALIBRATION_REPORT_SCRIPT overrides its path); returns its exit status.
int render_report_html(const std::string& data_json, const std::string& html);

}  // namespace fusecheck::calibrate
