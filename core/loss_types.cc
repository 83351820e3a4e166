// Copyright 2026 The cbloss Authors.

#include "core/loss_types.h"

namespace cbloss {

absl::string_view LossTypeName(LossType t) {
  switch (t) {
    case LossType::kSoftmax:
      return "softmax";
    case LossType::kSigmoid:
      return "sigmoid";
    case LossType::kFocal:
      return "focal";
    case LossType::kSoftmaxBce:
      return "softmax_bce";
    case LossType::kBalancedSoftmax:
      return "balanced_softmax";
    case LossType::kLogitAdjusted:
      return "logit_adjusted";
    case LossType::kLdam:
      return "ldam";
    case LossType::kSoftmaxFocal:
      return "softmax_focal";
    case LossType::kSeesaw:
      return "seesaw";
    case LossType::kEql:
      return "eql";
    case LossType::kEqlV2:
      return "eql_v2";
    case LossType::kVs:
      return "vs";
  }
  return "unknown";
}

bool IsSoftmaxFamily(LossType t) {
  return t != LossType::kSigmoid && t != LossType::kFocal &&
         t != LossType::kEql && t != LossType::kEqlV2;
}

bool IsDetectionLoss(LossType t) {
  return t == LossType::kSeesaw || t == LossType::kEql || t == LossType::kEqlV2;
}

bool IsLabelsOnly(LossType t) {
  return t != LossType::kSigmoid && t != LossType::kFocal;
}

bool NeedsPositiveCounts(LossType t) {
  // LOSS.md section 9: the losses whose logits use log n_j or n_j^(-1/4).
  // SOFTMAX_FOCAL uses the counts only through the weights of section 2, so
  // it follows section 2 (zero counts allowed).
  // VS (section 10) divides by n_j too.
  return t == LossType::kBalancedSoftmax || t == LossType::kLogitAdjusted ||
         t == LossType::kLdam || t == LossType::kVs;
}

absl::string_view WeightingSchemeName(WeightingScheme s) {
  switch (s) {
    case WeightingScheme::kEffectiveNumber:
      return "effective_number";
    case WeightingScheme::kInverseFrequency:
      return "inverse_frequency";
    case WeightingScheme::kInverseSqrtFrequency:
      return "inverse_sqrt_frequency";
    case WeightingScheme::kNone:
      return "none";
  }
  return "unknown";
}

absl::string_view ReductionName(Reduction r) {
  switch (r) {
    case Reduction::kMean:
      return "mean";
    case Reduction::kSum:
      return "sum";
    case Reduction::kElementMean:
      return "element_mean";
    case Reduction::kWeightedMean:
      return "weighted_mean";
    case Reduction::kNone:
      return "none";
  }
  return "unknown";
}

absl::string_view DTypeName(DType d) {
  switch (d) {
    case DType::kFloat32:
      return "f32";
    case DType::kFloat16:
      return "f16";
    case DType::kBFloat16:
      return "bf16";
  }
  return "unknown";
}

}  // namespace cbloss
