// Results files a nightly job may meet that were not written whole by fusecheck: bytes
// flipped on disk, objects missing, hostile names and control characters. compare, merge
// and report (the commands, as a user runs them) must refuse with one line and exit 2,
// or give the right answer, and never crash, print a traceback, call a damaged baseline
// clean, or write outside the folder they were given.
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>

#include "harness/core/error.h"
#include "harness/results/compare.h"
#include "harness/results/merge.h"
#include "tests/common/test_support.h"
#include "tests/results/fixture.h"

namespace fusecheck::test {
namespace {

namespace fs = std::filesystem;


std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// One run of one path over two layers: the smallest file that holds every kind of object.
FixtureSpec small_spec() {
  FixtureSpec s;
  s.n_layers = 2;
  s.paths = {"fused-cuda"};
  s.ops = {"rmsnorm_qkv", "mlp"};
  return s;
}

// What a command may do with a damaged input: refuse in one line (exit 2), or succeed.
void expect_refused_or_ok(const CommandResult& r, const std::string& what) {
  ASSERT_TRUE(r.exit_code == 0 || r.exit_code == 2) << what << ": exit " << r.exit_code << "\n" << r.out << r.err;
  EXPECT_EQ(r.err.find("Traceback"), std::string::npos) << what << "\n" << r.err;
  EXPECT_EQ(r.err.find("internal error"), std::string::npos) << what << "\n" << r.err;
  if (r.exit_code == 2) EXPECT_EQ(line_count(r.err), 1u) << what << "\n" << r.err;
}

// compare's text with the file names taken out, so runs of differently named files match.
std::string verdict_lines(const std::string& out) {
  std::stringstream in(out), kept;
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("fusecheck compare:", 0) != 0) kept << line << "\n";
  }
  return kept.str();
}

// The file with byte `offset` flipped (xor 0xff).
std::string flipped(const std::string& bytes, std::size_t offset) {
  std::string damaged = bytes;
  damaged[offset] = static_cast<char>(damaged[offset] ^ 0xff);
  return damaged;
}

void write_bytes(const fs::path& file, const std::string& bytes) {
  std::ofstream(file, std::ios::binary | std::ios::trunc) << bytes;
}

// What compare, merge and report make of a damaged copy, through the library calls the
// commands make (a crash here is a crash of the test): refused with an InputError naming
// the file, or the clean file's answer.
struct Outcome {
  bool refused = false;
  std::string message;
};

Outcome judge(const fs::path& bad, const results::ResultsFile& good, const fs::path& merged,
              const std::string& expected) {
  Outcome o;
  const auto rules = results::default_rules();
  try {
    auto damaged = results::ResultsFile::load(bad);
    EXPECT_EQ(verdict_lines(results::format_text(results::compare_files(damaged, good, rules, false))), expected);
    EXPECT_EQ(verdict_lines(results::format_text(results::compare_files(good, damaged, rules, false))), expected);
  } catch (const InputError& e) {
    o.refused = true;
    o.message = e.what();
  }
  // merge and report validate as compare does: they must agree with it.
  bool merge_refused = false;
  try {
    fs::remove(merged);
    results::merge_results({bad}, merged);
    auto m = results::ResultsFile::load(merged);
    EXPECT_EQ(verdict_lines(results::format_text(results::compare_files(m, good, rules, false))), expected);
  } catch (const InputError& e) {
    merge_refused = true;
    EXPECT_NE(std::string(e.what()).find(bad.string()), std::string::npos) << e.what();
  }
  EXPECT_EQ(merge_refused, o.refused) << o.message;
  return o;
}

