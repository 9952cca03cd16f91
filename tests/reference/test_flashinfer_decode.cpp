// The emulated twin of FlashInfer's decode attention (reference/flashinfer_decode.h): every
// key is read exactly once whatever the thread layout (GQA groups 1, 3, 6 and 8, head dims
// 64 and 128, KV 1, 7, 256, 257 and 1100: tails of tiles, partitions and chunks), in the
// single-request kernel's layout and the batch paged kernel's (chunks of 128 keys and the
// plan's larger ones), checked against a double softmax; exact on small-integer cases.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "harness/core/dtype.h"
#include "reference/flashinfer_decode.h"

namespace fusecheck::ref {
namespace {

struct DecodeCase {
  int head_dim, group;
  std::int64_t total, chunk;
  FlashInferDecodeKernel kernel = FlashInferDecodeKernel::single;
};
std::string case_name(const ::testing::TestParamInfo<DecodeCase>& i) {
  std::ostringstream name;
  name << "d" << i.param.head_dim << "_group" << i.param.group << "_kv" << i.param.total << "_chunk" << i.param.chunk
       << (i.param.kernel == FlashInferDecodeKernel::batch_paged ? "_batch" : "");
  return name.str();
}

class FlashInferDecodeTwin : public ::testing::TestWithParam<DecodeCase> {};

// Random bf16 values (seeded). Tolerance: the chunk outputs are rounded to bf16 (2^-8 of
// each chunk's |o_c|, weighted by its mass share: at most 2^-8 of the value mass) and
// stored once more as bf16 in the merge (the same again); FP32 sums of head_dim and
// `total` terms on top, far below that.
TEST_P(FlashInferDecodeTwin, MatchesDoubleSoftmaxWithinItsRoundings) {
  const auto [hd_, group, total, chunk, kernel] = GetParam();
  const int hd = hd_;  // a plain variable: clang refuses structured bindings in lambda captures
  std::mt19937_64 rng(71);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  auto bf16 = [](float x) { return round_to_bf16(x); };
  std::vector<float> q(static_cast<std::size_t>(hd)), k(static_cast<std::size_t>(total * hd)), v(k.size());
  for (float& x : q) x = bf16(2.0f * u(rng));
  for (float& x : k) x = bf16(u(rng));
  for (float& x : v) x = bf16(u(rng));
  const auto row = [&](const std::vector<float>& m) {
    return [&m, hd](std::int64_t j) { return m.data() + j * hd; };
  };
  const float scale = static_cast<float>(1.0 / std::sqrt(double(hd)));
  std::vector<float> out(static_cast<std::size_t>(hd), std::nanf(""));
  flashinfer_decode_head(q.data(), row(k), row(v), total, hd, group, scale, chunk, bf16, out.data(), kernel);

  std::vector<double> p(static_cast<std::size_t>(total));
  double mx = -INFINITY, z = 0;
  for (std::int64_t j = 0; j < total; ++j) {
    double dot = 0;
    for (int c = 0; c < hd; ++c) dot += double(q[c]) * k[j * hd + c];
    p[j] = dot * scale;
    mx = std::max(mx, p[j]);
  }
  for (double& x : p) z += (x = std::exp(x - mx));
  const bool split = chunk > 0 && total > (kernel == FlashInferDecodeKernel::batch_paged ? chunk : 256);
  for (int c = 0; c < hd; ++c) {
    double o = 0, mass = 0;
    for (std::int64_t j = 0; j < total; ++j) o += p[j] / z * v[j * hd + c], mass += p[j] / z * std::fabs(v[j * hd + c]);
    // 1e-5 of the mass: FP32 dots of head_dim terms and sums of `total` (<= 2500) terms.
    const double tol = mass * ((split ? 2 * 0x1p-8 : 0.0) + 1e-5);
    EXPECT_NEAR(out[c], o, tol) << "column " << c;
  }
}

INSTANTIATE_TEST_SUITE_P(Layouts, FlashInferDecodeTwin,
                         ::testing::Values(DecodeCase{64, 3, 1, 256}, DecodeCase{64, 3, 7, 256},
                                           DecodeCase{128, 1, 256, 256}, DecodeCase{128, 6, 257, 256},
                                           DecodeCase{64, 8, 1100, 256}, DecodeCase{128, 2, 1100, 256},
                                           DecodeCase{64, 1, 1100, 0}, DecodeCase{128, 8, 2500, 128}),
                         case_name);

// The batch paged kernel: group 1 in tiles of 4, group 8 at 128 threads; KV 128 and 129
// either side of the plan's smallest chunk, 1025 over 9 chunks, 2500 in the plan's larger
// chunks (64 pages) of a big batch.
constexpr auto kBatch = FlashInferDecodeKernel::batch_paged;
INSTANTIATE_TEST_SUITE_P(BatchLayouts, FlashInferDecodeTwin,
                         ::testing::Values(DecodeCase{64, 1, 7, 128, kBatch}, DecodeCase{128, 1, 128, 128, kBatch},
                                           DecodeCase{128, 4, 129, 128, kBatch}, DecodeCase{64, 8, 1025, 128, kBatch},
                                           DecodeCase{128, 3, 1025, 128, kBatch}, DecodeCase{128, 8, 2500, 1024, kBatch}),
                         case_name);

// Equal scores: every key weighs 1/total, so the output is the mean of small-integer values
// (exact in FP32: sums of integers below 2^24, one division by a power of two).
TEST(FlashInferDecodeTwinExact, EqualScoresGiveTheExactMeanOfTheValues) {
  const int hd = 64, group = 3;
  const std::int64_t total = 128;
  std::vector<float> q(hd, 1.0f), k(static_cast<std::size_t>(total * hd), 0.5f), v(k.size());
  for (std::int64_t j = 0; j < total; ++j) {
    for (int c = 0; c < hd; ++c) v[j * hd + c] = static_cast<float>((j * 7 + c) % 11 - 5);
  }
  const auto row = [&](const std::vector<float>& m) { return [&m](std::int64_t j) { return m.data() + j * hd; }; };
  std::vector<float> out(hd);
  flashinfer_decode_head(q.data(), row(k), row(v), total, hd, group, 0.125f, 256, [](float x) { return x; },
                         out.data());
  for (int c = 0; c < hd; ++c) {
    double sum = 0;
    for (std::int64_t j = 0; j < total; ++j) sum += v[j * hd + c];
    EXPECT_EQ(out[c], static_cast<float>(sum / total)) << "column " << c;
  }
}

}  // namespace
}  // namespace fusecheck::ref
