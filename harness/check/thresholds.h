// Thresholds of the two static scorers and the JSON thresholds file that holds the
// fusecheck scorer's (schema in docs/static-score.md). The built-in defaults ARE the
// committed file results/thresholds/default.json, compiled into the binary.
#pragma once

#include <array>
#include <filesystem>
#include <optional>
#include <string>

namespace fusecheck::check {

// Defaults are the seed's, which the braidinfer scorer always uses.
struct StatusCutoffs {
  double warning_below = 0.8;       // score < this: WARNING
  double incompatible_below = 0.5;  // score < this: INCOMPATIBLE
};

// A component's score falls piecewise log-linearly with its figure: 1 up to sqrt(warn),
// 0.8 at `warn`, 0.5 at `fail`, 0 at fail^2, clamped to [0, 1]. With the
// default cutoffs a figure past `warn` alone makes the model WARNING, past `fail`
// INCOMPATIBLE; below warn and past fail the score still ranks models by the figure,
// however narrow a fitted warn-fail band is.
// A ramp of 0 / 0 is off: a thresholds file written before its figure existed does not
// score that figure (the report says so).
struct Ramp {
  double warn = 0;
  double fail = 0;
  bool on() const { return fail > 0; }
};

// What a calibration sweep observed for the models its thresholds put in one status:
// "models scoring like this diverged in `divergent` of `runs` sweep runs".
struct StatusEvidence {
  int runs = 0;
  int divergent = 0;
};

// The seed's checker constants that its --threshold changes (safe ratio T, warning 0.75 T).
struct BraidinferThresholds {
  double safe_ratio = 20.0;
  double warning_ratio = 15.0;
};

struct Thresholds {
  BraidinferThresholds braidinfer;
  StatusCutoffs status;
  // The fusecheck scorer's ramps; values come from a thresholds file (default_thresholds()).
  Ramp norm_ratio;           // max|w| / median|w| of any norm tensor
  Ramp hidden_norm_gain;     // max|w| / rms(w) of attn_norm, mlp_norm, final_norm
  Ramp qk_amplification;     // rms_i(wq_i * wk_i): attention-logit error gain
  Ramp model_amplification;  // rms over layers (and final norm) of the layer figures
  Ramp qk_depth_amplification;  // depth-weighted geometric mean over layers of max(qk amplification, 1)
  Ramp super_weight;         // --deep: a down_proj entry's gain times its neuron's row gains
  // max|w| / rms(w) of the final norm alone, which feeds the LM head (off: scored on
  // hidden_norm_gain, as before the GPU sweep showed the two behave apart).
  Ramp final_norm_gain;

  // From calibration: per status (COMPATIBLE, WARNING, INCOMPATIBLE, in that order) what
  // the sweep's runs did, and the outcome rule that labelled them ("" when hand-written).
  std::optional<std::array<StatusEvidence, 3>> evidence;
  std::string outcome_rule;

  // Provenance, reported with every result.
  std::string source;    // what produced them: "hand-written defaults", "calibration ..."
  std::string created;   // date (ISO 8601)
  std::string sweep;     // calibration sweep identity ("" for hand-written)
  std::string file;      // file read ("" when built in); "(built in)" for the default file
  std::string overrides; // e.g. "--threshold 12" when a command-line flag changed them
};

// The committed defaults (results/thresholds/default.json, compiled in).
const Thresholds& default_thresholds();
// Parses a thresholds file; InputError naming the file and the key on any problem.
Thresholds load_thresholds(const std::filesystem::path& file);
Thresholds parse_thresholds(const std::string& json_text, const std::string& where);
// The file form (what calibration writes; round-trips through parse_thresholds).
std::string thresholds_to_json(const Thresholds& t);
// The seed's --threshold T: braidinfer safe ratio T, warning ratio 0.75 T; for the
// fusecheck scorer the norm-ratio ramp becomes warn 0.75 T, fail T. InputError unless T > 0.
void apply_threshold_flag(Thresholds& t, double threshold);
// The ramp the final norm's gain is scored on: final_norm_gain, or hidden_norm_gain in a
// thresholds file written before it existed.
const Ramp& final_norm_gain_ramp(const Thresholds& t);
// Value in [0, 1] of the ramp at `value` (see Ramp).
double ramp_score(double value, const Ramp& ramp, const StatusCutoffs& cutoffs);

}  // namespace fusecheck::check
