// Copyright 2026 The cbloss Authors.
//
// The analytic gradient against central finite differences of the engine's
// own scalar loss (Richardson-extrapolated, O(h^4)), for every loss type,
// reduction and mode; and finiteness at extreme logits (LOSS.md section 7).

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "core/loss.h"
#include "gtest/gtest.h"
#include "tests/core/engine_runner.h"

namespace cbloss {
namespace {

using ::cbloss::testing::EngineCase;
using ::cbloss::testing::EngineRun;
using ::cbloss::testing::RunEngine;

struct GradCase {
  LossType type;
  Reduction reduction;
  bool targets;
  bool focal_alpha = false;  // LOSS.md section 10, SIGMOID and FOCAL
};

std::string Name(const ::testing::TestParamInfo<GradCase>& info) {
  return std::string(LossTypeName(info.param.type)) + "_" +
         std::string(ReductionName(info.param.reduction)) +
         (info.param.targets ? "_targets" : "_labels") +
         (info.param.focal_alpha ? "_alpha" : "");
}

class FiniteDifference : public ::testing::TestWithParam<GradCase> {};

EngineCase MakeCase(const GradCase& g) {
  EngineCase c;
  c.params.loss_type = g.type;
  c.params.reduction = g.reduction;
  c.params.gamma = 1.5;
  c.counts = {30, 7, 0, 2, 11};
  if (NeedsPositiveCounts(g.type)) c.counts[2] = 1;  // section 9: n_j >= 1
  c.params.tau = 0.75;
  c.params.max_margin = 0.4;
  c.params.scale = 4.0;
  c.rows = 6;
  c.cols = 5;
  std::mt19937 rng(11);
  // Logits on a 1/64 grid so z +- h (h a power of two) is exact in float32.
  std::uniform_int_distribution<int> grid(-192, 192);
  std::uniform_real_distribution<float> unit(0.0f, 1.0f);
  for (int k = 0; k < 30; ++k) c.logits.push_back(grid(rng) / 64.0f);
  if (g.targets) {
    for (int k = 0; k < 30; ++k)
      c.targets.push_back(k % 3 == 0 ? 1.0f : unit(rng) * 0.5f);
  } else {
    c.labels = {0, 1, 3, 4, -100, 0};
  }
  if (g.focal_alpha) c.params.focal_alpha = 0.25;
  if (IsDetectionLoss(g.type)) {  // LOSS.md section 10
    c.params.weighting = WeightingScheme::kNone;
    c.labels[3] = 5;  // background (label C)
    // SEESAW's compensation factor is a constant for the gradient (as the
    // reference detaches it), so differences of the loss see it only with
    // q = 0; the golden suite checks q > 0 against PyTorch.
    c.params.seesaw_q = 0.0;
    c.params.eql_lambda = 0.1;  // f = [.6, .14, 0, .04, .22]: T = [0,0,1,1,0]
    c.eqlv2_positive = {40.0, 3.0, 0.0, 0.5, 9.0};
    c.eqlv2_negative = {20.0, 9.0, 4.0, 6.0, 10.0};
    c.eqlv2_updates = 3;
    c.params.eqlv2_gamma = 3.0;
  }
  c.sample_weights = {1.0f, 0.5f, 2.0f, 0.0f, 1.0f, 0.75f};
  if (g.reduction == Reduction::kNone)
    c.upstream = {0.5f, -1.0f, 2.0f, 1.0f, 3.0f, 0.25f};
  return c;
}

double LossAt(EngineCase c, int k, float z) {
  c.logits[k] = z;
  const EngineRun run = RunEngine(c);
  EXPECT_TRUE(run.status.ok()) << run.status;
  return run.result.loss;
}

TEST_P(FiniteDifference, AnalyticGradientMatches) {
  const EngineCase c = MakeCase(GetParam());
  const EngineRun run = RunEngine(c);
  ASSERT_TRUE(run.status.ok()) << run.status;
  double max_abs = 0;
  for (float g : run.gradient)
    max_abs = std::max(max_abs, std::fabs(double{g}));
  ASSERT_GT(max_abs, 0.0);
  const float h = 1.0f / 64.0f;
  for (int k = 0; k < static_cast<int>(c.logits.size()); ++k) {
    const float z = c.logits[k];
    auto central = [&](float step) {
      return (LossAt(c, k, z + step) - LossAt(c, k, z - step)) / (2.0 * step);
    };
    const double fd = (4.0 * central(h / 2) - central(h)) / 3.0;
    EXPECT_NEAR(run.gradient[k], fd, 1e-5 * max_abs + 1e-7)
        << "element [" << k / c.cols << "][" << k % c.cols << "]";
  }
}

std::vector<GradCase> AllGradCases() {
  std::vector<GradCase> cases;
  for (Reduction r :
       {Reduction::kMean, Reduction::kSum, Reduction::kElementMean,
        Reduction::kWeightedMean, Reduction::kNone}) {
    for (LossType t :
         {LossType::kSoftmax, LossType::kSigmoid, LossType::kFocal,
          LossType::kSoftmaxBce, LossType::kBalancedSoftmax,
          LossType::kLogitAdjusted, LossType::kLdam, LossType::kSoftmaxFocal}) {
      cases.push_back({t, r, false});
      const bool targets_ok =
          (t == LossType::kSigmoid || t == LossType::kFocal) &&
          r != Reduction::kWeightedMean;
      if (targets_ok) cases.push_back({t, r, true});
      if (t == LossType::kSigmoid || t == LossType::kFocal) {
        cases.push_back({t, r, false, true});
        if (targets_ok) cases.push_back({t, r, true, true});
      }
    }
    cases.push_back({LossType::kVs, r, false});
    if (r == Reduction::kElementMean || r == Reduction::kWeightedMean) {
      continue;  // not allowed with the detection losses
    }
    for (LossType t : {LossType::kSeesaw, LossType::kEql, LossType::kEqlV2}) {
      cases.push_back({t, r, false});
    }
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(AllLosses, FiniteDifference,
                         ::testing::ValuesIn(AllGradCases()), Name);

TEST(Extremes, EveryResultFiniteForLogitsUpTo1e4) {
  for (LossType t :
       {LossType::kSoftmax, LossType::kSigmoid, LossType::kFocal,
        LossType::kSoftmaxBce, LossType::kBalancedSoftmax,
        LossType::kLogitAdjusted, LossType::kLdam, LossType::kSoftmaxFocal}) {
    for (double gamma : {0.0, 0.5, 2.0}) {
      EngineCase c;
      c.params.loss_type = t;
      c.params.gamma = gamma;
      c.counts = {3, 1, 4};
      c.rows = 4;
      c.cols = 3;
      c.logits = {1e4f,  -1e4f, 0,      -1e4f, 1e4f, 88.8f,
                  -1000, 1000,  -88.8f, 0,     0,    0};
      c.labels = {1, 0, 0, 2};
      const EngineRun run = RunEngine(c);
      ASSERT_TRUE(run.status.ok());
      EXPECT_TRUE(std::isfinite(run.result.loss)) << LossTypeName(t);
      for (float g : run.gradient)
        EXPECT_TRUE(std::isfinite(g)) << LossTypeName(t);
      for (float l : run.per_sample_losses) EXPECT_TRUE(std::isfinite(l));
    }
  }
}

// LOSS.md section 10's losses at |z| up to 1e4 and beyond, with extreme
// parameters (a huge EQL_V2 gamma r, SEESAW's q and a tiny eps).
TEST(Extremes, SectionTenResultsFiniteForExtremeLogitsAndParameters) {
  const float big = 3e4f;
  for (LossType t : {LossType::kSeesaw, LossType::kEql, LossType::kEqlV2,
                     LossType::kVs, LossType::kFocal, LossType::kSigmoid}) {
    for (double extreme : {1.0, 1e3, 1e6}) {
      EngineCase c;
      c.params.loss_type = t;
      c.params.weighting =
          IsDetectionLoss(t) ? WeightingScheme::kNone : c.params.weighting;
      c.params.seesaw_q = extreme;
      c.params.seesaw_eps = 1e-300;
      c.params.eqlv2_gamma = extreme * 1e300;
      c.params.vs_gamma = extreme;
      c.params.focal_alpha = 0.25;
      c.counts = {3000, 1, 4};
      c.eqlv2_positive = {1e300, 0.0, 5.0};
      c.eqlv2_negative = {0.0, 1e300, 5.0};
      c.eqlv2_updates = 1;
      c.rows = 4;
      c.cols = 3;
      c.logits = {big,   -big, 0,      -1e4f, 1e4f, 88.8f,
                  -1000, 1000, -88.8f, 0,     big,  -big};
      c.labels = {1, 0, 0, 2};
      if (IsDetectionLoss(t)) c.labels[2] = 3;  // background
      const EngineRun run = RunEngine(c);
      ASSERT_TRUE(run.status.ok()) << run.status;
      EXPECT_TRUE(std::isfinite(run.result.loss)) << LossTypeName(t);
      for (float g : run.gradient) {
        EXPECT_TRUE(std::isfinite(g)) << LossTypeName(t) << " " << extreme;
      }
      for (float l : run.per_sample_losses) EXPECT_TRUE(std::isfinite(l));
    }
  }
}

TEST(Extremes, HugeFiniteWeightsGiveFiniteFloatResults) {
  // Sample weights and upstream near float32's limit: float64 products pass
  // FLT_MAX; the float32 results saturate instead of becoming inf.
  for (LossType t : {LossType::kSoftmax, LossType::kSigmoid, LossType::kFocal,
                     LossType::kSoftmaxBce, LossType::kLdam}) {
    EngineCase c;
    c.params.loss_type = t;
    c.params.reduction = Reduction::kNone;
    c.params.scale = 1e6;
    c.counts = {1000, 1};
    c.rows = 2;
    c.cols = 2;
    c.logits = {1e4f, -1e4f, -1e4f, 1e4f};
    c.labels = {1, 0};
    c.sample_weights = {3e38f, 3e38f};
    c.upstream = {3e38f, -3e38f};
    const EngineRun run = RunEngine(c);
    ASSERT_TRUE(run.status.ok()) << run.status;
    for (float g : run.gradient)
      EXPECT_TRUE(std::isfinite(g)) << LossTypeName(t);
    for (float l : run.per_sample_losses) {
      EXPECT_TRUE(std::isfinite(l)) << LossTypeName(t);
    }
  }
}

TEST(Extremes, SoftmaxFocalAtCertainPredictionHasZeroGradient) {
  // p_t rounds to 1: loss 0 and gradient exactly 0, never NaN (issue 9).
  for (double gamma : {0.5, 2.0}) {
    EngineCase c;
    c.params.loss_type = LossType::kSoftmaxFocal;
    c.params.gamma = gamma;
    c.counts = {1, 1, 1};
    c.rows = 1;
    c.cols = 3;
    c.logits = {1000.0f, -1000.0f, 0.0f};
    c.labels = {0};
    const EngineRun run = RunEngine(c);
    ASSERT_TRUE(run.status.ok());
    EXPECT_EQ(run.result.loss, 0.0);
    for (float g : run.gradient) EXPECT_EQ(g, 0.0f);
  }
}

TEST(Extremes, FocalPositiveAtMinus1000HasModulatorOne) {
  // LOSS.md section 7: a FOCAL positive at z = -1000 has modulator ~1 and
  // loss ~1000 * omega. One class, count 1: w = 1, omega = 1; SUM.
  EngineCase c;
  c.params.loss_type = LossType::kFocal;
  c.params.reduction = Reduction::kSum;
  c.params.gamma = 2.0;
  c.counts = {1};
  c.rows = 1;
  c.cols = 1;
  c.logits = {-1000.0f};
  c.labels = {0};
  const EngineRun run = RunEngine(c);
  ASSERT_TRUE(run.status.ok());
  EXPECT_DOUBLE_EQ(run.result.loss, 1000.0);
  // d/dz of sp(-z) * (1 - p)^2 at z = -1000: -(1 - p) ~ -1.
  EXPECT_FLOAT_EQ(run.gradient[0], -1.0f);
}

}  // namespace
}  // namespace cbloss
