// Copyright 2026 The cbloss Authors.

#include "core/class_weights.h"

#include <algorithm>
#include <cassert>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "core/loss_parameters.h"
#include "core/status_macros.h"

namespace cbloss {

absl::Status ValidateBeta(double beta) {
  return CheckLossParameter(*FindLossParameter("beta"), beta, "config");
}

absl::Status ValidateClassCounts(absl::Span<const int64_t> counts) {
  if (counts.empty()) {
    return absl::InvalidArgumentError(
        "class_counts is empty; at least one class is needed");
  }
  for (size_t j = 0; j < counts.size(); ++j) {
    if (counts[j] < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("class_counts[", j, "] = ", counts[j], " is negative"));
    }
  }
  return absl::OkStatus();
}

namespace {

// Raw weight r_j of a class with n >= 1 samples (LOSS.md section 2).
double RawWeight(WeightingScheme scheme, double beta, double log_beta,
                 double n) {
  switch (scheme) {
    case WeightingScheme::kEffectiveNumber:
      if (beta == 1.0) return 1.0 / n;
      // 1 - beta^n = -expm1(n log beta): full precision near beta = 1.
      return (1.0 - beta) / -std::expm1(n * log_beta);
    case WeightingScheme::kInverseFrequency:
      return 1.0 / n;
    case WeightingScheme::kInverseSqrtFrequency:
      return 1.0 / std::sqrt(n);
    case WeightingScheme::kNone:
      return 1.0;
  }
  return 1.0;
}

// ClassWeights for counts and beta already validated.
absl::Status NormalisedWeights(absl::Span<const int64_t> counts,
                               WeightingScheme scheme, double beta,
                               absl::Span<double> weights) {
  assert(ValidateClassCounts(counts).ok() && ValidateBeta(beta).ok());
  // log1p(beta - 1) is -inf at beta = 0, where n * -inf = -inf and
  // -expm1(-inf) = 1: r = 1, as the limit says.
  const double log_beta = std::log1p(beta - 1.0);
  double sum = 0.0;
  int64_t with_weight = 0;
  for (size_t j = 0; j < counts.size(); ++j) {
    double r = 0.0;
    if (scheme == WeightingScheme::kNone) {
      r = 1.0;
    } else if (counts[j] > 0) {
      r = RawWeight(scheme, beta, log_beta, static_cast<double>(counts[j]));
    }
    weights[j] = r;
    sum += r;
    if (r > 0.0) ++with_weight;
  }
  if (with_weight == 0) {
    return absl::FailedPreconditionError(
        "every class count is 0: class weights are undefined until a class "
        "has a sample");
  }
  const double scale = static_cast<double>(with_weight) / sum;
  for (double& w : weights) w *= scale;
  return absl::OkStatus();
}

}  // namespace

absl::Status ClassWeights(absl::Span<const int64_t> counts,
                          WeightingScheme scheme, double beta,
                          absl::Span<double> weights) {
  CBLOSS_RETURN_IF_ERROR(ValidateClassCounts(counts));
  CBLOSS_RETURN_IF_ERROR(ValidateBeta(beta));
  return NormalisedWeights(counts, scheme, beta, weights);
}

