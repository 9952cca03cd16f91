// Static scores held against observation: each scorer's per-layer figures beside the
// observed per-layer error of the path under test, their rank correlation, and a verdict
// per model (rule in docs/amplification.md).
#pragma once

#include <string>
#include <vector>

#include "harness/run/driver.h"

namespace fusecheck::check {
struct CompatibilityResult;
}

namespace fusecheck::run {

// One scorer's result, reduced to what the run records.
struct StaticFigures {
  std::string scorer;  // "braidinfer" / "fusecheck"
  std::string status;  // "COMPATIBLE" / "WARNING" / "INCOMPATIBLE"
  double score = kNaN;
  double estimated_amplification = kNaN;
  std::string reason;
  std::vector<double> layer_figure;  // [n_layers]; NaN where the scorer did not look
};
StaticFigures static_figures(const check::CompatibilityResult& result, int n_layers);

struct CrossCheck {
  std::string scorer;
  std::string path;  // label of the path observed ("" when none could be)
  std::vector<double> static_figure, observed;
  double spearman = kNaN;
  bool predicted_incompatible = false;
  bool observed_divergent = false;
  std::string verdict;  // "agree", "false alarm", "miss", or "unobserved"
};

// Unit roundoff of a dtype (2^-p for p significand bits): bf16 2^-8, fp16 2^-11, fp32 2^-24.
double unit_roundoff(DType dtype);

// The path whose observation tests a static prediction: the first fused-role path (a
// path the fallback put in fused's place has role standard), else nullptr.
const PathResult* observed_path(const RunResult& run);

CrossCheck cross_check(const StaticFigures& figures, const PathResult* observed);

}  // namespace fusecheck::run
