// The static check's figures of one sweep point, from its sidecar (DIR/<point>.check.json:
// `fusecheck check --deep --format json`, written by scripts/sweep), as calibration
// reads them: the fusecheck scorer's components, with the figures a sidecar written by an
// older fusecheck lacks or computed differently brought up to this one's. Untrusted input
// (fuzz/fuzz_check_sidecar.cpp).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "harness/calibrate/records.h"

namespace fusecheck::calibrate {

// Components of a fusecheck-scorer JSON report held in `text`; `where` names it in errors.
// `down_numel` is the entries of one MLP down projection when known (a synthetic model's
// profile), else 0: a sidecar without `numel` per deep-read layer holds the super-weight
// figure against the rms of *all* entries, and is recomputed against the others'
// (check::super_weight_entry_gain) when `down_numel` is known. Sets "model.qk_depth" as
// this scorer computes it (add_qk_depth). InputError (one printable line) unless the text
// is a JSON object with scorer "fusecheck" and an array of components, each with a string
// name, an integer layer and a numeric value.
std::vector<StaticComponent> components_from_check_json(const std::string& text, const std::string& where,
                                                        std::int64_t down_numel);

}  // namespace fusecheck::calibrate
