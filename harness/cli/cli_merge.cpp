// `fusecheck merge OUT IN...`: one merged results file from shard outputs
// (harness/results/merge.h).
#include <cstdio>

#include <fmt/core.h>

#include "harness/cli/command.h"
#include "harness/core/error.h"
#include "harness/results/merge.h"
#include "harness/results/printable.h"

namespace fusecheck::cli {
namespace {

struct MergeOptions {
  std::string out;
  std::vector<std::string> inputs;
};

CommandRegistrar reg({"merge", "Merge run results (for example nightly shards) into one file that compare and "
                               "report accept",
                      [](CLI::App& sub) {
                        auto o = std::make_shared<MergeOptions>();
                        sub.add_option("out", o->out, "merged file to write")->required();
                        sub.add_option("inputs", o->inputs, "run or merged files")->required();
                        return [o] {
                          std::vector<std::filesystem::path> in(o->inputs.begin(), o->inputs.end());
                          std::size_t n = 0;
                          try {
                            n = results::merge_results(in, o->out);
                          } catch (const InputError& e) {
                            throw results::printable_error(e);
                          }
                          std::printf("%s\n", fmt::format("merged {} run(s) from {} file(s) into {}", n,
                                                          in.size(), results::printable(o->out)).c_str());
                          return 0;
                        };
                      }});

}  // namespace
}  // namespace fusecheck::cli
