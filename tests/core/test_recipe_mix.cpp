// Recipe mixes (harness/core/recipe_mix.h): the BASE+RECIPE@FIRST[-LAST] syntax, its
// canonical spelling and every malformed form refused with the mix named.
#include <string>

#include <gtest/gtest.h>

#include "harness/core/error.h"
#include "harness/core/recipe_mix.h"

namespace fusecheck {
namespace {

std::string error_of(const std::string& text) {
  try {
    parse_recipe_mix(text);
  } catch (const InputError& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(RecipeMix, APlainNameIsAMixWithoutOverrides) {
  const RecipeMix m = parse_recipe_mix("fp8-w8a8");
  EXPECT_FALSE(m.mixed());
  EXPECT_EQ(m.at(0), "fp8-w8a8");
  EXPECT_EQ(m.text(), "fp8-w8a8");
}

TEST(RecipeMix, OverridesNameLayerRangesAndEverythingElseIsTheBase) {
  const RecipeMix m = parse_recipe_mix("fp8-w8a8+hf-bf16@7+fused-v1@0-2");
  ASSERT_TRUE(m.mixed());
  EXPECT_EQ(m.at(0), "fused-v1");
  EXPECT_EQ(m.at(2), "fused-v1");
  EXPECT_EQ(m.at(3), "fp8-w8a8");
  EXPECT_EQ(m.at(7), "hf-bf16");
  EXPECT_EQ(m.at(8), "fp8-w8a8");
  // Canonical: overrides by first layer, a one-layer range as one number.
  EXPECT_EQ(m.text(), "fp8-w8a8+fused-v1@0-2+hf-bf16@7");
  EXPECT_EQ(parse_recipe_mix(m.text()).text(), m.text());
}

struct BadMix {
  const char* text;
  const char* message;
};

class RecipeMixRefuses : public ::testing::TestWithParam<BadMix> {};

TEST_P(RecipeMixRefuses, WithTheProblemNamed) {
  const std::string e = error_of(GetParam().text);
  EXPECT_NE(e.find(GetParam().message), std::string::npos) << GetParam().text << ": " << e;
}

INSTANTIATE_TEST_SUITE_P(
    Malformed, RecipeMixRefuses,
    ::testing::Values(BadMix{"", "is not a recipe name"}, BadMix{"+fused-v1@0", "is not a recipe name"},
                      BadMix{"fp8-w8a8+fused-v1", "names no layers"},
                      BadMix{"fp8-w8a8+@0", "is not a recipe name"},
                      BadMix{"fp8-w8a8+fused-v1@", "is not a number"},
                      BadMix{"fp8-w8a8+fused-v1@x", "is not a number"},
                      BadMix{"fp8-w8a8+fused-v1@-1", "is not a number"},
                      BadMix{"fp8-w8a8+fused-v1@2-", "is not a number"},
                      BadMix{"fp8-w8a8+fused-v1@3-1", "empty range"},
                      BadMix{"fp8-w8a8+fused-v1@99999", "is not a number in 0..9999"},
                      BadMix{"fp8-w8a8+fused-v1@0-4+hf-bf16@4", "overlap"},
                      BadMix{"fp8 w8a8", "is not a recipe name"},
                      BadMix{"fp8-w8a8+fused-v1@0-2-3", "is not a number"}));

}  // namespace
}  // namespace fusecheck
