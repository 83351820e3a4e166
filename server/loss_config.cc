// Copyright 2026 The cbloss Authors.

#include "server/loss_config.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "core/class_weights.h"

namespace cbloss {
namespace {

absl::Status EnumError(absl::string_view field, int value) {
  return absl::InvalidArgumentError(
      absl::StrCat(field, " = ", value, " is not a known value"));
}

}  // namespace

absl::Status ValidateLossConfig(const v1::LossConfig& config,
                                absl::string_view field) {
  if (!v1::LossType_IsValid(config.loss_type())) {
    return EnumError(absl::StrCat(field, ".loss_type"), config.loss_type());
  }
  if (!v1::WeightingScheme_IsValid(config.weighting())) {
    return EnumError(absl::StrCat(field, ".weighting"), config.weighting());
  }
  if (!v1::Reduction_IsValid(config.reduction())) {
    return EnumError(absl::StrCat(field, ".reduction"), config.reduction());
  }
  if (config.has_beta() && !(config.beta() >= 0.0 && config.beta() <= 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ".beta = ", config.beta(), " is outside [0, 1]"));
  }
  if (config.has_gamma() &&
      !(std::isfinite(config.gamma()) && config.gamma() >= 0.0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        field, ".gamma = ", config.gamma(), " must be finite and >= 0"));
  }
  // Upper bounds: see core/loss_types.h.
  if (config.has_tau() && !(config.tau() >= 0 && config.tau() <= kMaxTau)) {
    return absl::InvalidArgumentError(absl::StrCat(
        field, ".tau = ", config.tau(), " must be in [0, ", kMaxTau, "]"));
  }
  if (config.has_max_margin() &&
      !(config.max_margin() > 0 && config.max_margin() <= kMaxMargin)) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ".max_margin = ", config.max_margin(),
                     " must be in (0, ", kMaxMargin, "]"));
  }
  if (config.has_scale() &&
      !(config.scale() > 0 && config.scale() <= kMaxScale)) {
    return absl::InvalidArgumentError(absl::StrCat(
        field, ".scale = ", config.scale(), " must be in (0, ", kMaxScale, "]"));
  }
  return absl::OkStatus();
}

v1::LossConfig ResolveLossConfig(const v1::LossConfig& defaults,
                                 const v1::LossConfig& request) {
  v1::LossConfig out = defaults;
  if (request.loss_type() != v1::LOSS_TYPE_UNSPECIFIED) {
    out.set_loss_type(request.loss_type());
  }
  if (request.weighting() != v1::WEIGHTING_SCHEME_UNSPECIFIED) {
    out.set_weighting(request.weighting());
  }
  if (request.reduction() != v1::REDUCTION_UNSPECIFIED) {
    out.set_reduction(request.reduction());
  }
  if (request.has_beta()) out.set_beta(request.beta());
  if (request.has_gamma()) out.set_gamma(request.gamma());
  if (request.has_ignore_index()) out.set_ignore_index(request.ignore_index());
  if (request.has_tau()) out.set_tau(request.tau());
  if (request.has_max_margin()) out.set_max_margin(request.max_margin());
  if (request.has_scale()) out.set_scale(request.scale());
  if (request.has_drw_start_epoch()) {
    out.set_drw_start_epoch(request.drw_start_epoch());
  }

  if (out.loss_type() == v1::LOSS_TYPE_UNSPECIFIED) {
    out.set_loss_type(v1::LOSS_TYPE_SOFTMAX);
  }
  if (out.weighting() == v1::WEIGHTING_SCHEME_UNSPECIFIED) {
    out.set_weighting(v1::WEIGHTING_SCHEME_EFFECTIVE_NUMBER);
  }
  if (out.reduction() == v1::REDUCTION_UNSPECIFIED) {
    out.set_reduction(v1::REDUCTION_MEAN);
  }
  if (!out.has_beta()) out.set_beta(kDefaultBeta);
  if (!out.has_gamma()) out.set_gamma(kDefaultGamma);
  if (!out.has_ignore_index()) out.set_ignore_index(kDefaultIgnoreIndex);
  if (!out.has_tau()) out.set_tau(kDefaultTau);
  if (!out.has_max_margin()) out.set_max_margin(kDefaultMaxMargin);
  if (!out.has_scale()) out.set_scale(kDefaultScale);
  return out;
}

