// Regression rules for `fusecheck compare`: how much a divergence metric may grow, which
// changes count as regressions, and the timing thresholds. Read from a YAML (or JSON,
// which YAML includes) file; every field has a default documented in docs/nightly.md.
#pragma once

#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "harness/results/timing_compare.h"

namespace fusecheck::results {

// A metric where larger is worse: a regression when new > base * factor and
// new > floor (values under the floor are too small to matter, whatever their ratio).
struct GrowthRule {
  double factor = 1.25;
  double floor = 0;
};

struct CompareRules {
  // Layer and head tap metrics (dataset names of docs/results-format.md), with the
  // growth they may show; `tap_overrides[tap][metric]` replaces the default at that tap.
  std::map<std::string, GrowthRule> metrics;
  std::map<std::string, std::map<std::string, GrowthRule>> tap_overrides;

  bool new_nonfinite_is_regression = true;  // NaN/Inf/overflow where the baseline had none
  bool gate_newly_failing_is_regression = true;
  bool verdict_change_is_regression = true;  // static status, cross-check, fallback
  bool lost_tap_is_regression = true;        // a cell present in the baseline, gone now

  GrowthRule kl_mean{1.5, 1e-6};
  GrowthRule kl_p99{1.5, 1e-5};
  double top1_drop = 0.01;           // absolute drop in top-1 agreement
  bool greedy_earlier_is_regression = true;

  TimingThresholds timing;
  bool slower_is_regression = true;
  bool ambiguous_is_regression = false;

  const GrowthRule* rule_for(const std::string& tap, const std::string& metric) const;
};

// The built-in rules (what `--rules` starts from).
CompareRules default_rules();

// Reads `file` over the defaults. Unknown keys and wrong types are InputErrors naming
// the file and the key, so a typo cannot silently disable a check.
CompareRules load_rules(const std::filesystem::path& file);

}  // namespace fusecheck::results
