// Copyright 2026 The cbloss Authors.
//
// One test per validation rule of LOSS.md section 7: the exact status code and
// the field and first bad index in the message.

#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "core/loss.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/core/engine_runner.h"

namespace cbloss {
namespace {

using ::cbloss::testing::EngineCase;
using ::cbloss::testing::RunEngine;
using ::testing::HasSubstr;

// A valid 3 x 4 labels-mode batch to break one rule at a time.
EngineCase ValidCase() {
  EngineCase c;
  c.counts = {5, 3, 2, 1};
  c.rows = 3;
  c.cols = 4;
  c.logits = {0.1f, 0.2f, 0.3f, 0.4f, 1, 2, 3, 4, -1, -2, -3, -4};
  c.labels = {0, 1, 3};
  return c;
}

EngineCase ValidTargetsCase() {
  EngineCase c = ValidCase();
  c.labels.clear();
  c.targets = {1, 0, 0, 0, 0, 1, 1, 0, 0.5f, 0, 0, 0.25f};
  c.params.loss_type = LossType::kSigmoid;
  return c;
}

void ExpectInvalid(const EngineCase& c, absl::string_view needle) {
  const absl::Status s = RunEngine(c).status;
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_THAT(s.message(), HasSubstr(needle));
}

TEST(Validation, ValidCasesPass) {
  EXPECT_TRUE(RunEngine(ValidCase()).status.ok());
  EXPECT_TRUE(RunEngine(ValidTargetsCase()).status.ok());
}

TEST(Validation, EmptyShape) {
  EngineCase c = ValidCase();
  c.rows = 0;
  ExpectInvalid(c, "logits.shape = [0, 4]");
}

TEST(Validation, LogitsLengthMismatch) {
  EngineCase c = ValidCase();
  c.logits.pop_back();
  ExpectInvalid(c, "logits has 11 entries, expected 12");
}

TEST(Validation, NaNLogitNamesRowAndColumn) {
  EngineCase c = ValidCase();
  c.logits[2 * 4 + 3] = std::nanf("");
  c.logits[2 * 4 + 1] = std::nanf("");
  ExpectInvalid(c, "logits[2][1] is NaN");
}

// The finite-logits scan is vectorised: a bad value anywhere (inside a
// vector block, in the tail, first or last element) is found, and the first
// of two is the one named.
TEST(Validation, NonFiniteLogitFoundAtEveryPositionOfALargerBatch) {
  constexpr int64_t kRows = 37, kCols = 29;  // not a multiple of any width
  for (int64_t k : {int64_t{0}, int64_t{5}, int64_t{31}, int64_t{64},
                    int64_t{500}, kRows * kCols - 2, kRows * kCols - 1}) {
    EngineCase c;
    c.counts.assign(kCols, 3);
    c.rows = kRows;
    c.cols = kCols;
    c.logits.assign(kRows * kCols, 0.5f);
    c.labels.assign(kRows, 1);
    c.logits[k] = -std::numeric_limits<float>::infinity();
    if (k + 40 < kRows * kCols) c.logits[k + 40] = std::nanf("");
    ExpectInvalid(
        c, absl::StrCat("logits[", k / kCols, "][", k % kCols, "] is -inf"));
  }
}

// The same for 16-bit logits, scanned in their wire bytes: the largest
// finite values pass; -inf and NaN are found in any block (1024 values) and
// named by their decoded value.
TEST(Validation, NonFiniteHalfLogitFoundAtEveryPosition) {
  constexpr int64_t kRows = 50, kCols = 45;  // 2250 values: three blocks
  struct Bits {
    DType dtype;
    uint16_t largest, minus_inf, nan;
  };
  for (const Bits& b : {Bits{DType::kBFloat16, 0x7f7f, 0xff80, 0x7fc0},
                        Bits{DType::kFloat16, 0x7bff, 0xfc00, 0x7e00}}) {
    EngineCase c;
    c.counts.assign(kCols, 3);
    c.rows = kRows;
    c.cols = kCols;
    c.labels.assign(kRows, 1);
    c.half_logits_dtype = b.dtype;
    c.half_logits.assign(kRows * kCols, b.largest);
    EXPECT_TRUE(RunEngine(c).status.ok()) << RunEngine(c).status;
    for (int64_t k : {int64_t{0}, int64_t{5}, int64_t{1023}, int64_t{1024},
                      int64_t{2047}, int64_t{2048}, kRows * kCols - 1}) {
      EngineCase bad = c;
      bad.half_logits[k] = b.minus_inf;
      if (k + 1 < kRows * kCols) bad.half_logits[k + 1] = b.nan;
      ExpectInvalid(bad, absl::StrCat("logits[", k / kCols, "][", k % kCols,
                                      "] is -inf"));
      bad.half_logits[k] = b.nan;
      ExpectInvalid(
          bad, absl::StrCat("logits[", k / kCols, "][", k % kCols, "] is NaN"));
    }
  }
}

TEST(Validation, InfiniteLogit) {
  EngineCase c = ValidCase();
  c.logits[1 * 4 + 2] = -std::numeric_limits<float>::infinity();
  ExpectInvalid(c, "logits[1][2] is -inf");
}

TEST(Validation, LabelOutOfRange) {
  EngineCase c = ValidCase();
  c.labels[1] = 9;
  c.labels[2] = 7;
  ExpectInvalid(c, "labels[1] = 9 is outside [0, 4)");
}

TEST(Validation, NegativeLabelThatIsNotIgnoreIndex) {
  EngineCase c = ValidCase();
  c.labels[0] = -1;
  ExpectInvalid(c, "labels[0] = -1 is outside [0, 4)");
}

TEST(Validation, IgnoreIndexLabelIsAccepted) {
  EngineCase c = ValidCase();
  c.labels[0] = -100;
  c.params.ignore_index = -100;
  EXPECT_TRUE(RunEngine(c).status.ok());
  c.labels[0] = 77;
  c.params.ignore_index = 77;
  EXPECT_TRUE(RunEngine(c).status.ok());
}

TEST(Validation, LabelsLengthMismatch) {
  EngineCase c = ValidCase();
  c.labels.push_back(0);
  ExpectInvalid(c, "labels has 4 entries, expected 3");
}

TEST(Validation, BothOrNeitherTarget) {
  EngineCase both = ValidTargetsCase();
  both.labels = {0, 1, 2};
  ExpectInvalid(both, "both labels and targets");
  EngineCase neither = ValidCase();
  neither.labels.clear();
  ExpectInvalid(neither, "neither labels nor targets");
}

TEST(Validation, TargetOutsideUnitInterval) {
  EngineCase c = ValidTargetsCase();
  c.targets[1 * 4 + 3] = 1.5f;
  ExpectInvalid(c, "targets[1][3] = 1.5 is outside [0, 1]");
  c.targets[1 * 4 + 3] = std::nanf("");
  ExpectInvalid(c, "targets[1][3]");
  c.targets[1 * 4 + 3] = -0.25f;
  ExpectInvalid(c, "targets[1][3] = -0.25");
}

TEST(Validation, TargetsLengthMismatch) {
  EngineCase c = ValidTargetsCase();
  c.targets.resize(5);
  ExpectInvalid(c, "targets has 5 entries, expected 12");
}

TEST(Validation, TargetsWithSoftmaxLossesAreInvalid) {
  EngineCase c = ValidTargetsCase();
  c.params.loss_type = LossType::kSoftmax;
  ExpectInvalid(c, "targets are not allowed with loss type softmax");
  c.params.loss_type = LossType::kSoftmaxBce;
  ExpectInvalid(c, "targets are not allowed with loss type softmax_bce");
}

TEST(Validation, WeightedMeanNeedsLabels) {
  EngineCase c = ValidTargetsCase();
  c.params.reduction = Reduction::kWeightedMean;
  ExpectInvalid(c, "weighted_mean needs labels");
}

TEST(Validation, NegativeSampleWeight) {
  EngineCase c = ValidCase();
  c.sample_weights = {1, -0.5f, -1};
  ExpectInvalid(c, "sample_weights[1] = -0.5 is negative");
}

TEST(Validation, NonFiniteSampleWeight) {
  EngineCase c = ValidCase();
  c.sample_weights = {1, 1, std::numeric_limits<float>::infinity()};
  ExpectInvalid(c, "sample_weights[2] is inf");
}

TEST(Validation, SampleWeightsLengthMismatch) {
  EngineCase c = ValidCase();
  c.sample_weights = {1, 1};
  ExpectInvalid(c, "sample_weights has 2 entries, expected 3");
}

TEST(Validation, UpstreamOnlyWithReductionNone) {
  EngineCase c = ValidCase();
  c.upstream = {1, 2, 3};
  ExpectInvalid(c, "upstream is only allowed with reduction none");
  c.params.reduction = Reduction::kNone;
  EXPECT_TRUE(RunEngine(c).status.ok());
  c.upstream = {1, std::nanf(""), 3};
  ExpectInvalid(c, "upstream[1] is NaN");
  c.upstream = {1, 2};
  ExpectInvalid(c, "upstream has 2 entries, expected 3");
}

TEST(Validation, BetaOutsideUnitInterval) {
  EngineCase c = ValidCase();
  c.params.beta = 1.5;
  ExpectInvalid(c, "config.beta = 1.5 is outside [0, 1]");
  c.params.beta = -0.01;
  ExpectInvalid(c, "config.beta = -0.01 is outside [0, 1]");
}

TEST(Validation, NegativeOrNonFiniteGamma) {
  EngineCase c = ValidCase();
  c.params.loss_type = LossType::kFocal;
  c.params.gamma = -1;
  ExpectInvalid(c, "config.gamma = -1");
  c.params.gamma = std::numeric_limits<double>::infinity();
  ExpectInvalid(c, "config.gamma = inf");
}

TEST(Validation, NegativeCountNamesIndex) {
  EngineCase c = ValidCase();
  c.counts = {5, -3, 2, -1};
  ExpectInvalid(c, "class_counts[1] = -3 is negative");
}

TEST(Validation, AllZeroCountsIsFailedPrecondition) {
  EngineCase c = ValidCase();
  c.counts = {0, 0, 0, 0};
  EXPECT_EQ(RunEngine(c).status.code(), absl::StatusCode::kFailedPrecondition);
  c.params.weighting = WeightingScheme::kNone;  // counts unused: fine
  EXPECT_TRUE(RunEngine(c).status.ok());
}

}  // namespace
}  // namespace cbloss

