// Copyright 2026 The cbloss Authors.
//
// Class weights (LOSS.md section 2) against the spec's own check values and
// closed forms. The PyTorch golden cases cover the rest (golden_test.cc).

#include "core/class_weights.h"

#include <cmath>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace cbloss {
namespace {

using ::testing::HasSubstr;

std::vector<double> Weights(std::vector<int64_t> counts, WeightingScheme s,
                            double beta) {
  std::vector<double> w(counts.size());
  absl::Status st = ClassWeights(counts, s, beta, absl::MakeSpan(w));
  EXPECT_TRUE(st.ok()) << st;
  return w;
}

TEST(ClassWeights, MatchesSpecCheckValues) {
  // LOSS.md section 2: counts [2,3,1,2,2], beta 0.9999.
  const std::vector<double> expected = {0.88236332, 0.58827163, 1.76463841,
                                        0.88236332, 0.88236332};
  std::vector<double> w =
      Weights({2, 3, 1, 2, 2}, WeightingScheme::kEffectiveNumber, 0.9999);
  for (size_t j = 0; j < w.size(); ++j) EXPECT_NEAR(w[j], expected[j], 5e-9);
}

TEST(ClassWeights, BetaZeroGivesOnes) {
  for (double w :
       Weights({1, 10, 1000}, WeightingScheme::kEffectiveNumber, 0)) {
    EXPECT_DOUBLE_EQ(w, 1.0);
  }
}

TEST(ClassWeights, BetaOneIsInverseFrequency) {
  // r = 1/n: 1, 1/4 -> normalised to sum 2: 1.6, 0.4.
  std::vector<double> w =
      Weights({1, 4}, WeightingScheme::kEffectiveNumber, 1.0);
  EXPECT_DOUBLE_EQ(w[0], 1.6);
  EXPECT_DOUBLE_EQ(w[1], 0.4);
  std::vector<double> inv =
      Weights({1, 4}, WeightingScheme::kInverseFrequency, 0.5);
  EXPECT_DOUBLE_EQ(inv[0], 1.6);
  EXPECT_DOUBLE_EQ(inv[1], 0.4);
}

TEST(ClassWeights, BetaNearOneKeepsPrecisionForLargeCounts) {
  // beta = 1 - 1e-12: 1 - beta^n ~ n * 1e-12, where pow() in double loses
  // about seven digits. Reference: 80-bit long double powl.
  const double beta = 1.0 - 1e-12;
  const std::vector<int64_t> counts = {1000, 1000000};
  std::vector<double> w =
      Weights(counts, WeightingScheme::kEffectiveNumber, beta);
  long double r[2];
  for (int j = 0; j < 2; ++j) {
    r[j] =
        (1.0L - beta) / (1.0L - std::pow(static_cast<long double>(beta),
                                         static_cast<long double>(counts[j])));
  }
  for (int j = 0; j < 2; ++j) {
    const double expected = static_cast<double>(2 * r[j] / (r[0] + r[1]));
    EXPECT_NEAR(w[j], expected, 1e-10 * expected) << j;
  }
}

TEST(ClassWeights, InverseSqrtFrequency) {
  std::vector<double> w =
      Weights({1, 4}, WeightingScheme::kInverseSqrtFrequency, 0.9);
  EXPECT_DOUBLE_EQ(w[0], 2.0 * 1.0 / 1.5);
  EXPECT_DOUBLE_EQ(w[1], 2.0 * 0.5 / 1.5);
}

TEST(ClassWeights, ZeroCountGetsZeroWeightAndOthersSumToK) {
  std::vector<double> w =
      Weights({0, 5, 0, 5}, WeightingScheme::kEffectiveNumber, 0.9999);
  EXPECT_EQ(w[0], 0.0);
  EXPECT_EQ(w[2], 0.0);
  EXPECT_DOUBLE_EQ(w[1], 1.0);
  EXPECT_DOUBLE_EQ(w[3], 1.0);
}

TEST(ClassWeights, NoneIgnoresCountsIncludingZeros) {
  for (double w : Weights({0, 0, 7}, WeightingScheme::kNone, 0.9999)) {
    EXPECT_EQ(w, 1.0);
  }
}

TEST(ClassWeights, AllZeroCountsIsFailedPrecondition) {
  std::vector<double> w(3);
  absl::Status s = ClassWeights({0, 0, 0}, WeightingScheme::kEffectiveNumber,
                                0.9999, absl::MakeSpan(w));
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
}

TEST(ClassWeights, NegativeCountNamesTheIndex) {
  std::vector<double> w(3);
  absl::Status s = ClassWeights({4, 2, -1}, WeightingScheme::kEffectiveNumber,
                                0.9999, absl::MakeSpan(w));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("class_counts[2] = -1"));
}

TEST(ClassWeights, BetaOutsideUnitIntervalIsInvalid) {
  std::vector<double> w(2);
  for (double beta : {-0.1, 1.0000001, std::nan("")}) {
    absl::Status s = ClassWeights({1, 2}, WeightingScheme::kEffectiveNumber,
                                  beta, absl::MakeSpan(w));
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << beta;
    EXPECT_THAT(s.message(), HasSubstr("config.beta"));
  }
}

}  // namespace
}  // namespace cbloss