// Flips one byte in every STRIDE of a small results file and runs compare (as the new file
// and as the baseline), merge and the report's validation on each copy, in process. The
// stride (FUSECHECK_FLIP_STRIDE, default 127, a prime so that flips land at every offset
// within repeated structures: about 290 flips) keeps this to seconds; 1 flips every byte
// (docs/results-format.md gives that run's figures).
TEST(ResultsDamage, FlippedByteIsRefusedOrHarmless) {
  auto dir = files_dir();
  const fs::path clean = dir / "clean.h5";
  write_fixture_run(clean, small_spec());
  const auto good = results::ResultsFile::load(clean);
  const std::string expected =
      verdict_lines(results::format_text(results::compare_files(good, good, results::default_rules(), false)));
  const std::string bytes = slurp(clean);
  const char* env = std::getenv("FUSECHECK_FLIP_STRIDE");
  const std::size_t stride = env ? static_cast<std::size_t>(std::max(1L, std::atol(env))) : 127;
  std::size_t cases = 0, refused = 0;
  for (std::size_t offset = 0; offset < bytes.size(); offset += stride) {
    write_bytes(dir / "bad.h5", flipped(bytes, offset));
    SCOPED_TRACE("byte " + std::to_string(offset));
    refused += judge(dir / "bad.h5", good, dir / "merged.h5", expected).refused;
    ++cases;
  }
  std::printf("flipped %zu of %zu bytes (stride %zu): %zu refused (exit 2), %zu harmless (same answer)\n", cases,
              bytes.size(), stride, refused, cases - refused);
  EXPECT_GT(refused, cases / 2) << "most bytes of a results file are checksummed";
}

// The commands themselves on damaged copies: exit 2 with one line (no crash, no Python
// traceback, no internal error), or exit 0 with the clean answer; report agrees with
// compare. Twelve flips spread over the file (every byte above covers the rest).
TEST(ResultsDamage, CommandsRefuseDamagedFilesInOneLine) {
  auto dir = files_dir();
  const fs::path clean = dir / "clean.h5";
  write_fixture_run(clean, small_spec());
  auto reference = run_fusecheck("compare " + quoted(clean) + " " + quoted(clean));
  ASSERT_EQ(reference.exit_code, 0) << reference.out << reference.err;
  const std::string expected = verdict_lines(reference.out);
  const std::string bytes = slurp(clean);
  std::size_t reports = 0;
  for (std::size_t k = 0; k < 12; ++k) {
    const std::size_t offset = (2 * k + 1) * bytes.size() / 24;
    const fs::path bad = dir / "bad.h5";
    write_bytes(bad, flipped(bytes, offset));
    const std::string what = "byte " + std::to_string(offset);
    auto as_new = run_fusecheck("compare " + quoted(bad) + " " + quoted(clean));
    expect_refused_or_ok(as_new, what + " compare (new)");
    if (as_new.exit_code == 0) EXPECT_EQ(verdict_lines(as_new.out), expected) << what;
    auto as_base = run_fusecheck("compare " + quoted(clean) + " " + quoted(bad));
    expect_refused_or_ok(as_base, what + " compare (baseline)");
    EXPECT_EQ(as_base.exit_code, as_new.exit_code) << what;
    fs::remove(dir / "merged.h5");
    auto merged = run_fusecheck("merge " + quoted(dir / "merged.h5") + " " + quoted(bad));
    expect_refused_or_ok(merged, what + " merge");
    EXPECT_EQ(merged.exit_code, as_new.exit_code) << what;
    // Rendering a page takes seconds and shows nothing new after the first.
    if (as_new.exit_code != 0 || reports++ == 0) {
      auto report = run_fusecheck("report " + quoted(bad) + " --out " + quoted(dir / "report"));
      expect_refused_or_ok(report, what + " report");
      EXPECT_EQ(report.exit_code, as_new.exit_code) << what;
    }
  }
}

// A copy of a valid run with one object (or attribute: "object@name") deleted; every one
// of these is something compare reads, so each must make the file incomparable.
struct MissingCase {
  const char* name;
  const char* object;
  const char* message;  // part of the error
};

void PrintTo(const MissingCase& c, std::ostream* os) { *os << c.name << " (" << c.object << ")"; }

class ResultsMissing : public ::testing::TestWithParam<MissingCase> {};

