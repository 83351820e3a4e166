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

absl::StatusOr<ClassTerms> MakeClassTerms(const LossParams& params,
                                          absl::Span<const int64_t> counts) {
  ClassTerms terms;
  terms.weights.resize(counts.size());
  CBLOSS_RETURN_IF_ERROR(NormalisedWeights(
      counts, params.weighting, params.beta, absl::MakeSpan(terms.weights)));
  if (!NeedsPositiveCounts(params.loss_type)) return terms;
  for (size_t j = 0; j < counts.size(); ++j) {
    if (counts[j] < 1) {
      return absl::FailedPreconditionError(
          absl::StrCat("class_counts[", j, "] = 0: loss type ",
                       LossTypeName(params.loss_type),
                       " needs every class to have at least one sample "
                       "(LOSS.md section 9)"));
    }
  }
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