absl::StatusOr<LossParams> ToLossParams(const v1::LossConfig& resolved) {
  LossParams p;
  switch (resolved.loss_type()) {
    case v1::LOSS_TYPE_SOFTMAX:
      p.loss_type = LossType::kSoftmax;
      break;
    case v1::LOSS_TYPE_SIGMOID:
      p.loss_type = LossType::kSigmoid;
      break;
    case v1::LOSS_TYPE_FOCAL:
      p.loss_type = LossType::kFocal;
      break;
    case v1::LOSS_TYPE_SOFTMAX_BCE:
      p.loss_type = LossType::kSoftmaxBce;
      break;
    case v1::LOSS_TYPE_BALANCED_SOFTMAX:
      p.loss_type = LossType::kBalancedSoftmax;
      break;
    case v1::LOSS_TYPE_LOGIT_ADJUSTED:
      p.loss_type = LossType::kLogitAdjusted;
      break;
    case v1::LOSS_TYPE_LDAM:
      p.loss_type = LossType::kLdam;
      break;
    case v1::LOSS_TYPE_SOFTMAX_FOCAL:
      p.loss_type = LossType::kSoftmaxFocal;
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("config.loss_type = ", resolved.loss_type(),
                       " is not a known value"));
  }
  p.weighting = ToWeightingScheme(resolved.weighting());
  switch (resolved.reduction()) {
    case v1::REDUCTION_SUM:
      p.reduction = Reduction::kSum;
      break;
    case v1::REDUCTION_ELEMENT_MEAN:
      p.reduction = Reduction::kElementMean;
      break;
    case v1::REDUCTION_WEIGHTED_MEAN:
      p.reduction = Reduction::kWeightedMean;
      break;
    case v1::REDUCTION_NONE:
      p.reduction = Reduction::kNone;
      break;
    default:
      p.reduction = Reduction::kMean;
  }
  p.beta = resolved.beta();
  p.gamma = resolved.gamma();
  p.ignore_index = resolved.ignore_index();
  p.tau = resolved.tau();
  p.max_margin = resolved.max_margin();
  p.scale = resolved.scale();
  return p;
}

WeightingScheme ToWeightingScheme(v1::WeightingScheme scheme) {
  switch (scheme) {
    case v1::WEIGHTING_SCHEME_INVERSE_FREQUENCY:
      return WeightingScheme::kInverseFrequency;
    case v1::WEIGHTING_SCHEME_INVERSE_SQRT_FREQUENCY:
      return WeightingScheme::kInverseSqrtFrequency;
    case v1::WEIGHTING_SCHEME_NONE:
      return WeightingScheme::kNone;
    default:
      return WeightingScheme::kEffectiveNumber;
  }
}

absl::StatusOr<DType> ToDType(v1::DType dtype, absl::string_view field) {
  switch (dtype) {
    case v1::DTYPE_UNSPECIFIED:
    case v1::DTYPE_FLOAT32:
      return DType::kFloat32;
    case v1::DTYPE_FLOAT16:
      return DType::kFloat16;
    case v1::DTYPE_BFLOAT16:
      return DType::kBFloat16;
    default:
      return EnumError(field, dtype);
  }
}

v1::DType ToWireDType(DType dtype) {
  switch (dtype) {
    case DType::kFloat16:
      return v1::DTYPE_FLOAT16;
    case DType::kBFloat16:
      return v1::DTYPE_BFLOAT16;
    case DType::kFloat32:
      break;
  }
  return v1::DTYPE_FLOAT32;
}

}  // namespace cbloss
