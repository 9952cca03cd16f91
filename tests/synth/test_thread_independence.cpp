// Files do not depend on the generator's thread count, for tensors of many chunks that
// the writer asks for in several pieces (tinyllama's 65.5M-element embedding).
#include <fstream>
#include <iterator>

#include <gtest/gtest.h>

#include "harness/checkpoint/synth.h"
#include "tests/common/test_support.h"

namespace fusecheck {
namespace {

std::string slurp(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

TEST(SynthLarge, ManyChunkTensorsAreIdenticalAcrossThreadCounts) {
  const auto dir = test::scratch_dir();
  SynthOptions one, three;
  one.seed = three.seed = 1;
  one.threads = 1;
  three.threads = 3;
  one.layers = three.layers = 1;
  write_synthetic_checkpoint("tinyllama-1.1b", one, dir / "a");
  write_synthetic_checkpoint("tinyllama-1.1b", three, dir / "b");
  const std::string a = slurp(dir / "a" / "model.safetensors");
  EXPECT_GT(a.size(), std::size_t{300} << 20);
  EXPECT_TRUE(a == slurp(dir / "b" / "model.safetensors"));  // not EXPECT_EQ: 350 MB in a message
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace fusecheck
