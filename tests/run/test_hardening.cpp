// `fusecheck run` on hostile input, through the real binary: every malformed scenario of
// tests/run/malformed_scenarios.txt exits 2 with one line naming the file (and line);
// names from a scenario never lead a write outside the results folder nor reach the
// terminal raw; sizes past the model's context or the machine's memory are refused
// before anything is allocated; SIGINT/SIGTERM leave no temp files, and stale ones of
// dead processes are reclaimed; `generate` refuses steps past the context.
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>

#include "harness/checkpoint/profiles.h"
#include "harness/core/error.h"
#include "harness/run/run_limits.h"
#include "harness/run/scenario.h"
#include "tests/common/test_support.h"

extern char** environ;

namespace fusecheck::run {
namespace {

namespace fs = std::filesystem;

const char* kModelLine = "model: {synth: {profile: qwen3-tiny, layers: 1}}";

std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

void write_file(const fs::path& p, const std::string& text) { std::ofstream(p, std::ios::binary) << text; }

std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

// Runs `fusecheck ARGS` in `dir` (so that the default results/runs and the synth cache are
// there); `args` is already shell-quoted.
test::CommandResult run_in(const fs::path& dir, const std::string& args) {
  const auto out = dir / "stdout.txt", err = dir / "stderr.txt";
  const std::string cmd = "cd " + shell_quote(dir.string()) + " && " + shell_quote(test::fusecheck_binary().string()) +
                          " " + args + " >" + shell_quote(out.string()) + " 2>" + shell_quote(err.string());
  const int status = std::system(cmd.c_str());
  test::CommandResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = slurp(out);
  r.err = slurp(err);
  return r;
}

// Exit 2 and exactly one line on stderr, a user error (not "internal error").
void expect_one_line_input_error(const test::CommandResult& r) {
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_EQ(r.err.find("internal error"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("fusecheck run: error: "), std::string::npos) << r.err;
}

// ---- Malformed scenarios ----

struct MalformedCase {
  std::string name, line, fragment, text;
};

std::vector<MalformedCase> malformed_cases() {
  std::vector<MalformedCase> cases;
  std::ifstream in(test::source_dir() / "tests" / "run" / "malformed_scenarios.txt");
  std::string row;
  while (std::getline(in, row)) {
    if (row.rfind("=== ", 0) == 0) {
      std::vector<std::string> parts;
      std::stringstream ss(row.substr(4));
      for (std::string part; std::getline(ss, part, '|');) {
        part.erase(0, part.find_first_not_of(' '));
        part.erase(part.find_last_not_of(' ') + 1);
        parts.push_back(part);
      }
      cases.push_back({parts.at(0), parts.at(1), parts.at(2), ""});
    } else if (!cases.empty()) {
      cases.back().text += (row == "M" ? std::string(kModelLine) : row) + "\n";
    }
  }
  return cases;
}

class MalformedScenario : public ::testing::TestWithParam<MalformedCase> {};

TEST_P(MalformedScenario, ExitsTwoWithOneLineNamingTheFileAndLine) {
  const MalformedCase& c = GetParam();
  const auto dir = test::scratch_dir();
  const auto file = dir / (c.name + ".yaml");
  write_file(file, c.text);
  const auto r = run_in(dir, "run --device cpu --no-progress --out out.h5 " + shell_quote(file.string()));
  expect_one_line_input_error(r);
  const std::string where = c.line == "-" ? file.string() + ":" : file.string() + ":" + c.line + ":";
  EXPECT_NE(r.err.find(where), std::string::npos) << "expected '" << where << "' in: " << r.err;
  EXPECT_NE(r.err.find(c.fragment), std::string::npos) << "expected '" << c.fragment << "' in: " << r.err;
  EXPECT_FALSE(fs::exists(dir / "out.h5"));
}

INSTANTIATE_TEST_SUITE_P(Corpus, MalformedScenario, ::testing::ValuesIn(malformed_cases()),
                         [](const ::testing::TestParamInfo<MalformedCase>& info) {
                           std::string n = info.param.name;
                           std::replace(n.begin(), n.end(), '-', '_');
                           return n;
                         });

TEST(MalformedScenarioCorpus, HoldsAtLeastSeventyFiveCases) { EXPECT_GE(malformed_cases().size(), 75u); }

// ---- Hostile names and paths ----

std::string tiny_scenario(const std::string& name_line) {
  return name_line + "\n" + kModelLine + "\nphase: {prefill: 2}\npaths: [ref32-cpu]\ntiming: false\n";
}

// Every regular file under `root`.
std::vector<fs::path> files_under(const fs::path& root) {
  std::vector<fs::path> out;
  for (const auto& e : fs::recursive_directory_iterator(root)) {
    if (e.is_regular_file()) out.push_back(e.path());
  }
  return out;
}

TEST(HostileName, TraversalInTheNameStaysInTheResultsFolder) {
  const auto dir = test::scratch_dir() / "a" / "b" / "c" / "d";
  fs::create_directories(dir);
  write_file(dir / "s.yaml", tiny_scenario("name: \"x/../../../../ESCAPED-RUN\""));
  const auto r = run_in(dir, "run --device cpu --no-progress s.yaml");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::vector<fs::path> h5;
  for (const auto& f : files_under(test::scratch_dir())) {
    if (f.extension() == ".h5") h5.push_back(f);
  }
  ASSERT_EQ(h5.size(), 1u);
  EXPECT_EQ(h5[0].parent_path(), dir / "results" / "runs");
  EXPECT_NE(h5[0].filename().string().find("ESCAPED-RUN"), std::string::npos);
  EXPECT_EQ(h5[0].filename().string().find(".."), std::string::npos);
}

TEST(HostileName, AbsoluteNameStaysInTheResultsFolder) {
  const auto dir = test::scratch_dir();
  const auto target = dir / "outside" / "ABSOLUTE";
  write_file(dir / "s.yaml", tiny_scenario("name: \"" + target.string() + "\""));
  const auto r = run_in(dir, "run --device cpu --no-progress s.yaml");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_FALSE(fs::exists(dir / "outside"));
  std::size_t in_runs = 0;
  for (const auto& e : fs::directory_iterator(dir / "results" / "runs")) in_runs += e.path().extension() == ".h5";
  EXPECT_EQ(in_runs, 1u);
}

TEST(HostileName, MegabyteNameIsBoundedInOutputAndFileName) {
  const auto dir = test::scratch_dir();
  write_file(dir / "s.yaml", tiny_scenario("name: " + std::string(1'000'000, 'n')));
  const auto r = run_in(dir, "run --device cpu s.yaml");  // with the progress line
  ASSERT_EQ(r.exit_code, 0) << r.err.substr(0, 300);
  std::stringstream lines(r.err + r.out);
  for (std::string line; std::getline(lines, line);) EXPECT_LT(line.size(), 1000u);
  for (const auto& e : fs::directory_iterator(dir / "results" / "runs")) {
    if (e.path().extension() == ".h5") EXPECT_LE(e.path().filename().string().size(), 128u);
  }
}

TEST(HostileName, ControlCharactersAreEscapedNotEchoed) {
  const auto dir = test::scratch_dir();
  write_file(dir / "s.yaml", tiny_scenario("name: \"a\\e[31mRED\\rb\""));
  const auto r = run_in(dir, "run --device cpu --out out.h5 s.yaml");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string all = r.out + r.err;
  EXPECT_EQ(all.find('\x1b'), std::string::npos);
  EXPECT_NE(all.find("a\\x1b[31mRED\\x0db"), std::string::npos) << all;
  // And in an error message.
  write_file(dir / "bad.yaml", std::string(kModelLine) + "\nphase: {prefill: 2}\npaths: [\"evil\\e]0;title\\a\"]\n");
  const auto e = run_in(dir, "run --device cpu --out out.h5 bad.yaml");
  expect_one_line_input_error(e);
  EXPECT_EQ(e.err.find('\x1b'), std::string::npos);
  EXPECT_NE(e.err.find("evil\\x1b]0;title\\x07"), std::string::npos) << e.err;
}

TEST(HostileName, EmptyOutIsAnErrorNotTheDefault) {
  const auto dir = test::scratch_dir();
  write_file(dir / "s.yaml", tiny_scenario("name: s"));
  const auto r = run_in(dir, "run --device cpu --out '' s.yaml");
  expect_one_line_input_error(r);
  EXPECT_NE(r.err.find("--out"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(dir / "results"));
}

TEST(HostileName, UnwritableOutIsFoundBeforeTheRunStarts) {
  const auto dir = test::scratch_dir();
  write_file(dir / "s.yaml", tiny_scenario("name: s"));
  write_file(dir / "plain-file", "x");
  // A folder that is a file: not writable whoever runs the test (root included).
  const auto r = run_in(dir, "run --device cpu --out plain-file/out.h5 s.yaml");
  expect_one_line_input_error(r);
  EXPECT_NE(r.err.find("plain-file"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(dir / "results" / "runs" / ".synth-cache"));  // no model was written
  const auto folder = run_in(dir, "run --device cpu --out . s.yaml");
  expect_one_line_input_error(folder);
  EXPECT_NE(folder.err.find("is a folder"), std::string::npos) << folder.err;
}

TEST(HostileName, HundredThousandCharacterPathsGiveOneShortLine) {
  const auto dir = test::scratch_dir();
  const std::string long_name(100'000, 'a');
  for (const std::string& args : {"run --device cpu " + long_name,
                                  "run --device cpu --out " + long_name + " s.yaml"}) {
    write_file(dir / "s.yaml", tiny_scenario("name: s"));
    const auto r = run_in(dir, args);
    expect_one_line_input_error(r);
    EXPECT_LT(r.err.size(), 1000u);
    EXPECT_NE(r.err.find("File name too long"), std::string::npos) << r.err.substr(0, 300);
  }
  write_file(dir / "m.yaml", "model: {path: " + long_name + "}\nphase: {prefill: 2}\npaths: [ref32-cpu]\n");
  const auto r = run_in(dir, "run --device cpu --out out.h5 m.yaml");
  expect_one_line_input_error(r);
  EXPECT_NE(r.err.find("m.yaml:1: model.path"), std::string::npos) << r.err.substr(0, 300);
}

TEST(HostileName, DevicesAndFoldersAreNotScenarios) {
  const auto dir = test::scratch_dir();
  for (const std::string& target : std::vector<std::string>{"/dev/zero", "/dev/null", dir.string()}) {
    const auto r = run_in(dir, "run --device cpu " + shell_quote(target));
    expect_one_line_input_error(r);
    EXPECT_NE(r.err.find(target), std::string::npos) << r.err;
  }
}

// Found by fuzz/fuzz_scenario.cpp: yaml-cpp 0.7's LoadAll never ended on these 20 bytes.
TEST(HostileName, InputThatHungYamlCppEndsAsAnError) {
  const auto dir = test::scratch_dir();
  write_file(dir / "hang.yaml", std::string("\x2c\x2d\x20\x20\xb7\xff\xff\xff\xff\xff\xff\x07\x3a\x3b\x20\x65\x3b\x20\x78\x0a", 20));
  const auto r = run_in(dir, "run --device cpu --out out.h5 hang.yaml");  // a hang fails by the test timeout
  expect_one_line_input_error(r);
  EXPECT_NE(r.err.find("hang.yaml"), std::string::npos) << r.err;
}

TEST(HostileName, OversizedScenarioFileIsRefusedUnread) {
  const auto dir = test::scratch_dir();
  write_file(dir / "big.yaml", tiny_scenario("name: s") + "description: " + std::string(9u << 20, 'x') + "\n");
  const auto r = run_in(dir, "run --device cpu big.yaml");
  expect_one_line_input_error(r);
  EXPECT_NE(r.err.find("big.yaml: is"), std::string::npos) << r.err;
}

// ---- Sizes ----

struct SizeCase {
  std::string name, yaml, where, fragment;
};

class SizeRefused : public ::testing::TestWithParam<SizeCase> {};

// Refused before any model is written or any large allocation: in milliseconds, with the
// limit and the figure.
TEST_P(SizeRefused, BeforeAnythingIsAllocated) {
  const SizeCase& c = GetParam();
  const auto dir = test::scratch_dir();
  write_file(dir / "s.yaml", c.yaml);
  const auto t0 = std::chrono::steady_clock::now();
  const auto r = run_in(dir, "run --device cpu --no-progress --out out.h5 s.yaml");
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  expect_one_line_input_error(r);
  EXPECT_NE(r.err.find("error: s.yaml" + c.where), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(c.fragment), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(dir / "results" / "runs" / ".synth-cache"));
  EXPECT_LT(seconds, 20.0);  // a loaded 2-core CI machine; the refusal itself takes milliseconds
}

INSTANTIATE_TEST_SUITE_P(
    Limits, SizeRefused,
    ::testing::Values(
        SizeCase{"prefill_past_context",
                 "model: {synth: {profile: llama-tiny, layers: 1}}\nphase: {prefill: 5000}\npaths: [ref32-cpu]\n",
                 ":2: phase.prefill", "past the context length 4096"},
        SizeCase{"decode_past_context",
                 "model: {synth: {profile: llama-tiny, layers: 1}}\nphase: {decode: {kv_len: 4000, steps: 97}}\n"
                 "paths: [ref32-cpu]\n",
                 ":2: phase.decode.kv_len", "4097 tokens per sequence"},
        SizeCase{"greedy_past_context",
                 "model: {synth: {profile: llama-tiny, layers: 1}}\nphase: {prefill: 4000}\npaths: [ref32-cpu]\n"
                 "end_to_end: {greedy_steps: 97}\n",
                 ":4: end_to_end.greedy_steps", "make 4097, past the context length 4096"},
        SizeCase{"batch_billion",
                 "model: {synth: {profile: qwen3-tiny, layers: 1}}\nbatch: 1000000000\nphase: {prefill: 4}\n"
                 "paths: [ref32-cpu]\n",
                 ":2: batch", "of host memory;"},
        SizeCase{"prefill_billion",
                 "model: {synth: {profile: qwen3-tiny, layers: 1}}\nphase: {prefill: 1000000000}\npaths: [ref32-cpu]\n",
                 ":2: phase.prefill", "past the context length 40960"},
        SizeCase{"kv_len_billion",
                 "model: {synth: {profile: qwen3-tiny, layers: 1}}\nphase: {decode: {kv_len: 1000000000, steps: 1000000000}}\n"
                 "paths: [ref32-cpu]\n",
                 ":2: phase.decode.kv_len", "2000000000 tokens per sequence"},
        SizeCase{"greedy_billion",
                 "model: {synth: {profile: qwen3-tiny, layers: 1}}\nphase: {prefill: 4}\npaths: [ref32-cpu]\n"
                 "end_to_end: {greedy_steps: 1000000000}\n",
                 ":4: end_to_end.greedy_steps", "past the context length 40960"},
        SizeCase{"batch_times_long_prefill",
                 "model: {synth: {profile: qwen3-8b, layers: 2}}\nbatch: 64\nphase: {prefill: 40000}\n"
                 "paths: [fused-cuda, standard-cuda]\n",
                 ":2: batch", "of host memory;"}),
    [](const ::testing::TestParamInfo<SizeCase>& info) { return info.param.name; });

TEST(GenerateSizes, StepsPastTheContextAreRefusedBeforeDecoding) {
  const auto dir = test::scratch_dir();
  ASSERT_EQ(run_in(dir, "synth qwen3-tiny model --layers 1").exit_code, 0);
  const auto r = run_in(dir, "generate model --prompt-ids 1,2 --steps 40959");  // qwen3-tiny: 40960
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_NE(r.err.find("--steps: 2 prompt tokens + 40959 steps are past the model's context length 40960"),
            std::string::npos) << r.err;
}

// In process: the limits are exact at the boundary, and the memory refusal names both
// the estimate and the limit.
Scenario sized(int batch, int prefill, int greedy) {
  return parse_scenario("model: {synth: {profile: llama-tiny}}\nbatch: " + std::to_string(batch) +
                            "\nphase: {prefill: " + std::to_string(prefill) + "}\npaths: [ref32-cpu]\n" +
                            "end_to_end: {greedy_steps: " + std::to_string(greedy) + "}\n",
                        "sizes.yaml");
}

TEST(RunLimits, ContextLengthIsInclusive) {
  const ModelSpec spec = profile_shape(synth_profile("llama-tiny"), 1);
  ASSERT_EQ(spec.max_position, 4096);
  EXPECT_NO_THROW(check_run_size(sized(1, 4096, 0), spec, "llama-tiny", "cpu", false, {}));
  EXPECT_THROW(check_run_size(sized(1, 4097, 0), spec, "llama-tiny", "cpu", false, {}), InputError);
  EXPECT_NO_THROW(check_run_size(sized(1, 4090, 6), spec, "llama-tiny", "cpu", false, {}));
  EXPECT_THROW(check_run_size(sized(1, 4090, 7), spec, "llama-tiny", "cpu", false, {}), InputError);
}

TEST(RunLimits, MemoryRefusalNamesEstimateAndLimit) {
  const ModelSpec spec = profile_shape(synth_profile("llama-tiny"), 3);
  const Scenario sc = sized(8, 512, 0);
  const MemoryEstimate need = estimate_run_memory(sc, spec, "cpu", false);
  EXPECT_EQ(need.instances, 3);  // reference, isolated, propagated
  // Estimate: three ref32 instances of 3 layers, 8 x 512 rows; KV alone is 3 x 3 layers x
  // 4096 rows x 32 kv wide x 2 x 4 bytes = 9 MiB, taps of 4096 rows x 1264 wide doubles ~40 MiB each.
  EXPECT_GT(need.host_bytes, 100u << 20);
  EXPECT_LT(need.host_bytes, 1000u << 20);
  MemoryLimits enough{need.host_bytes, "test", 0, ""};
  EXPECT_NO_THROW(check_run_size(sc, spec, "llama-tiny", "cpu", false, enough));
  MemoryLimits short_by_one{need.host_bytes - 1, "test limit", 0, ""};
  try {
    check_run_size(sc, spec, "llama-tiny", "cpu", false, short_by_one);
    ADD_FAILURE() << "no refusal";
  } catch (const InputError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("sizes.yaml:2: batch"), std::string::npos) << what;
    EXPECT_NE(what.find(format_bytes(need.host_bytes) + " of host memory"), std::string::npos) << what;
    EXPECT_NE(what.find(format_bytes(need.host_bytes - 1) + " is available (test limit)"), std::string::npos) << what;
  }
  // Linear in the batch: every sequence adds the same (one head's attention scores do not grow).
  const double b4 = estimate_run_memory(sized(4, 512, 0), spec, "cpu", false).host_bytes;
  const double b16 = estimate_run_memory(sized(16, 512, 0), spec, "cpu", false).host_bytes;
  EXPECT_NEAR(b16 - need.host_bytes, 2 * (need.host_bytes - b4), 2.0);
  EXPECT_GT(need.host_bytes - b4, 0);
}

// ---- Interruptions ----

// The binary started in `dir` with `args` (argv, no shell); its pid.
pid_t spawn_in(const fs::path& dir, const std::vector<std::string>& args) {
  std::string cmd = "cd " + shell_quote(dir.string()) + " && exec " + shell_quote(test::fusecheck_binary().string());
  for (const auto& a : args) cmd += " " + shell_quote(a);
  cmd += " >" + shell_quote((dir / "stdout.txt").string()) + " 2>" + shell_quote((dir / "stderr.txt").string());
  const char* argv[] = {"/bin/sh", "-c", cmd.c_str(), nullptr};
  pid_t pid = 0;
  if (posix_spawn(&pid, "/bin/sh", nullptr, nullptr, const_cast<char* const*>(argv), environ) != 0) return -1;
  return pid;
}

// Polls (every 0.2 ms, up to a minute) until `ready()`; false when the child ended first.
template <class Ready>
bool wait_until(pid_t pid, Ready ready) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (std::chrono::steady_clock::now() < deadline) {
    if (ready()) return true;
    int status = 0;
    if (waitpid(pid, &status, WNOHANG) == pid) return false;
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  return false;
}

int wait_for_exit(pid_t pid) {
  int status = 0;
  waitpid(pid, &status, 0);
  return status;
}

std::vector<fs::path> temps_in(const fs::path& dir) {
  std::vector<fs::path> out;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    if (it->path().filename().string().find(".tmp-") != std::string::npos) out.push_back(it->path());
  }
  return out;
}

TEST(Interruption, SigintDuringSynthRemovesThePartialModel) {
  const auto dir = test::scratch_dir();
  // Qwen3-0.6B with one layer: a 330 MB checkpoint (the embedding alone is 311 MB).
  write_file(dir / "s.yaml", "model: {synth: {profile: qwen3-0.6b, layers: 1}}\nphase: {prefill: 2}\npaths: [ref32-cpu]\n");
  const pid_t pid = spawn_in(dir, {"run", "--device", "cpu", "--no-progress", "--out", "out.h5", "s.yaml"});
  ASSERT_GT(pid, 0);
  const auto cache = dir / "results" / "runs" / ".synth-cache";
  const bool writing = wait_until(pid, [&] {
    for (const auto& t : temps_in(cache)) {
      std::error_code ec;
      for (fs::directory_iterator it(t, ec), end; !ec && it != end; it.increment(ec)) {
        if (it->path().extension() == ".safetensors" && fs::file_size(it->path(), ec) > 0) return true;
      }
    }
    return false;
  });
  ASSERT_TRUE(writing) << "the run ended before it wrote the model: " << slurp(dir / "stderr.txt");
  ASSERT_EQ(kill(pid, SIGINT), 0);
  const int status = wait_for_exit(pid);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGINT) << status << " " << slurp(dir / "stderr.txt");
  EXPECT_TRUE(fs::is_empty(cache)) << temps_in(cache).size() << " left";
  EXPECT_EQ(slurp(dir / "stderr.txt"), "");  // no error the interruption caused
}

TEST(Interruption, SigtermDuringTheResultsWriteRemovesTheTempFile) {
  const auto dir = test::scratch_dir();
  // Every cell fails (rel_l2 0) and --dump-failing stores its tensors: a write of ~9 MB
  // that lasts long enough to be caught.
  write_file(dir / "s.yaml", "model: {synth: {profile: qwen3-tiny, layers: 2}}\nbatch: 2\nphase: {prefill: 64}\n"
                             "paths: [fused-cuda]\ngates: {rel_l2: 0}\nforce_fused: true\ntiming: false\n");
  const pid_t pid = spawn_in(dir, {"run", "--device", "cpu", "--no-progress", "--dump-failing", "--out", "out.h5", "s.yaml"});
  ASSERT_GT(pid, 0);
  const auto temp = dir / ("out.h5.tmp-" + std::to_string(pid));
  // The write itself (the empty probe that checks the folder is writable comes first).
  ASSERT_TRUE(wait_until(pid, [&] {
    std::error_code ec;
    return fs::file_size(temp, ec) > 0 && !ec;
  })) << slurp(dir / "stderr.txt");
  ASSERT_EQ(kill(pid, SIGTERM), 0);
  const int status = wait_for_exit(pid);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM) << status << " " << slurp(dir / "stderr.txt");
  EXPECT_FALSE(fs::exists(temp));
  EXPECT_FALSE(fs::exists(dir / "out.h5"));  // caught mid-write, not after the rename
  EXPECT_TRUE(temps_in(dir).empty());
}

TEST(Interruption, StaleTempsOfDeadProcessesAreReclaimedLiveOnesKept) {
  const auto dir = test::scratch_dir();
  const auto cache = dir / "results" / "runs" / ".synth-cache";
  fs::create_directories(cache);
  // No process has a pid above pid_max (at most 2^22); this test's own pid is alive.
  const std::string dead = "2147483000", alive = std::to_string(getpid());
  fs::create_directories(cache / ("qwen3-tiny-0123456789abcdef.tmp-" + dead));
  write_file(cache / ("qwen3-tiny-0123456789abcdef.tmp-" + dead) / "model.safetensors", "partial");
  fs::create_directories(cache / ("qwen3-tiny-fedcba9876543210.tmp-" + alive));
  write_file(dir / ("out.h5.tmp-" + dead), "partial");
  write_file(dir / ("older.h5.tmp-" + dead), "partial");
  write_file(dir / ("notes.txt.tmp-" + dead), "not ours");  // not a results file name
  write_file(dir / "s.yaml", tiny_scenario("name: s"));
  const auto r = run_in(dir, "run --device cpu --no-progress --out out.h5 s.yaml");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_FALSE(fs::exists(cache / ("qwen3-tiny-0123456789abcdef.tmp-" + dead)));
  EXPECT_TRUE(fs::exists(cache / ("qwen3-tiny-fedcba9876543210.tmp-" + alive)));
  EXPECT_FALSE(fs::exists(dir / ("out.h5.tmp-" + dead)));
  EXPECT_FALSE(fs::exists(dir / ("older.h5.tmp-" + dead)));
  EXPECT_TRUE(fs::exists(dir / ("notes.txt.tmp-" + dead)));
  EXPECT_TRUE(fs::exists(dir / "out.h5"));
}

}  // namespace
}  // namespace fusecheck::run
