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
};

std::string Name(const ::testing::TestParamInfo<GradCase>& info) {
  return std::string(LossTypeName(info.param.type)) + "_" +
         std::string(ReductionName(info.param.reduction)) +
         (info.param.targets ? "_targets" : "_labels");
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
    for (float g : run.gradient) EXPECT_TRUE(std::isfinite(g)) << LossTypeName(t);
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