namespace cbloss {
namespace {

TEST(Validation, Section9ParametersOutOfRange) {
  EngineCase c = ValidCase();
  c.params.loss_type = LossType::kLogitAdjusted;
  c.params.tau = -0.5;
  ExpectInvalid(c, "config.tau = -0.5");
  c.params = LossParams();
  c.params.loss_type = LossType::kLdam;
  c.params.max_margin = 0;
  ExpectInvalid(c, "config.max_margin = 0");
  c.params.max_margin = 0.5;
  c.params.scale = -1;
  ExpectInvalid(c, "config.scale = -1");
  // Bounded above (core/loss_types.h kMaxScale): found by the request fuzzer,
  // scale 1e40 overflowed the float32 gradient.
  c.params.scale = 1e7;
  ExpectInvalid(c, "config.scale = 1e+07 must be in (0, 1e+06]");
  c.params.scale = 30;
  c.params.max_margin = 9e307;  // fuzzer: scale * (z - Delta) overflowed
  ExpectInvalid(c, "config.max_margin = 9e+307 must be in (0, 1e+06]");
  c.params.max_margin = 0.5;
  c.params.tau = 1e300;
  ExpectInvalid(c, "config.tau = 1e+300 must be in [0, 1e+06]");
}

TEST(Validation, TargetsWithSection9LossesAreInvalid) {
  for (LossType t : {LossType::kBalancedSoftmax, LossType::kLogitAdjusted,
                     LossType::kLdam, LossType::kSoftmaxFocal}) {
    EngineCase c = ValidTargetsCase();
    c.params.loss_type = t;
    ExpectInvalid(c, absl::StrCat("targets are not allowed with loss type ",
                                  LossTypeName(t)));
  }
}

}  // namespace
}  // namespace cbloss
