// `fusecheck report RUN.h5 [--out DIR] [--png]`: the per-model HTML divergence report,
// rendered by scripts/report (python3 + h5py + matplotlib; see docs/report.md). Every
// input is read and validated here first, by the reader and validator compare and merge
// use (harness/results/validate.h), so the script only ever opens files that passed:
// a damaged file is one line and exit 2, never a Python traceback or a crash in h5py.
#include "harness/cli/command.h"
#include "harness/core/error.h"
#include "harness/results/printable.h"
#include "harness/results/report_script.h"
#include "harness/results/validate.h"

namespace fusecheck::cli {
namespace {

struct ReportOptions {
  std::vector<std::string> runs;
  std::string out;
  bool png = false;
};

void validate_inputs(const std::vector<std::string>& runs) {
  try {
    for (const auto& file : runs) results::validate_file(results::ResultsFile::load(file));
  } catch (const InputError& e) {
    throw results::printable_error(e);
  }
}

CommandRegistrar reg({"report", "Write one self-contained HTML divergence report per model of a run",
                      [](CLI::App& sub) {
                        auto o = std::make_shared<ReportOptions>();
                        sub.add_option("runs", o->runs, "run or merged results files (.h5)")->required();
                        sub.add_option("--out", o->out, "output directory (default: beside each input)");
                        sub.add_flag("--png", o->png, "also render each report to PNG (needs chromium)");
                        return [o] {
                          validate_inputs(o->runs);
                          std::vector<std::string> args = o->runs;
                          if (!o->out.empty()) args.insert(args.end(), {"--out", o->out});
                          if (o->png) args.push_back("--png");
                          return results::run_report_script(args);
                        };
                      }});

}  // namespace
}  // namespace fusecheck::cli
