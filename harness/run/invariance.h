// Invariance mode (docs/invariance.md): runs each path several ways that must not change
// its answer (alone or inside a batch, run again, chunked KV, prefill or decode, taps on
// or off, execution forms the path declares) and compares every tap of one sequence
// ("the needle") bitwise. Where a tap differs it reports the first layer and tap, the
// first differing row (token position) and the largest ULP distance in the tap's storage
// dtype. A check a path cannot do is "n/a" with a reason, never a pass.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "harness/core/dtype.h"
#include "harness/core/path.h"
#include "harness/core/taps.h"
#include "harness/run/scaled_ulp.h"

namespace fusecheck::run {

// The checks, in table order.
enum class InvarianceCheck { batch, run_to_run, cuda_graph, switches, kv_chunking, prefill_vs_decode, taps_on_off };
inline constexpr InvarianceCheck kInvarianceChecks[] = {
    InvarianceCheck::batch,       InvarianceCheck::run_to_run,        InvarianceCheck::cuda_graph,
    InvarianceCheck::switches,    InvarianceCheck::kv_chunking,       InvarianceCheck::prefill_vs_decode,
    InvarianceCheck::taps_on_off};
// Inline: the scenario reader (and its fuzz target) needs the names without the mode.
inline const char* invariance_check_name(InvarianceCheck c) {
  switch (c) {
    case InvarianceCheck::batch: return "batch";
    case InvarianceCheck::run_to_run: return "run_to_run";
    case InvarianceCheck::cuda_graph: return "cuda_graph";
    case InvarianceCheck::switches: return "switches";
    case InvarianceCheck::kv_chunking: return "kv_chunking";
    case InvarianceCheck::prefill_vs_decode: return "prefill_vs_decode";
    case InvarianceCheck::taps_on_off: return "taps_on_off";
  }
  return "?";
}

inline std::optional<InvarianceCheck> invariance_check_from_name(const std::string& name) {
  for (InvarianceCheck c : kInvarianceChecks) {
    if (name == invariance_check_name(c)) return c;
  }
  return std::nullopt;
}

// The scenario's `invariance:` block (docs/scenarios.md).
struct InvarianceSpec {
  std::vector<InvarianceCheck> checks{std::begin(kInvarianceChecks), std::end(kInvarianceChecks)};
  std::vector<int> batch_sizes{2, 3, 8};  // the needle's batches (each at first, middle, last)
  int runs = 3;                           // run_to_run
  std::vector<int> kv_chunks;             // first-chunk sizes of a chunked prefill (with the path's boundaries)
  int decode_steps = 2;                   // prefill_vs_decode: tokens decoded after a prefill
};

enum class InvarianceStatus { invariant, differs, not_applicable };
const char* invariance_status_name(InvarianceStatus s);  // "invariant", "differs", "n/a"

// One check of one path. Where it differs: the variant (of all it ran) whose difference
// comes first in layer order, and the largest ULP distance over all variants.
struct InvarianceOutcome {
  InvarianceCheck check = InvarianceCheck::batch;
  InvarianceStatus status = InvarianceStatus::not_applicable;
  std::string reason;            // n/a: why; differs: the variant that differs first
  int variants = 0;              // comparisons made
  int variants_differing = 0;
  int first_layer = -1;          // -1 none; n_layers = the head
  std::optional<Tap> first_tap;
  int first_row = -1;            // token position of the needle (0-based) of the first difference
  double max_ulp = 0;            // largest bit distance over every differing tap (storage dtype of the tap)
  std::string max_ulp_dtype;     // "BF16", "F32", "F64"
  // The scaled distance (scaled_ulp.h), the figure the table shows: at the first
  // differing tap (of the variant that differs first) its largest value and histogram,
  // and the largest over every differing tap of every variant.
  double first_scaled_ulp = 0;
  std::string first_scaled_ulp_dtype;
  ScaledUlpHistogram first_scaled_ulp_histogram{};
  double max_scaled_ulp = 0;
  std::int64_t sign_crossings = 0;  // differing values on opposite sides of zero, every variant
  double max_same_sign_ulp = 0;     // largest bit distance among differing values of one sign
  std::int64_t elements_differing = 0;
  std::int64_t elements_compared = 0;
};

struct PathInvariance {
  std::string label;   // slot label
  std::string device;
  std::vector<InvarianceOutcome> outcomes;  // in kInvarianceChecks order, only the checks asked
  // FNV-1a of every compared tap's bits in run_to_run's first run (empty when run_to_run
  // did not run): two processes (a kernel switch, another build) compare it to learn
  // whether they gave the same bits.
  std::string fingerprint;
};

struct InvarianceResult {
  InvarianceSpec spec;
  int n_tokens = 0;        // needle length
  std::uint64_t neighbour_seed = 0;  // the other sequences' tokens
  std::vector<PathInvariance> paths;
  int differing = 0;       // (path, check) cells that differ
};

// Makes a fresh instance of a path (the run's PathMaker bound to one slot).
using InstanceMaker = std::function<std::unique_ptr<Path>()>;

struct InvarianceInput {
  int n_layers = 0;
  std::vector<std::int32_t> needle;                 // the sequence compared
  std::vector<std::vector<std::int32_t>> neighbours;  // the other sequences (same length), at least max batch - 1
  int batch = 1;                                    // the scenario's batch (run_to_run, taps_on_off)
  std::vector<int> phase_chunks;                    // the scenario's chunking of the needle ([N] or [kv, 1, 1...])
  int compare_from = 0;                             // positions compared in that layout: [compare_from, N)
                                                    // (a decode scenario: its decode steps)
  InvarianceSpec spec;
};

// Runs every check of `in.spec` on one path. `label` names it in the result; `dtype` is
// its low-precision dtype (the first candidate for a tap's storage dtype).
PathInvariance run_invariance(const InvarianceInput& in, const std::string& label, DType dtype,
                              const InstanceMaker& make);

// Bitwise comparison of two taps (same shape): elements whose bits differ, the first
// differing row, and the largest ULP distance in the narrowest of `dtypes` both sides are
// exact in (a tap's storage dtype: bf16 activations, f32 logits; F64 when neither).
// Besides the bit distance, the scaled distance of every differing value: in ULPs of its
// row's scale, the largest |value| of that row of `a` (of `b` when `a`'s row is zeros).
struct TapDiff {
  std::int64_t differing = 0;
  int first_row = -1;
  double max_ulp = 0;
  DType dtype = DType::F64;
  double max_scaled_ulp = 0;
  ScaledUlpHistogram scaled_ulp_histogram{};
  std::int64_t sign_crossings = 0;
  double max_same_sign_ulp = 0;
};
TapDiff compare_bitwise(const TapMatrix& a, const TapMatrix& b, DType path_dtype);

}  // namespace fusecheck::run