TEST_P(ResultsMissing, IsIncomparableInCompareMergeAndReport) {
  const MissingCase& c = GetParam();
  auto dir = files_dir();
  write_fixture_run(dir / "run.h5", FixtureSpec{});
  fs::copy_file(dir / "run.h5", dir / "cut.h5");
  remove_object(dir / "cut.h5", c.object);
  for (const auto& [args, what] : std::vector<std::pair<std::string, std::string>>{
           {"compare " + quoted(dir / "run.h5") + " " + quoted(dir / "cut.h5"), "compare (baseline)"},
           {"compare " + quoted(dir / "cut.h5") + " " + quoted(dir / "run.h5"), "compare (new)"},
           {"merge " + quoted(dir / "merged.h5") + " " + quoted(dir / "cut.h5"), "merge"},
           {"report " + quoted(dir / "cut.h5") + " --out " + quoted(dir / "report"), "report"}}) {
    auto r = run_fusecheck(args);
    EXPECT_EQ(r.exit_code, 2) << what << "\n" << r.out << r.err;
    EXPECT_NE(r.err.find("cut.h5"), std::string::npos) << what << ": " << r.err;
    EXPECT_NE(r.err.find(c.message), std::string::npos) << what << ": " << r.err;
    EXPECT_EQ(line_count(r.err), 1u) << what << ": " << r.err;
  }
  EXPECT_FALSE(fs::exists(dir / "merged.h5"));
  EXPECT_FALSE(fs::exists(dir / "report"));
}

INSTANTIATE_TEST_SUITE_P(
    Objects, ResultsMissing,
    ::testing::Values(
        MissingCase{"paths", "/paths", "/paths: incomparable: missing every path's metrics"},
        MissingCase{"one_path", "/paths/standard-cuda", "/paths/standard-cuda: incomparable: missing the metrics"},
        MissingCase{"mode", "/paths/fused-cuda/propagated", "/paths/fused-cuda/propagated: incomparable: missing"},
        MissingCase{"present", "/paths/fused-cuda/isolated/present", "isolated/present: incomparable: missing"},
        MissingCase{"gate", "/paths/fused-cuda/propagated/gate", "propagated/gate: incomparable: missing"},
        MissingCase{"rel_l2", "/paths/standard-cuda/isolated/rel_l2", "isolated/rel_l2: incomparable: missing"},
        MissingCase{"head", "/paths/fused-cuda/isolated/head", "isolated/head: incomparable: missing"},
        MissingCase{"head_rel_l2", "/paths/fused-cuda/isolated/head/rel_l2", "head/rel_l2: incomparable: missing"},
        MissingCase{"static", "/static", "/static: incomparable: missing"},
        MissingCase{"static_status", "/static/fusecheck@status", "/static/fusecheck: incomparable: missing"},
        MissingCase{"crosscheck_verdict", "/crosscheck/braidinfer@verdict", "incomparable: missing"},
        MissingCase{"op_median", "/timing/fused-cuda/op_median_ms", "op_median_ms: incomparable: missing"},
        MissingCase{"modes", "/@modes", "incomparable: missing string attribute 'modes'"},
        MissingCase{"taps", "/taps", "missing or empty tap list"}),
    [](const ::testing::TestParamInfo<MissingCase>& info) { return std::string(info.param.name); });

// A scenario name becomes the report's file name: whatever it holds, the page lands
// inside --out under a safe name, and nothing is written anywhere else.
struct HostileName {
  const char* name;
  std::string scenario;
  std::string file;  // expected page inside --out
};

void PrintTo(const HostileName& c, std::ostream* os) { *os << c.name << " -> " << c.file; }

class ReportName : public ::testing::TestWithParam<HostileName> {};

TEST_P(ReportName, PageStaysInsideOutUnderASafeName) {
  const HostileName& c = GetParam();
  auto dir = files_dir();
  fs::create_directories(dir / "a" / "b");
  write_fixture_run(dir / "a" / "b" / "run.h5", FixtureSpec{});
  set_string_attr(dir / "a" / "b" / "run.h5", "/", "scenario_name", c.scenario);
  auto before = fs::recursive_directory_iterator(dir);
  std::size_t files_before = std::distance(before, fs::recursive_directory_iterator());
  auto r = run_fusecheck("report " + quoted(dir / "a" / "b" / "run.h5") + " --out " + quoted(dir / "a" / "b" / "out"));
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(fs::is_regular_file(dir / "a" / "b" / "out" / c.file)) << r.out;
  std::size_t inside = std::distance(fs::directory_iterator(dir / "a" / "b" / "out"), fs::directory_iterator());
  EXPECT_EQ(inside, 1u) << "one page, no temporary files left";
  auto after = fs::recursive_directory_iterator(dir);
  EXPECT_EQ(std::distance(after, fs::recursive_directory_iterator()), static_cast<long>(files_before + 2))
      << "only out/ and its page are new";
  for (char ch : r.out) EXPECT_FALSE(static_cast<unsigned char>(ch) < 0x20 && ch != '\n') << r.out;
}

