// safetensors reader: valid files of every dtype parse into views of the right bytes,
// the optional __metadata__ is kept, and the parser never reads outside the buffer.
#include <cmath>

#include <gtest/gtest.h>

#include "harness/checkpoint/safetensors.h"
#include "harness/core/error.h"
#include "tests/checkpoint/fixtures.h"
#include "tests/common/test_support.h"

namespace fusecheck::test {
namespace {

std::vector<float> awkward_values(std::size_t n) {
  std::vector<float> v;
  for (std::size_t i = 0; i < n; ++i) v.push_back(0.375f * static_cast<float>(i) - 2.25f);  // exact in bf16/fp16
  return v;
}

class SafetensorsDtypeTest : public ::testing::TestWithParam<DType> {};

TEST_P(SafetensorsDtypeTest, ParsesShapeDtypeAndValues) {
  const DType dtype = GetParam();
  const auto file = scratch_dir() / "t.safetensors";
  const std::vector<float> values = awkward_values(15);
  write_safetensors(file, {make_tensor("w", dtype, {3, 5}, values), make_tensor("b", dtype, {5}, awkward_values(5))});
  const auto bytes = read_bytes(file);
  const SafetensorsContents c = parse_safetensors(bytes, file.string());
  ASSERT_EQ(c.tensors.size(), 2u);
  const TensorView& w = c.tensors[0].name == "w" ? c.tensors[0] : c.tensors[1];
  EXPECT_EQ(w.dtype, dtype);
  EXPECT_EQ(w.shape, (std::vector<std::int64_t>{3, 5}));
  EXPECT_EQ(w.bytes.size(), 15 * dtype_size(dtype));
  EXPECT_EQ(w.file, file.string());
  const std::vector<double> got = w.to_double();
  for (std::size_t i = 0; i < values.size(); ++i) EXPECT_EQ(got[i], values[i]) << i;
}

INSTANTIATE_TEST_SUITE_P(AllDtypes, SafetensorsDtypeTest,
                         ::testing::Values(DType::F32, DType::F16, DType::BF16, DType::F64),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

TEST(Safetensors, KeepsMetadataObject) {
  const auto image = safetensors_image(
      R"({"__metadata__":{"format":"pt","note":"x"},"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 8);
  const SafetensorsContents c = parse_safetensors(image, "m.safetensors");
  ASSERT_EQ(c.tensors.size(), 1u);
  EXPECT_EQ(c.metadata.at("format"), "pt");
  EXPECT_EQ(c.metadata.at("note"), "x");
}

TEST(Safetensors, ListsTensorsInFileOrder) {
  const auto image = safetensors_image(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]},)"
                                       R"("b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 8);
  const SafetensorsContents c = parse_safetensors(image, "m.safetensors");
  ASSERT_EQ(c.tensors.size(), 2u);
  EXPECT_EQ(c.tensors[0].name, "b");
  EXPECT_EQ(c.tensors[1].name, "a");
}

TEST(Safetensors, AcceptsScalarAndEmptyTensors) {
  const auto image = safetensors_image(R"({"s":{"dtype":"F32","shape":[],"data_offsets":[0,4]},)"
                                       R"("e":{"dtype":"F16","shape":[0,3],"data_offsets":[4,4]}})", 4);
  const SafetensorsContents c = parse_safetensors(image, "m.safetensors");
  ASSERT_EQ(c.tensors.size(), 2u);
  for (const TensorView& t : c.tensors) EXPECT_EQ(t.numel(), t.name == "s" ? 1 : 0);
}

// One malformed header each, checked for the problem the error names.
struct HeaderCase {
  const char* name;
  const char* header;
  std::size_t data_bytes;
  const char* expected;
};

class SafetensorsHeaderTest : public ::testing::TestWithParam<HeaderCase> {};

TEST_P(SafetensorsHeaderTest, RejectsWithNamedProblem) {
  const HeaderCase& c = GetParam();
  const auto image = safetensors_image(c.header, c.data_bytes);
  try {
    parse_safetensors(image, "bad.safetensors");
    FAIL() << "accepted: " << c.header;
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("bad.safetensors"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(c.expected), std::string::npos) << e.what();
  }
}

INSTANTIATE_TEST_SUITE_P(
    Malformed, SafetensorsHeaderTest,
    ::testing::Values(
        HeaderCase{"EmptyHeader", "", 0, "not valid JSON"},
        HeaderCase{"EntryNotObject", R"({"w":3})", 0, "header entry is not an object"},
        HeaderCase{"NoDtype", R"({"w":{"shape":[1],"data_offsets":[0,4]}})", 4, "no 'dtype'"},
        HeaderCase{"NoShape", R"({"w":{"dtype":"F32","data_offsets":[0,4]}})", 4, "no 'shape'"},
        HeaderCase{"NoOffsets", R"({"w":{"dtype":"F32","shape":[1]}})", 4, "no 'data_offsets'"},
        HeaderCase{"NegativeDim", R"({"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", 4, "non-negative"},
        HeaderCase{"FractionalDim", R"({"w":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}})", 4, "non-negative"},
        HeaderCase{"OverflowingShape",
                   R"({"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}})", 4, "overflows"},
        HeaderCase{"OffsetsReversed", R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}})", 4, "end before"},
        HeaderCase{"OffsetsNotPair", R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0]}})", 4, "[begin, end]"},
        HeaderCase{"HugeOffset",
                   R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[18446744073709551612,18446744073709551615]}})", 4,
                   "past the end"},
        HeaderCase{"DtypeNotString", R"({"w":{"dtype":7,"shape":[1],"data_offsets":[0,4]}})", 4, "dtype is not a string"},
        HeaderCase{"IntegerDtype", R"({"w":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}})", 8, "unsupported dtype 'I64'"},
        HeaderCase{"MetadataNotStrings", R"({"__metadata__":{"a":1}})", 0, "value of 'a' is not a string"}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(Safetensors, ErrorQuotingAHostileNameStaysOneLine) {
  const auto image = safetensors_image(R"({"evil\nname\u001b[31m":{"dtype":"Q9","shape":[1],"data_offsets":[0,1]}})", 1);
  try {
    parse_safetensors(image, "bad.safetensors");
    FAIL();
  } catch (const InputError& e) {
    const std::string msg = e.what();
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\x1b'), std::string::npos) << msg;
    EXPECT_NE(msg.find("tensor 'evil\\x0aname\\x1b[31m'"), std::string::npos) << msg;
  }
}

TEST(Safetensors, RejectsEveryTruncationOfAValidFile) {
  // Each prefix of a valid file is a truncated file: all must fail cleanly (ASan checks
  // that none reads past the prefix).
  const auto file = scratch_dir() / "t.safetensors";
  write_safetensors(file, {make_tensor("w", DType::BF16, {3, 5}, awkward_values(15))});
  const auto bytes = read_bytes(file);
  for (std::size_t n = 0; n < bytes.size(); ++n) {
    const std::vector<std::byte> prefix(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(n));
    EXPECT_THROW(parse_safetensors(prefix, "prefix.safetensors"), InputError) << "prefix of " << n << " bytes";
  }
}

}  // namespace
}  // namespace fusecheck::test
