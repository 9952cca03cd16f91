// The observed outcome: whether a low-precision path "diverges" from the FP32 reference
// on a model, decided from the run's end-to-end figures alone. Rule and the reasons for
// its constants (chosen from the calibration sweep's distributions): docs/calibration.md.
#pragma once

#include <span>
#include <string>

namespace fusecheck::calibrate {

// A path's end-to-end figures from one run (results file /end_to_end/<label>/).
struct EndToEnd {
  double kl_mean = 0;             // nats, mean over positions
  double kl_p99 = 0;
  double top1_all = 1;            // top-1 agreement over every position
  double top1_confident = 1;      // ... over positions whose reference margin > floor (NaN: none)
  int positions = 0;
  int confident_positions = 0;
  long greedy_first_mismatch = -1;  // -1: none within greedy_steps
  long greedy_steps = 0;
  bool nonfinite = false;         // some position's logits were NaN/Inf
};

struct OutcomeRule {
  // A position's prediction counts for agreement only when the reference's top-1 logit
  // beats its top-2 by more than this (nats): below it, a near-tie that rounding breaks
  // either way. The CI sweep's no-outlier models flipped positions with margins up to
  // 0.075 nats in every recipe and seed, never above: 0.1 sits just past that floor.
  double margin_floor = 0.1;
  // Divergent when the mean next-token KL passes this (nats): ~17x the worst bf16 KL of
  // the no-outlier models (6e-4), below the 96.5x-everywhere models' (4e-3 to 4e-2) ...
  double kl_mean_limit = 1e-2;
  // ... or when fewer than this share of the confident positions keep the reference's
  // top-1 (tolerates one borderline flip among the ~20 confident positions of a CI run).
  double top1_confident_min = 0.95;
};

// The rule's constants, chosen from the CPU sweep (docs/calibration.md).
OutcomeRule default_outcome_rule();

// Figures from per-position data: KL, the reference's top-1 minus top-2 logit and whether
// the path's argmax matched; kl of +inf marks a non-finite position.
EndToEnd end_to_end_figures(std::span<const double> kl, std::span<const double> ref_margin,
                            std::span<const double> top1_match, double margin_floor);

struct Outcome {
  bool divergent = false;
  std::string reason;  // which clause fired, with the figure ("KL mean 0.031 > 0.01")
};

// Divergent when logits went non-finite, KL mean > limit, or confident top-1 < min.
Outcome judge(const EndToEnd& e2e, const OutcomeRule& rule);

}  // namespace fusecheck::calibrate