namespace {

double SumOf(absl::Span<const int64_t> counts) {
  double total = 0.0;
  for (int64_t n : counts) total += static_cast<double>(n);
  return total;
}

// sigma(x) without overflow for any x, including +-inf.
double StableSigmoid(double x) {
  if (x >= 0) return 1.0 / (1.0 + std::exp(-x));
  const double e = std::exp(x);
  return e / (1.0 + e);
}

// The terms of LOSS.md section 10 (counts validated; VS's are >= 1).
absl::Status DetectionTerms(const LossParams& params,
                            absl::Span<const int64_t> counts,
                            const EqlV2Statistics* eqlv2, ClassTerms* terms) {
  const size_t C = counts.size();
  switch (params.loss_type) {
    case LossType::kSeesaw:
      for (int64_t n : counts) {
        terms->log_counts.push_back(
            std::log(static_cast<double>(std::max<int64_t>(n, 1))));
      }
      break;
    case LossType::kEql: {
      const double total = SumOf(counts);
      if (total == 0.0) {
        return absl::FailedPreconditionError(
            "class_counts are all 0: loss type eql needs the class "
            "frequencies n_j / sum n (LOSS.md section 10)");
      }
      for (int64_t n : counts) {  // 1 - T_j, T_j = [f_j < lambda]
        const bool tail = static_cast<double>(n) / total < params.eql_lambda;
        terms->negative_factors.push_back(tail ? 0.0f : 1.0f);
      }
      break;
    }
    case LossType::kEqlV2:
      for (size_t j = 0; j < C; ++j) {
        const bool fresh = eqlv2 == nullptr || eqlv2->updates == 0;
        const double r =
            fresh ? 100.0 : eqlv2->positive[j] / (eqlv2->negative[j] + 1e-10);
        const double q =
            StableSigmoid(params.eqlv2_gamma * (r - params.eqlv2_mu));
        terms->negative_factors.push_back(static_cast<float>(q));
        terms->positive_factors.push_back(1.0 + params.eqlv2_alpha * (1.0 - q));
      }
      break;
    case LossType::kVs: {
      const double total = SumOf(counts);
      const double largest =
          static_cast<double>(*std::max_element(counts.begin(), counts.end()));
      for (int64_t n : counts) {
        const double nd = static_cast<double>(n);
        // 1 / Delta_j = (n_j / max n)^vs_gamma, in (0, 1].
        const double inv_delta = std::pow(nd / largest, params.vs_gamma);
        terms->logit_scales.push_back(inv_delta);
        terms->gradient_scales.push_back(static_cast<float>(inv_delta));
        terms->logit_offsets.push_back(params.tau * std::log(nd / total));
      }
      break;
    }
    default:
      break;
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ClassTerms> MakeClassTerms(const LossParams& params,
                                          absl::Span<const int64_t> counts,
                                          const EqlV2Statistics* eqlv2) {
  ClassTerms terms;
  if (NeedsPositiveCounts(params.loss_type)) {
    for (size_t j = 0; j < counts.size(); ++j) {
      if (counts[j] < 1) {
        return absl::FailedPreconditionError(absl::StrCat(
            "class_counts[", j, "] = 0: loss type ",
            LossTypeName(params.loss_type),
            " needs every class to have at least one sample (LOSS.md section ",
            params.loss_type == LossType::kVs ? "10)" : "9)"));
      }
    }
  }
  terms.weights.resize(counts.size());
  CBLOSS_RETURN_IF_ERROR(NormalisedWeights(
      counts, params.weighting, params.beta, absl::MakeSpan(terms.weights)));
  CBLOSS_RETURN_IF_ERROR(DetectionTerms(params, counts, eqlv2, &terms));
  switch (params.loss_type) {
    case LossType::kBalancedSoftmax:
      for (int64_t n : counts) {
        terms.logit_offsets.push_back(std::log(static_cast<double>(n)));
      }
      break;
    case LossType::kLogitAdjusted: {
      double total = 0.0;
      for (int64_t n : counts) total += static_cast<double>(n);
      for (int64_t n : counts) {
        terms.logit_offsets.push_back(params.tau *
                                      std::log(static_cast<double>(n) / total));
      }
      break;
    }
    case LossType::kLdam: {
      // Delta_j = max_margin n_j^(-1/4) / max_k n_k^(-1/4); the largest
      // n^(-1/4) belongs to the smallest count.
      int64_t smallest = counts[0];
      for (int64_t n : counts) smallest = std::min(smallest, n);
      const double largest_term =
          std::pow(static_cast<double>(smallest), -0.25);
      for (int64_t n : counts) {
        terms.margins.push_back(params.max_margin *
                                std::pow(static_cast<double>(n), -0.25) /
                                largest_term);
      }
      break;
    }
    default:
      break;
  }
  return terms;
}

}  // namespace cbloss
