// What a run prints: a progress bar on stderr while it works, and the summary table on
// stdout at the end (per layer: local and propagated error, amplification, times,
// static figures), verdict last.
#pragma once

#include <chrono>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "harness/run/crosscheck.h"
#include "harness/run/driver.h"

namespace fusecheck::run {

// Redraws one line on a terminal; on anything else stays silent until done(), which
// prints one line with the elapsed time (logs stay readable).
class ProgressBar {
 public:
  ProgressBar(std::FILE* out, std::string what);
  void update(int done, int total);
  void done();

 private:
  std::FILE* out_;
  std::string what_;
  bool tty_;
  int last_permille_ = -1;
  std::chrono::steady_clock::time_point start_;
};

struct SummaryInput {
  std::string title;  // first line: scenario, model, phase, device
  int n_layers = 0;
  const RunResult* result = nullptr;
  std::vector<StaticFigures> statics;
  std::vector<CrossCheck> crosschecks;
  std::vector<std::string> notes;  // substitutions, fallback
  std::string results_file;
  int greedy_steps = 0;
  std::string prompt;                // text prompt, when the scenario gave one
  std::string reference_greedy_text; // greedy tokens as text (empty without a tokenizer)
  std::map<std::string, std::string> greedy_text;  // by path label
};

// The table and verdict, as text (printed to stdout by the command).
std::string format_summary(const SummaryInput& in);

}  // namespace fusecheck::run
