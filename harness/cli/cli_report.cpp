// `fusecheck report RUN.h5 [--out DIR] [--png]`: the per-model HTML divergence report,
// rendered by scripts/report (python3 + h5py + matplotlib; see docs/report.md).
#include "harness/cli/command.h"
#include "harness/results/report_script.h"

namespace fusecheck::cli {
namespace {

struct ReportOptions {
  std::vector<std::string> runs;
  std::string out;
  bool png = false;
};

CommandRegistrar reg({"report", "Write one self-contained HTML divergence report per model of a run",
                      [](CLI::App& sub) {
                        auto o = std::make_shared<ReportOptions>();
                        sub.add_option("runs", o->runs, "run or merged results files (.h5)")->required();
                        sub.add_option("--out", o->out, "output directory (default: beside each input)");
                        sub.add_flag("--png", o->png, "also render each report to PNG (needs chromium)");
                        return [o] {
                          std::vector<std::string> args = o->runs;
                          if (!o->out.empty()) args.insert(args.end(), {"--out", o->out});
                          if (o->png) args.push_back("--png");
                          return results::run_report_script(args);
                        };
                      }});

}  // namespace
}  // namespace fusecheck::cli
