// `fusecheck compare NEW BASELINE`: the regression gate (harness/results/compare.h).
// Exit 1 on regression, 0 when clean, 2 on bad input or runs that may not be compared
// (damaged, or missing what the comparison needs: harness/results/validate.h).
#include <cstdio>
#include <fstream>

#include "harness/cli/command.h"
#include "harness/core/error.h"
#include "harness/results/compare.h"
#include "harness/results/printable.h"

namespace fusecheck::cli {
namespace {

struct CompareOptions {
  std::string fresh, base, rules, format = "text", out;
  bool allow_mismatch = false;
  std::size_t max_rows = 60;
};

int compare_unchecked(const CompareOptions& o) {
  results::CompareRules rules = o.rules.empty() ? results::default_rules() : results::load_rules(o.rules);
  auto fresh = results::ResultsFile::load(o.fresh);
  auto base = results::ResultsFile::load(o.base);
  auto report = results::compare_files(fresh, base, rules, o.allow_mismatch);
  std::string text = o.format == "markdown" ? results::format_markdown(report, o.max_rows)
                                            : results::format_text(report, o.max_rows);
  if (!o.out.empty()) {
    std::ofstream f(o.out);
    if (!(f << text)) throw InputError(o.out, "cannot write the summary");
  }
  std::fputs(text.c_str(), stdout);
  return report.exit_code();
}

int run_compare(const CompareOptions& o) {
  try {
    return compare_unchecked(o);
  } catch (const InputError& e) {
    throw results::printable_error(e);
  }
}

CommandRegistrar reg({"compare", "Compare a run (or merged runs) with a baseline: divergence, NaN/Inf, gates, "
                                 "verdicts and noise-aware timing; exit 1 on regression",
                      [](CLI::App& sub) {
                        auto o = std::make_shared<CompareOptions>();
                        sub.add_option("new", o->fresh, "new results (.h5, one run or merged)")->required();
                        sub.add_option("baseline", o->base, "baseline results (.h5)")->required();
                        sub.add_option("--rules", o->rules, "regression rules (YAML or JSON; docs/nightly.md)");
                        sub.add_option("--format", o->format, "text or markdown")
                            ->check(CLI::IsMember({"text", "markdown"}));
                        sub.add_option("--out", o->out, "also write the summary to this file");
                        sub.add_option("--max-rows", o->max_rows, "findings listed per scenario (default 60)");
                        sub.add_flag("--allow-mismatch", o->allow_mismatch,
                                     "compare runs of different scenarios, devices or models");
                        return [o] { return run_compare(*o); };
                      }});

}  // namespace
}  // namespace fusecheck::cli
