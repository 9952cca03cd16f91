// `fusecheck merge OUT IN...`: one merged results file from shard outputs
// (harness/results/merge.h).
#include <cstdio>

#include <fmt/core.h>

#include "harness/cli/command.h"
#include "harness/results/merge.h"

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
                          auto n = results::merge_results(in, o->out);
                          std::printf("%s\n", fmt::format("merged {} run(s) from {} file(s) into {}", n,
                                                          in.size(), o->out).c_str());
                          return 0;
                        };
                      }});

}  // namespace
}  // namespace fusecheck::cli