INSTANTIATE_TEST_SUITE_P(
    Names, ReportName,
    ::testing::Values(HostileName{"parent", "../../VICTIM", "_.._VICTIM.html"},
                      HostileName{"absolute", "/tmp/fusecheck-victim", "_tmp_fusecheck-victim.html"},
                      HostileName{"dotdot", "..", "run.html"},
                      HostileName{"empty", "", "run.html"},
                      HostileName{"hidden", ".bashrc", "bashrc.html"},
                      HostileName{"control", "a\x1b[2J\nb", "a__2J_b.html"},
                      HostileName{"long", std::string(5000, 'x'), std::string(100, 'x') + ".html"}),
    [](const ::testing::TestParamInfo<HostileName>& info) { return std::string(info.param.name); });

TEST(ResultsOutput, ControlCharactersFromTheFileAreEscaped) {
  auto dir = files_dir();
  write_fixture_run(dir / "base.h5", FixtureSpec{});
  fs::copy_file(dir / "base.h5", dir / "new.h5");
  // ESC, CR, LF, a lone 0xff and U+009B (the one-byte CSI of 8-bit terminals).
  const std::string hostile = "tiny\x1b[2J\r\nverdict: clean (exit 0)" "\xff" "\xc2\x9b";
  set_string_attr(dir / "base.h5", "/", "scenario_name", hostile);
  set_string_attr(dir / "new.h5", "/", "scenario_name", hostile);
  set_cell(dir / "new.h5", "/paths/fused-cuda/isolated/inf_count", 1, tap_index("act"), 3);
  for (const char* format : {"text", "markdown"}) {
    auto r = run_fusecheck("compare " + quoted(dir / "new.h5") + " " + quoted(dir / "base.h5") + " --format " +
                           format);
    EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
    EXPECT_NE(r.out.find("tiny\\x1b[2J\\x0d\\x0averdict: clean (exit 0)\\xff\\xc2\\x9b"), std::string::npos) << r.out;
    EXPECT_EQ(r.out.find('\x1b'), std::string::npos) << format;
    EXPECT_EQ(r.out.find('\r'), std::string::npos) << format;
  }
  // Refusals name the differing values, escaped, in one line.
  set_string_attr(dir / "new.h5", "/", "scenario_name", "other\x07");
  auto r = run_fusecheck("compare " + quoted(dir / "new.h5") + " " + quoted(dir / "base.h5"));
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("other\\x07"), std::string::npos) << r.err;
  EXPECT_EQ(line_count(r.err), 1u) << r.err;
  auto m = run_fusecheck("merge " + quoted(dir / "m.h5") + " " + quoted(dir / "new.h5") + " " + quoted(dir / "new.h5"));
  EXPECT_EQ(m.exit_code, 2) << m.err;
  EXPECT_NE(m.err.find("scenario 'other\\x07' is also in"), std::string::npos) << m.err;
  EXPECT_EQ(line_count(m.err), 1u) << m.err;
}

TEST(ResultsLegacy, CommittedBaselinesOfTheOldFormatStillCompareClean) {
  // Written before the checksummed format (superblock 0, variable-length strings): read
  // through the child-process probe, compared as before.
  const fs::path root = source_dir();
  for (const char* base : {"results/baselines/cpu/qwen3-tiny-prefill.h5", "results/baselines/cuda/nvidia-h100-80gb-hbm3/stories260k.h5"}) {
    auto r = run_fusecheck("compare " + quoted(root / base) + " " + quoted(root / base) + " --rules " +
                           quoted(root / "results/baselines/rules.yaml"));
    EXPECT_EQ(r.exit_code, 0) << base << r.out << r.err;
    EXPECT_NE(r.out.find("verdict: clean"), std::string::npos) << r.out;
  }
}

}  // namespace
}  // namespace fusecheck::test
