// Copyright 2026 The cbloss Authors.
//
// Class weights of LOSS.md section 2: a raw weight per class from its count
// (effective number, inverse frequency, inverse square root, or none), zero
// for empty classes, normalised so the weights of the K classes with samples
// sum to K. Computed in float64. Pure; thread-safe.
//
// Example:
//   std::vector<double> w(5);
//   absl::Status s = EffectiveNumberWeights({2, 3, 1, 2, 2}, 0.9999,
//                                           absl::MakeSpan(w));
//   // w = {0.88236332, 0.58827163, 1.76463841, 0.88236332, 0.88236332}

#ifndef CBLOSS_CORE_CLASS_WEIGHTS_H_
#define CBLOSS_CORE_CLASS_WEIGHTS_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "core/loss_parameters.h"
#include "core/loss_types.h"

namespace cbloss {

// Checks beta (LOSS.md section 7): INVALID_ARGUMENT naming `config.beta`.
absl::Status ValidateBeta(double beta);

// Checks counts: at least one class, none negative (INVALID_ARGUMENT naming
// `class_counts[j]`).
absl::Status ValidateClassCounts(absl::Span<const int64_t> counts);

// Writes the normalised weights w (counts.size() of them) into `weights`.
// INVALID_ARGUMENT for bad counts or beta; FAILED_PRECONDITION when no class
// has a sample (every scheme but NONE).
absl::Status ClassWeights(absl::Span<const int64_t> counts,
                          WeightingScheme scheme, double beta,
                          absl::Span<double> weights);

// The default scheme, by name.
inline absl::Status EffectiveNumberWeights(absl::Span<const int64_t> counts,
                                           double beta,
                                           absl::Span<double> weights) {
  return ClassWeights(counts, WeightingScheme::kEffectiveNumber, beta, weights);
}

// Everything a loss computation needs from the class counts, derived once
// per request: the weights w, and for the count-aware losses of LOSS.md
// section 9 the per-class logit offsets or LDAM margins (float64).
struct ClassTerms {
  std::vector<double> weights;  // w_j (section 2), C entries
  std::vector<double>
      logit_offsets;            // BALANCED_SOFTMAX: log n_j;
                                // LOGIT_ADJUSTED, VS: tau log(n_j / sum n)
  std::vector<double> margins;  // LDAM: Delta_j
  // LOSS.md section 10.
  std::vector<double> log_counts;        // SEESAW: log max(n_j, 1)
  std::vector<float> negative_factors;   // EQL: 1 - T_j; EQL_V2: q_j
  std::vector<double> positive_factors;  // EQL_V2: p_j
  std::vector<double> logit_scales;      // VS: 1 / Delta_j
  std::vector<float> gradient_scales;    // VS: 1 / Delta_j as float
};

// The statistics of a run (LOSS.md section 11) that EQL_V2 reads: the
// accumulated positive and negative gradient sums P_j and Q_j (C entries
// each) and how many EQL_V2 updates made them (0: r_j = 100 for every j).
struct EqlV2Statistics {
  absl::Span<const double> positive;
  absl::Span<const double> negative;
  int64_t updates = 0;
};

// Weights per params.weighting / params.beta and the section 9 terms of
// params.loss_type, for params and counts validated at the edge
// (ValidateLossParams or the server's config check, ValidateClassCounts):
// they are not checked again. FAILED_PRECONDITION when no class has a
// sample (as ClassWeights), or naming the class when a section 9 loss meets
// a class with count 0. EQL_V2 reads `eqlv2` (null: a run with no update
// yet); the other losses ignore it. EQL with every count 0 is
// FAILED_PRECONDITION.
absl::StatusOr<ClassTerms> MakeClassTerms(
    const LossParams& params, absl::Span<const int64_t> counts,
    const EqlV2Statistics* eqlv2 = nullptr);

}  // namespace cbloss

#endif  // CBLOSS_CORE_CLASS_WEIGHTS_H_
