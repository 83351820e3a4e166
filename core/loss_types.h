// Copyright 2026 The cbloss Authors.
//
// The vocabulary of the loss engine: which loss, which class weighting, which
// reduction, and the resolved parameters of one computation. These mirror the
// wire enums of proto/cbloss/v1/cbloss.proto without depending on them, so the
// engine stays free of gRPC and protobuf. Definitions: docs/spec/LOSS.md.

#ifndef CBLOSS_CORE_LOSS_TYPES_H_
#define CBLOSS_CORE_LOSS_TYPES_H_

#include <cstdint>

#include "absl/strings/string_view.h"

namespace cbloss {

// LOSS.md section 4, then the count-aware losses of section 9.
enum class LossType {
  kSoftmax,
  kSigmoid,
  kFocal,
  kSoftmaxBce,
  kBalancedSoftmax,
  kLogitAdjusted,
  kLdam,
  kSoftmaxFocal,
  // LOSS.md section 10.
  kSeesaw,
  kEql,
  kEqlV2,
  kVs,
};

// True for the losses computed through a softmax over a row (labels mode
// only, MEAN divides by N).
bool IsSoftmaxFamily(LossType t);

// LOSS.md section 10: SEESAW, EQL and EQL_V2, whose row weight is s_i alone
// and for which label C marks a background sample.
bool IsDetectionLoss(LossType t);

// True for the losses that take labels only (every one but SIGMOID and
// FOCAL).
bool IsLabelsOnly(LossType t);

// True for the losses whose logits use log n_j, n_j^(-1/4) or 1 / n_j
// (BALANCED_SOFTMAX, LOGIT_ADJUSTED, LDAM, VS), which need every class
// count >= 1 (not SOFTMAX_FOCAL).
bool NeedsPositiveCounts(LossType t);

// LOSS.md section 2.
enum class WeightingScheme {
  kEffectiveNumber,
  kInverseFrequency,
  kInverseSqrtFrequency,
  kNone,
};

// LOSS.md section 5.
enum class Reduction { kMean, kSum, kElementMean, kWeightedMean, kNone };

// Element type of a tensor on the wire.
enum class DType { kFloat32, kFloat16, kBFloat16 };

// Short lower-case names, as the CLI and docs spell them ("focal", "mean").
absl::string_view LossTypeName(LossType t);
absl::string_view WeightingSchemeName(WeightingScheme s);
absl::string_view ReductionName(Reduction r);
absl::string_view DTypeName(DType d);

}  // namespace cbloss

#endif  // CBLOSS_CORE_LOSS_TYPES_H_
