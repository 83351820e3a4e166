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

#include "absl/status/status.h"
#include "absl/types/span.h"
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
  return ClassWeights(counts, WeightingScheme::kEffectiveNumber, beta,
                      weights);
}

}  // namespace cbloss

#endif  // CBLOSS_CORE_CLASS_WEIGHTS_H_
