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

// True for the section 9 losses whose logits use log n_j or n_j^(-1/4),
// which need every class count >= 1 (not SOFTMAX_FOCAL).
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

// Defaults of LOSS.md section 1.
inline constexpr double kDefaultBeta = 0.9999;
inline constexpr double kDefaultGamma = 2.0;
inline constexpr int32_t kDefaultIgnoreIndex = -100;
// Defaults of LOSS.md section 9.
inline constexpr double kDefaultTau = 1.0;
inline constexpr double kDefaultMaxMargin = 0.5;
inline constexpr double kDefaultScale = 30.0;
// Upper bounds of the section 9 parameters, so shifted logits
// (z + tau log(n/N), scale (z - Delta)) and their sums over a batch stay far
// inside float64 for every finite float32 logit (LOSS.md section 7: every
// result finite). Values used in practice: tau <= 2, max_margin <= 1,
// scale 10 to 64. The request fuzzer found 1e40 and 9e307 overflowing.
inline constexpr double kMaxTau = 1e6;
inline constexpr double kMaxMargin = 1e6;
inline constexpr double kMaxScale = 1e6;

// Every parameter of one loss computation, fully resolved (no "unset"). Each
// scalar member is set through its row of the parameter table
// (core/loss_parameters.cc), which holds its range and wire name.
struct LossParams {
  LossType loss_type = LossType::kSoftmax;
  WeightingScheme weighting = WeightingScheme::kEffectiveNumber;
  double beta = kDefaultBeta;
  double gamma = kDefaultGamma;
  Reduction reduction = Reduction::kMean;
  int32_t ignore_index = kDefaultIgnoreIndex;
  double tau = kDefaultTau;               // LOGIT_ADJUSTED
  double max_margin = kDefaultMaxMargin;  // LDAM
  double scale = kDefaultScale;           // LDAM
};

// Short lower-case names, as the CLI and docs spell them ("focal", "mean").
absl::string_view LossTypeName(LossType t);
absl::string_view WeightingSchemeName(WeightingScheme s);
absl::string_view ReductionName(Reduction r);
absl::string_view DTypeName(DType d);

}  // namespace cbloss

#endif  // CBLOSS_CORE_LOSS_TYPES_H_
