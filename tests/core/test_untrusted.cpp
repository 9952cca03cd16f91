// Untrusted text: printable() escapes control characters and bounds length keeping both
// ends; file_name_component() never yields a separator, "..", a hidden name or an
// over-long one.
#include <gtest/gtest.h>

#include "harness/core/untrusted.h"

namespace fusecheck {
namespace {

TEST(Printable, EscapesControlCharactersAndDel) {
  EXPECT_EQ(printable("a\x1b[31mb\nc\rd\x7f"), "a\\x1b[31mb\\x0ac\\x0dd\\x7f");
  EXPECT_EQ(printable("plain text: ok/../é"), "plain text: ok/../é");
}

TEST(Printable, BoundsLengthKeepingBothEnds) {
  const std::string text = "HEAD" + std::string(10'000, 'x') + "TAIL";
  const std::string shown = printable(text, 90);
  EXPECT_LT(shown.size(), 130u);
  EXPECT_EQ(shown.rfind("HEAD", 0), 0u);
  EXPECT_EQ(shown.substr(shown.size() - 4), "TAIL");
  EXPECT_NE(shown.find("(10008 characters)"), std::string::npos) << shown;
  EXPECT_EQ(printable(std::string(90, 'y'), 90), std::string(90, 'y'));  // at the bound: whole
}

struct NameCase {
  const char* input;
  const char* expected;
};

class FileNameComponent : public ::testing::TestWithParam<NameCase> {};

TEST_P(FileNameComponent, IsOneSafeComponent) {
  const std::string out = file_name_component(GetParam().input, "fallback");
  EXPECT_EQ(out, GetParam().expected);
  EXPECT_EQ(out.find('/'), std::string::npos);
  EXPECT_EQ(out.find(".."), std::string::npos);
  EXPECT_NE(out.front(), '.');
}

INSTANTIATE_TEST_SUITE_P(
    Names, FileNameComponent,
    ::testing::Values(NameCase{"nightly-qwen3-tiny-prefill", "nightly-qwen3-tiny-prefill"},
                      NameCase{"x/../../../../ESCAPED-RUN", "x_.__.__.__.__ESCAPED-RUN"},
                      NameCase{"/etc/passwd", "_etc_passwd"}, NameCase{"..", "fallback"},
                      NameCase{".hidden", "_hidden"}, NameCase{"a..b", "a._b"},
                      NameCase{"a\x1b[0m b", "a__0m_b"}, NameCase{"", "fallback"},
                      NameCase{"///", "fallback"}, NameCase{"v1.2+rc", "v1.2+rc"}));

TEST(FileNameComponentLength, IsBounded) {
  EXPECT_EQ(file_name_component(std::string(1'000'000, 'n'), "f"), std::string(kMaxFileStem, 'n'));
}

}  // namespace
}  // namespace fusecheck
