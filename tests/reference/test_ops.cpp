// Hand-computed cases for each op of the CPU reference (reference/ops.h), with inputs
// chosen so that the results are exact in binary floating point.
#include <cmath>
#include <numbers>

#include <gtest/gtest.h>

#include "reference/ops.h"

namespace fusecheck::ref {
namespace {

NoRounding<double> kExact;
const NormPoints kPts{RoundPoint::attn_norm_sumsq, RoundPoint::attn_norm_normalized,
                      RoundPoint::attn_norm};

Mat<double> mat(Index rows, Index cols, std::initializer_list<double> v) {
  Mat<double> m(rows, cols);
  std::copy(v.begin(), v.end(), m.data());
  return m;
}
Vec<double> vec(std::initializer_list<double> v) {
  Vec<double> x(static_cast<Index>(v.size()));
  std::copy(v.begin(), v.end(), x.data());
  return x;
}

TEST(RmsNorm, NormalizesEachRowThenMultipliesByTheWeight) {
  // Mean squares 1, 4 and 16: rms 1, 2, 4 (eps 0), so every result is exact.
  const Mat<double> x = mat(3, 4, {1, -1, 1, 1, 2, -2, 2, 2, 0, 0, 0, -8});
  const Vec<double> w = vec({1, 2, 3, 4});
  const Mat<double> y = rms_norm(x, w, 0.0, 4, kExact, kPts);
  EXPECT_EQ(y, mat(3, 4, {1, -2, 3, 4, 1, -2, 3, 4, 0, 0, 0, -8}));
}

TEST(RmsNorm, AddsEpsInsideTheSquareRoot) {
  // mean(x^2) = 1, eps = 3: 1/sqrt(1 + 3) = 1/2 (eps outside would give 1/(1 + 3) = 1/4).
  const Mat<double> y = rms_norm(mat(1, 4, {1, -1, 1, 1}), vec({2, 2, 2, 2}), 3.0, 4, kExact, kPts);
  EXPECT_EQ(y, mat(1, 4, {1, -1, 1, 1}));
}

TEST(RmsNorm, NormalizesEachHeadSeparatelyWhenGrouped) {
  // Qwen3 q_norm: two heads of 2 with rms 1 and 4, one shared weight of head_dim 2.
  const Mat<double> y = rms_norm(mat(1, 4, {1, -1, 4, 4}), vec({3, 5}), 0.0, 2, kExact, kPts);
  EXPECT_EQ(y, mat(1, 4, {3, -5, 3, 5}));
}

RopeTable<double> quarter_turn(Index pairs) {
  return {Mat<double>::Zero(1, pairs), Mat<double>::Ones(1, pairs)};
}

TEST(Rope, NeoxStyleRotatesPairsHalfASplitApart) {
  // cos 0, sin 1: (x_i, x_{i+d/2}) -> (-x_{i+d/2}, x_i), as rotate_half gives.
  Mat<double> x = mat(1, 8, {1, 2, 3, 4, 5, 6, 7, 8});  // 2 heads of head_dim 4
  apply_rope(x, 4, RopeStyle::NeoxHalfSplit, quarter_turn(2), 1, kExact, RoundPoint::q_rope);
  EXPECT_EQ(x, mat(1, 8, {-3, -4, 1, 2, -7, -8, 5, 6}));
}

TEST(Rope, InterleavedStyleRotatesAdjacentPairs) {
  Mat<double> x = mat(1, 8, {1, 2, 3, 4, 5, 6, 7, 8});
  apply_rope(x, 4, RopeStyle::Interleaved, quarter_turn(2), 1, kExact, RoundPoint::q_rope);
  EXPECT_EQ(x, mat(1, 8, {-2, 1, -4, 3, -6, 5, -8, 7}));
}

TEST(Rope, PositionZeroIsTheIdentity) {
  ModelSpec spec;
  spec.head_dim = 4;
  spec.rope_theta = 10000;
  Mat<double> x = mat(1, 4, {1, 2, 3, 4});
  apply_rope(x, 4, RopeStyle::NeoxHalfSplit, rope_table<double>(spec, 0, 1), 1, kExact, RoundPoint::q_rope);
  EXPECT_EQ(x, mat(1, 4, {1, 2, 3, 4}));
}

TEST(Rope, TableRowsFollowTheirPositionAcrossOffsets) {
  // Decoding at position 3 must use the same angles as row 3 of a prefill table.
  ModelSpec spec;
  spec.head_dim = 8;
  spec.rope_theta = 10000;
  const auto all = rope_table<double>(spec, 0, 5);
  const auto tail = rope_table<double>(spec, 3, 2);
  EXPECT_EQ(tail.cos, all.cos.bottomRows(2));
  EXPECT_EQ(tail.sin, all.sin.bottomRows(2));
  EXPECT_DOUBLE_EQ(all.cos(2, 1), std::cos(2 * 0.1));  // theta^(-2/8) = 0.1
}

TEST(Rope, InverseFrequenciesArePowersOfTheta) {
  ModelSpec spec;
  spec.head_dim = 8;
  spec.rope_theta = 10000;
  const auto inv = rope_inv_freq(spec);
  ASSERT_EQ(inv.size(), 4u);
  EXPECT_DOUBLE_EQ(inv[0], 1.0);
  EXPECT_DOUBLE_EQ(inv[1], 0.1);
  EXPECT_DOUBLE_EQ(inv[2], 0.01);
  EXPECT_DOUBLE_EQ(inv[3], 0.001);
}

TEST(Rope, LinearScalingDividesEveryFrequency) {
  ModelSpec spec;
  spec.head_dim = 8;
  spec.rope_theta = 10000;
  spec.rope_scaling.type = "linear";
  spec.rope_scaling.factor = 4;
  EXPECT_DOUBLE_EQ(rope_inv_freq(spec)[1], 0.025);
}

TEST(Rope, Llama3ScalingKeepsHighDividesLowAndBlendsTheBand) {
  // Llama 3.1 settings; wavelengths 2 pi / f: high band < 8192/4, low band > 8192.
  ModelSpec spec;
  spec.head_dim = 128;
  spec.rope_theta = 500000;
  spec.rope_scaling = {"llama3", 8.0, 1.0, 4.0, 8192};
  ModelSpec plain = spec;
  plain.rope_scaling = {};
  const auto inv = rope_inv_freq(spec);
  const auto base = rope_inv_freq(plain);
  int high = 0, low = 0, medium = 0;
  for (std::size_t i = 0; i < inv.size(); ++i) {
    const double wavelen = 2 * std::numbers::pi / base[i];
    if (wavelen < 2048) {
      EXPECT_EQ(inv[i], base[i]);
      ++high;
    } else if (wavelen > 8192) {
      EXPECT_DOUBLE_EQ(inv[i], base[i] / 8);
      ++low;
    } else {
      const double smooth = (8192 / wavelen - 1) / 3;
      EXPECT_DOUBLE_EQ(inv[i], (1 - smooth) * base[i] / 8 + smooth * base[i]);
      ++medium;
    }
  }
  EXPECT_GT(high, 0);
  EXPECT_GT(low, 0);
  EXPECT_GT(medium, 0);
}

TEST(Attention, IsCausalAndAveragesEqualScores) {
  // One head, head_dim 2, scale 1. Token 0 sees only key 0; token 1 scores keys 0 and 1
  // equally (weights 1/2 each); token 2 scores key 2 far below (exp underflows to 0).
  const Mat<double> q = mat(3, 2, {1, 0, 1, 0, 1, 0});
  const Mat<double> k = mat(3, 2, {3, 1, 3, 5, -997, 7});
  const Mat<double> v = mat(3, 2, {2, 4, 6, 8, 100, 100});
  Mat<double> out(3, 2);
  causal_gqa_attention<double>(q, k, v, 3, 1, 1, 2, 1.0, kExact, out.middleRows(0, 3));
  EXPECT_EQ(out, mat(3, 2, {2, 4, 4, 6, 4, 6}));
}

TEST(Attention, DecodeRowSeesEveryCachedKey) {
  // One new token over a cache of 2: weights 1/2, 1/2 (the new row is the last).
  const Mat<double> q = mat(1, 2, {0, 1});
  const Mat<double> k = mat(2, 2, {5, 2, -3, 2});
  const Mat<double> v = mat(2, 2, {2, 4, 6, 8});
  Mat<double> out(1, 2);
  causal_gqa_attention<double>(q, k, v, 2, 1, 1, 2, 1.0, kExact, out.middleRows(0, 1));
  EXPECT_EQ(out, mat(1, 2, {4, 6}));
}

TEST(Attention, GroupedQueryHeadsShareTheirKvHead) {
  // 4 query heads over 2 kv heads: heads 0,1 read kv head 0 and heads 2,3 kv head 1.
  const Mat<double> q = mat(1, 4, {1, 2, 3, 4});  // head_dim 1
  const Mat<double> k = mat(1, 2, {1, 1});
  const Mat<double> v = mat(1, 2, {10, 20});
  Mat<double> out(1, 4);
  causal_gqa_attention<double>(q, k, v, 1, 4, 2, 1, 1.0, kExact, out.middleRows(0, 1));
  EXPECT_EQ(out, mat(1, 4, {10, 10, 20, 20}));
}

TEST(Attention, ScalesScoresBeforeSoftmax) {
  // Scores 2 and 0 scaled by 1/2 give weights e/(e+1) and 1/(e+1).
  const Mat<double> q = mat(1, 1, {1});
  const Mat<double> k = mat(2, 1, {2, 0});
  const Mat<double> v = mat(2, 1, {1, 0});
  Mat<double> out(1, 1);
  causal_gqa_attention<double>(q, k, v, 2, 1, 1, 1, 0.5, kExact, out.middleRows(0, 1));
  EXPECT_DOUBLE_EQ(out(0, 0), std::exp(1.0) / (std::exp(1.0) + 1));
}

// The flashinfer recipe's split-KV decode (Recipe::decode_partial_chunk, docs/recipes.md):
// equal keys give equal scores, so chunk c's output is the mean of its values; each mean is
// rounded to bf16 and the merge weighs them by their key counts (128, 128 and 44 of 300:
// the batch paged decode's chunk of 8 pages). FP32 (the twin's scalar) and head_dim 8, the
// smallest FlashInfer layout (one lane per head).
TEST(Attention, SplitDecodeRoundsEachChunkMeanThenMergesByMass) {
  const Recipe& fi = find_recipe("flashinfer");
  ASSERT_EQ(fi.decode_partial_chunk, 128);
  ASSERT_TRUE(fi.decode_batch_paged);
  const Index total = 300, hd = 8, chunk = 128;
  NoRounding<float> exact;
  Mat<float> q = Mat<float>::Constant(1, hd, 0.75f), k = Mat<float>::Constant(total, hd, 0.5f), v(total, hd);
  for (Index j = 0; j < total; ++j) v.row(j).setConstant((j % 7 == 0 ? 1.0f : 0.0f) + 0.01f * (j % 3));
  double mean[3] = {0, 0, 0}, rounded[3];
  for (Index j = 0; j < total; ++j) mean[j / chunk] += v(j, 0);
  for (int c = 0; c < 3; ++c) {
    mean[c] /= c < 2 ? double(chunk) : double(total - 2 * chunk);
    rounded[c] = fi.round(static_cast<float>(mean[c]));
  }
  ASSERT_GT(std::fabs(rounded[0] - mean[0]), 1e-4);  // the chunk rounding matters here, far above FP32 error
  Mat<float> out(1, hd);
  causal_gqa_attention<float>(q, k, v, total, 1, 1, static_cast<int>(hd), 1.0f, exact, out.middleRows(0, 1),
                              fi.decode_partial_chunk, &fi);
  // FP32 sums over 128 keys and the merge: within 1e-6 of the exact merge of the rounded means.
  const double merged = (128 * rounded[0] + 128 * rounded[1] + 44 * rounded[2]) / 300;
  for (Index c = 0; c < hd; ++c) EXPECT_NEAR(out(0, c), merged, 1e-6) << c;
  // Unsplit (no recipe, or kv within one chunk): the plain mean.
  Mat<float> plain(1, hd);
  causal_gqa_attention<float>(q, k, v, total, 1, 1, static_cast<int>(hd), 1.0f, exact, plain.middleRows(0, 1));
  EXPECT_NEAR(plain(0, 0), (128 * mean[0] + 128 * mean[1] + 44 * mean[2]) / 300, 1e-6);
  Mat<float> short_kv(1, hd);
  causal_gqa_attention<float>(q, k, v, chunk, 1, 1, static_cast<int>(hd), 1.0f, exact, short_kv.middleRows(0, 1),
                              fi.decode_partial_chunk, &fi);
  EXPECT_NEAR(short_kv(0, 0), mean[0], 1e-6);
}

// The flashinfer recipe's prefill P (Recipe::prefill_rounds_unnormalized_p): exp(s - max)
// rounded to bf16, read by both P.V and the row sum; a single query row (decode) is not.
TEST(Attention, PrefillRoundsUnnormalizedProbabilitiesForNumeratorAndSum) {
  const Recipe& fi = find_recipe("flashinfer");
  ASSERT_TRUE(fi.prefill_rounds_unnormalized_p);
  const Mat<double> q = mat(2, 1, {1, 1});
  const Mat<double> k = mat(2, 1, {1, 0});
  const Mat<double> v = mat(2, 1, {3, -2});
  const double r = fi.round(static_cast<float>(std::exp(-1.0)));  // the second key's weight
  ASSERT_NE(r, std::exp(-1.0));
  Mat<double> out(2, 1);
  causal_gqa_attention<double>(q, k, v, 2, 1, 1, 1, 1.0, kExact, out.middleRows(0, 2), 256, &fi);
  EXPECT_DOUBLE_EQ(out(0, 0), 3.0);  // sees only the first key
  EXPECT_NEAR(out(1, 0), (3.0 - 2.0 * r) / (1.0 + r), 1e-12);
  Mat<double> decode(1, 1);
  causal_gqa_attention<double>(q.middleRows(1, 1), k, v, 2, 1, 1, 1, 1.0, kExact, decode.middleRows(0, 1), 256, &fi);
  EXPECT_NEAR(decode(0, 0), (3.0 - 2.0 * std::exp(-1.0)) / (1.0 + std::exp(-1.0)), 1e-12);
}

TEST(Silu, IsXTimesSigmoidOfX) {
  EXPECT_EQ(silu(0.0), 0.0);
  EXPECT_DOUBLE_EQ(silu(2.0), 2.0 / (1.0 + std::exp(-2.0)));
  EXPECT_DOUBLE_EQ(silu(-3.0), -3.0 / (1.0 + std::exp(3.0)));
  EXPECT_EQ(silu(-1000.0), -0.0);  // no NaN far out: exp overflows to Inf, x / Inf = -0
  EXPECT_EQ(silu(1000.0f), 1000.0f);
}

}  // namespace
}  // namespace fusecheck::ref
