// Copyright 2026 The cbloss Authors.
//
// The engine against PyTorch float64 autograd (tests/golden/make_golden.py),
// at the tolerances of LOSS.md section 7, and the seed example users know.

#include <cmath>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "core/half.h"
#include "core/loss.h"
#include "core/loss_kernels.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/core/engine_runner.h"

namespace cbloss {
namespace {

using ::cbloss::testing::EngineCase;
using ::cbloss::testing::EngineRun;
using ::cbloss::testing::RunEngine;
using json = nlohmann::json;

json LoadJson(const std::string& file) {
  std::ifstream in(std::string(CBLOSS_GOLDEN_DIR) + "/" + file);
  if (!in.good()) {
    ADD_FAILURE() << "cannot open " << file;
    return json::object();
  }
  return json::parse(in);
}

LossType ParseLossType(const std::string& s) {
  if (s == "SOFTMAX") return LossType::kSoftmax;
  if (s == "SIGMOID") return LossType::kSigmoid;
  if (s == "FOCAL") return LossType::kFocal;
  if (s == "SOFTMAX_BCE") return LossType::kSoftmaxBce;
  if (s == "BALANCED_SOFTMAX") return LossType::kBalancedSoftmax;
  if (s == "LOGIT_ADJUSTED") return LossType::kLogitAdjusted;
  if (s == "LDAM") return LossType::kLdam;
  if (s == "SOFTMAX_FOCAL") return LossType::kSoftmaxFocal;
  ADD_FAILURE() << "unknown loss type " << s;
  return LossType::kSoftmax;
}

Reduction ParseReduction(const std::string& s) {
  if (s == "MEAN") return Reduction::kMean;
  if (s == "SUM") return Reduction::kSum;
  if (s == "ELEMENT_MEAN") return Reduction::kElementMean;
  if (s == "WEIGHTED_MEAN") return Reduction::kWeightedMean;
  if (s == "NONE") return Reduction::kNone;
  ADD_FAILURE() << "unknown reduction " << s;
  return Reduction::kMean;
}

WeightingScheme ParseScheme(const std::string& s) {
  if (s == "EFFECTIVE_NUMBER") return WeightingScheme::kEffectiveNumber;
  if (s == "INVERSE_FREQUENCY") return WeightingScheme::kInverseFrequency;
  if (s == "INVERSE_SQRT_FREQUENCY")
    return WeightingScheme::kInverseSqrtFrequency;
  if (s == "NONE") return WeightingScheme::kNone;
  ADD_FAILURE() << "unknown scheme " << s;
  return WeightingScheme::kEffectiveNumber;
}

template <typename T>
std::vector<T> Vec(const json& j, const char* key) {
  return j.contains(key) ? j[key].get<std::vector<T>>() : std::vector<T>{};
}

// Sections 1-8 and section 9 (with deferred re-weighting) in one list.
const json& Cases() {
  static const json* cases = [] {
    json all = LoadJson("golden_cases.json")["cases"];
    const json section9 = LoadJson("golden_cases_section9.json");
    for (const json& c : section9["cases"]) all.push_back(c);
    return new json(std::move(all));
  }();
  return *cases;
}

std::vector<std::string> CaseNames() {
  std::vector<std::string> names;
  for (const json& c : Cases()) names.push_back(c["name"]);
  return names;
}

const json& FindCase(const std::string& name) {
  for (const json& c : Cases()) {
    if (c["name"] == name) return c;
  }
  static const json empty;
  return empty;
}

// Builds the engine input; half-precision logits go through our decoder.
EngineCase ToEngineCase(const json& g) {
  EngineCase c;
  c.params.loss_type = ParseLossType(g["loss_type"]);
  c.params.reduction = ParseReduction(g["reduction"]);
  c.params.weighting = ParseScheme(g["scheme"]);
  c.params.beta = g["beta"];
  c.params.gamma = g["gamma"];
  c.params.ignore_index = g["ignore_index"];
  if (g.contains("tau")) c.params.tau = g["tau"];
  if (g.contains("max_margin")) c.params.max_margin = g["max_margin"];
  if (g.contains("scale")) c.params.scale = g["scale"];
  // LOSS.md section 9: before the DRW start epoch every class weight is 1.
  c.unit_weights = g.contains("drw_start_epoch") && g.contains("epoch") &&
                   g["epoch"].get<int>() < g["drw_start_epoch"].get<int>();
  c.counts = Vec<int64_t>(g, "class_counts");
  c.rows = g["rows"];
  c.cols = g["cols"];
  const std::string dtype = g["logits_dtype"];
  if (dtype == "float32") {
    c.logits = Vec<float>(g, "logits");
  } else {
    const std::vector<uint16_t> bits = Vec<uint16_t>(g, "logits_bits");
    c.logits.resize(bits.size());
    DecodeHalf(dtype == "float16" ? DType::kFloat16 : DType::kBFloat16, bits,
               absl::MakeSpan(c.logits));
    const std::vector<float> decoded_by_torch = Vec<float>(g, "logits");
    EXPECT_EQ(c.logits, decoded_by_torch) << "half decode differs from torch";
  }
  c.labels = Vec<int32_t>(g, "labels");
  c.targets = Vec<float>(g, "targets");
  c.sample_weights = Vec<float>(g, "sample_weights");
  c.upstream = Vec<float>(g, "upstream");
  return c;
}

// LOSS.md section 7 tolerances.
void ExpectMatchesReference(const json& g, const EngineRun& run) {
  ASSERT_TRUE(run.status.ok()) << run.status;
  const json& want = g["expected"];
  const double loss = want["loss"];
  EXPECT_NEAR(run.result.loss, loss, 1e-5 * std::fabs(loss) + 1e-6) << "loss";
  EXPECT_EQ(run.result.num_samples, want["num_samples"].get<int64_t>());
  const auto weights = want["class_weights"].get<std::vector<double>>();
  ASSERT_EQ(run.class_weights.size(), weights.size());
  for (size_t j = 0; j < weights.size(); ++j) {
    EXPECT_NEAR(run.class_weights[j], weights[j], 1e-12 * (1 + weights[j]))
        << "class_weights[" << j << "]";
  }
  const auto per_sample = want["per_sample_losses"].get<std::vector<double>>();
  ASSERT_EQ(run.per_sample_losses.size(), per_sample.size());
  for (size_t i = 0; i < per_sample.size(); ++i) {
    EXPECT_NEAR(run.per_sample_losses[i], per_sample[i],
                1e-5 * std::fabs(per_sample[i]) + 1e-6)
        << "per_sample_losses[" << i << "]";
  }
  const auto grad = want["gradient"].get<std::vector<double>>();
  ASSERT_EQ(run.gradient.size(), grad.size());
  double max_abs = 0;
  for (double v : grad) max_abs = std::max(max_abs, std::fabs(v));
  const int64_t cols = g["cols"];
  for (size_t k = 0; k < grad.size(); ++k) {
    EXPECT_NEAR(run.gradient[k], grad[k], 1e-5 * max_abs + 1e-7)
        << "gradient[" << k / cols << "][" << k % cols << "]";
  }
}

class Golden : public ::testing::TestWithParam<std::string> {};

TEST_P(Golden, MatchesPyTorchFloat64) {
  const json& g = FindCase(GetParam());
  ASSERT_FALSE(g.is_null());
  const EngineCase c = ToEngineCase(g);
  ExpectMatchesReference(g, RunEngine(c));
  ThreadPool pool(2);
  ExpectMatchesReference(g, RunEngine(c, &pool));
}

INSTANTIATE_TEST_SUITE_P(Cases, Golden, ::testing::ValuesIn(CaseNames()),
                         [](const ::testing::TestParamInfo<std::string>& i) {
                           return i.param;
                         });

// The SIMD kernels are compiled for several instruction sets and one is
// chosen at run time; every one this CPU can run (down to the portable
// 128-bit emulation) must meet the golden cases, not only the best.
TEST(GoldenEveryTarget, EachDispatchedInstructionSetMatchesPyTorch) {
  const std::vector<int64_t> targets = kernels::SupportedTargets();
  ASSERT_GE(targets.size(), 2u) << "expected a SIMD and a portable target";
  std::set<std::string> names;
  for (int64_t target : targets) {
    kernels::ForceTarget(target);
    const std::string name = kernels::ActiveTargetName();
    names.insert(name);
    ThreadPool pool(2);
    for (const json& g : Cases()) {
      SCOPED_TRACE(name + " " + g["name"].get<std::string>());
      ExpectMatchesReference(g, RunEngine(ToEngineCase(g), &pool));
    }
  }
  kernels::ForceTarget(0);
  // Forcing really switched kernels: one distinct name per target.
  EXPECT_EQ(names.size(), targets.size());
}

class GoldenLdam : public ::testing::TestWithParam<std::string> {};

TEST_P(GoldenLdam, MarginsMatchPyTorch) {
  const json& g = FindCase(GetParam());
  const EngineCase c = ToEngineCase(g);
  absl::StatusOr<ClassTerms> terms = MakeClassTerms(c.params, c.counts);
  ASSERT_TRUE(terms.ok()) << terms.status();
  const auto margins = g["expected"]["margins"].get<std::vector<double>>();
  ASSERT_EQ(terms->margins.size(), margins.size());
  for (size_t j = 0; j < margins.size(); ++j) {
    EXPECT_NEAR(terms->margins[j], margins[j], 1e-12) << j;
  }
}

std::vector<std::string> LdamCaseNames() {
  std::vector<std::string> names;
  for (const json& c : Cases()) {
    if (c["expected"].contains("margins")) names.push_back(c["name"]);
  }
  return names;
}

INSTANTIATE_TEST_SUITE_P(LdamCases, GoldenLdam,
                         ::testing::ValuesIn(LdamCaseNames()),
                         [](const ::testing::TestParamInfo<std::string>& i) {
                           return i.param;
                         });

TEST(GoldenFile, CoversEveryLossReductionAndMode) {
  std::set<std::string> seen;
  for (const json& c : Cases()) {
    seen.insert(c["loss_type"].get<std::string>() + "/" +
                c["reduction"].get<std::string>() + "/" +
                (c.contains("labels") ? "labels" : "targets"));
  }
  for (std::string loss :
       {"SOFTMAX", "SIGMOID", "FOCAL", "SOFTMAX_BCE", "BALANCED_SOFTMAX",
        "LOGIT_ADJUSTED", "LDAM", "SOFTMAX_FOCAL"}) {
    for (std::string red :
         {"MEAN", "SUM", "ELEMENT_MEAN", "WEIGHTED_MEAN", "NONE"}) {
      EXPECT_TRUE(seen.count(loss + "/" + red + "/labels"))
          << loss << " " << red;
      if ((loss == "SIGMOID" || loss == "FOCAL") && red != "WEIGHTED_MEAN") {
        EXPECT_TRUE(seen.count(loss + "/" + red + "/targets"))
            << loss << " " << red;
      }
    }
  }
}

// LOSS.md section 9's check: counts [2,3,1,2,2], max_margin 0.5.
TEST(Ldam, MarginsMatchSpecCheck) {
  LossParams p;
  p.loss_type = LossType::kLdam;
  p.max_margin = 0.5;
  absl::StatusOr<ClassTerms> terms = MakeClassTerms(p, {2, 3, 1, 2, 2});
  ASSERT_TRUE(terms.ok());
  const std::vector<double> want = {0.42044821, 0.37991784, 0.5, 0.42044821,
                                    0.42044821};
  for (size_t j = 0; j < want.size(); ++j) {
    EXPECT_NEAR(terms->margins[j], want[j], 5e-9) << j;
  }
}

TEST(Section9, ZeroCountIsFailedPreconditionNamingTheClass) {
  // LOSS.md section 9: for each of them, a class with n_j = 0 is
  // FAILED_PRECONDITION.
  for (LossType t : {LossType::kBalancedSoftmax, LossType::kLogitAdjusted,
                     LossType::kLdam, LossType::kSoftmaxFocal}) {
    LossParams p;
    p.loss_type = t;
    absl::StatusOr<ClassTerms> terms = MakeClassTerms(p, {4, 0, 2});
    EXPECT_EQ(terms.status().code(), absl::StatusCode::kFailedPrecondition)
        << LossTypeName(t);
    EXPECT_NE(terms.status().message().find("class_counts[1] = 0"),
              std::string::npos)
        << terms.status();
  }
}

// The seed document's worked example (shared/spec/vectors/seed_example.json,
// copied to tests/golden/): FOCAL, beta 0.9999, gamma 2, MEAN -> 1.9582863.
TEST(SeedExample, GivesPublishedLossAndWeights) {
  const json seed = LoadJson("seed_example.json");
  EngineCase c;
  c.params.loss_type = LossType::kFocal;
  c.params.reduction = Reduction::kMean;
  c.params.beta = seed["weighting"]["beta"];
  c.params.gamma = seed["gamma"];
  c.counts = seed["class_counts"].get<std::vector<int64_t>>();
  const auto rows = seed["logits"].get<std::vector<std::vector<float>>>();
  c.rows = rows.size();
  c.cols = rows[0].size();
  for (const auto& r : rows)
    c.logits.insert(c.logits.end(), r.begin(), r.end());
  c.labels = seed["labels"].get<std::vector<int32_t>>();
  const EngineRun run = RunEngine(c);
  ASSERT_TRUE(run.status.ok()) << run.status;
  EXPECT_NEAR(run.result.loss, seed["expected"]["loss"].get<double>(),
              seed["expected"]["loss_tolerance"].get<double>());
  const auto w = seed["expected"]["class_weights"].get<std::vector<double>>();
  for (size_t j = 0; j < w.size(); ++j) {
    EXPECT_NEAR(run.class_weights[j], w[j], 5e-9) << j;
  }
}

}  // namespace
}  // namespace cbloss
