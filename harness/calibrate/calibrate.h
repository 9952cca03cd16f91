// `fusecheck calibrate`: holds both static scorers against the outcomes observed in a
// folder of run results (the calibration sweep): labels each run by the outcome rule,
// ROC / AUC with a bootstrap interval, Spearman of predicted against observed
// amplification per layer and per model, confusion matrices at the seed's and at the
// fitted thresholds, thresholds fitted at a miss-rate bound on the design families and
// validated three ways: leaving out each design family, leaving out each seed, and on
// held-out families never fitted on. docs/calibration.md.
#pragma once

#include <cstdint>
#include <optional>
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
  double max_miss_rate = 0.05;   // the bound for the fitted `fail` cuts (issue 22: miss <= 5%)
  // Families never fitted on (sweep.yaml `held_out: true`): scored only, to measure the
  // fitted score on shapes of outliers no figure was designed on.
  std::vector<std::string> held_out_families;
  // The thresholds in use that the fit is compared with ("fusecheck default"), and whose
  // fail points floor the ramps the fit does not need; nullopt: the built-in default.
  std::optional<check::Thresholds> baseline;
  const check::Thresholds& baseline_thresholds() const;
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

// A score held against the outcomes of one set of runs.
struct SetScore {
  int runs = 0;
  int positives = 0;
  double auc = 0;         // NaN when the set has one class only
  Interval auc_interval;  // stratified bootstrap, 95%
  Confusion confusion;    // predicted INCOMPATIBLE against divergent
};

// One recipe path (issue 17): the design runs that have it, each labelled by that path's
// own outcome under the same rule, and both scorers at the baseline (default) thresholds;
// nothing is fitted on these labels (the fit stays on the fused bf16 ones).
struct RecipeScore {
  std::string path;    // the path label, "emulated-cpu:fp8-kv"
  std::string recipe;  // recipe_of_path(path)
  bool fp8 = false;    // is_fp8_path(path)
  SetScore braidinfer, fusecheck;
  // FP8 recipes: the key-bound figure alone (RunRecord::fp8_key_bound, scale 1) on the runs
  // where it was read; confusion: predicted when the figure passes `fp8_fail`, the
  // recipe's `fail` (check::fp8_static_thresholds; absent for dynamic scales: not judged).
  SetScore fp8_key_bound;
  std::optional<double> fp8_fail;
};

// One left-out group (a family or a seed), or one held-out family.
struct HeldOutFold {
  std::string key;                 // the family or the seed
  SetScore fusecheck;              // under thresholds fitted without this group
  SetScore fusecheck_default;      // under the built-in default thresholds
  SetScore braidinfer;             // the seed's formula (nothing to fit) on the same runs
  check::Thresholds thresholds;    // what the group was scored with
};

// Leave-one-group-out over the design runs: each group's runs scored by thresholds
// fitted on the others; `pooled` holds every run scored by the fold that left it out.
struct CrossValidation {
  std::string by;  // "family" or "seed"
  std::vector<HeldOutFold> folds;
  SetScore pooled;
};

struct Calibration {
  CalibrateOptions options;
  std::string identity;  // results_identity()
  std::string created;   // ISO date
  std::vector<RunRecord> runs;
  std::vector<LabelledPath> paths;   // every low-precision path of every run
  std::vector<int> labels;           // per run: the primary path diverged (-1: no primary path)
  std::vector<std::size_t> used;     // design runs with a primary path: fitted on, scorers evaluated on
  std::vector<std::size_t> held_out; // runs of the held-out families with a primary path
  ScorerEvaluation braidinfer, fusecheck, fitted;  // on the design runs (in-sample for `fitted`)
  CutFit fail_fit, warn_fit;
  check::Thresholds thresholds;      // fitted on every design run; evidence over every labelled run
  CrossValidation by_family, by_seed;
  // The held-out families, each and all together (key "all"), scored with `thresholds`.
  std::vector<HeldOutFold> held_out_families;
  std::optional<HeldOutFold> held_out_all;
  // Diagnostics, not used by the fit: the AUC of single weights-only figures taken from
  // the fusecheck scorer's components (single_figures()), to show which figure carries
  // the prediction on this sweep.
  std::vector<std::pair<std::string, double>> single_figure_auc;
  // Every path label of the results, in the order first seen (recipe_scores()).
  std::vector<RecipeScore> per_recipe;
};

// Per run of `n_runs`: 1 when its path `label` diverged, 0 when not, -1 when the run has
// no such path.
std::vector<int> labels_of_path(const std::vector<LabelledPath>& paths, std::size_t n_runs, const std::string& label);

// The per-recipe section from c.runs, c.paths and c.used (each path's own labels).
std::vector<RecipeScore> recipe_scores(const Calibration& c);

// Per run, figures derived from the fusecheck scorer's components: the largest norm
// ratio, hidden-norm gain and q/k amplification, the model amplification, and the
// geometric mean over layers of max(q/k amplification, 1) (1 with no q/k figures). Name
// and value pairs, in that order.
std::vector<std::pair<std::string, double>> single_figures(std::span<const StaticComponent> components);

// InputError when no design run has a primary path or only one class was observed.
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
