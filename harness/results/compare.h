// `fusecheck compare`: what changed between a new run and its baseline, judged by
// CompareRules. Pairs runs by scenario (a file may be a merged one holding many),
// refuses runs of different scenarios or devices unless allowed, and walks every path,
// mode, layer and tap, the end-to-end figures, the static and cross-check verdicts and
// the timings. Text and markdown renderings for humans and for the nightly digest.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "harness/results/rules.h"
#include "harness/results/run_results.h"
#include "harness/results/timing_compare.h"

namespace fusecheck::results {

enum class Severity { regression, improvement, note };
std::string_view severity_name(Severity s);

struct Finding {
  Severity severity = Severity::note;
  std::string kind;   // divergence | nonfinite | gate | verdict | end_to_end | coverage | timing | scenario
  std::string where;  // "fused-cuda propagated L3 k_normed"
  std::string detail; // "rel_l2 0.0041 -> 0.0123 (x3.00 > x1.25)"
};

struct TimingRow {
  std::string path;
  std::string item;  // "L3 rmsnorm_qkv" or "L3 layer"
  TimingStats base, fresh;
  TimingComparison result;
};

struct RunComparison {
  std::string scenario;
  std::string device;
  std::string fresh_label, base_label;
  std::vector<std::string> identity_differences;  // non-empty only under --allow-mismatch
  std::vector<Finding> findings;
  std::vector<TimingRow> timings;
  std::size_t cells_compared = 0;  // (path, mode, layer, tap) cells present on both sides

  std::size_t count(Severity s) const;
  std::size_t count(TimingVerdict v) const;
};

struct CompareReport {
  std::string fresh_file, base_file;
  std::vector<RunComparison> runs;
  std::vector<Finding> unpaired;  // scenarios on one side only

  bool has_regression() const;
  int exit_code() const { return has_regression() ? 1 : 0; }
};

// One run against its baseline (identities already accepted).
RunComparison compare_runs(const Run& fresh, const Run& base, const CompareRules& rules);

// Every run of `fresh` against the run of `base` with the same scenario. Throws
// InputError saying what differs when a pair's identities differ (or, for two
// single-run files, when their scenarios differ) and `allow_mismatch` is false.
CompareReport compare_files(const ResultsFile& fresh, const ResultsFile& base,
                            const CompareRules& rules, bool allow_mismatch);

// Renderings. At most `max_rows` findings and timing rows are listed per run (the
// counts always cover everything); regressions are listed first.
std::string format_text(const CompareReport& report, std::size_t max_rows = 60);
std::string format_markdown(const CompareReport& report, std::size_t max_rows = 60);

}  // namespace fusecheck::results
