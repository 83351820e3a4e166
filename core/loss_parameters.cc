// Copyright 2026 The cbloss Authors.

#include "core/loss_parameters.h"

#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "core/status_macros.h"

namespace cbloss {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// One row per optional scalar of LossConfig, in field order. Defaults are
// LOSS.md sections 1 and 9; the upper bounds are core/loss_types.h's.
constexpr LossParameter kLossParameters[] = {
    {"beta",
     ParameterType::kDouble,
     true,
     kDefaultBeta,
     {RangeWording::kIsOutside, 0.0, false, 1.0, false},
     &LossParams::beta,
     nullptr,
     kEveryLossType,
     "effective-number beta of the class weights (LOSS.md section 2)"},
    {"gamma",
     ParameterType::kDouble,
     true,
     kDefaultGamma,
     {RangeWording::kFiniteAtLeast, 0.0, false, kInf, true},
     &LossParams::gamma,
     nullptr,
     LossTypeBit(LossType::kFocal) | LossTypeBit(LossType::kSoftmaxFocal),
     "focusing parameter of the focal losses (LOSS.md sections 4 and 9)"},
    {"ignore_index",
     ParameterType::kInt32,
     true,
     kDefaultIgnoreIndex,
     {},
     nullptr,
     &LossParams::ignore_index,
     kEveryLossType,
     "label value whose samples are ignored (labels mode, LOSS.md section 1)"},
    {"tau",
     ParameterType::kDouble,
     true,
     kDefaultTau,
     {RangeWording::kMustBeIn, 0.0, false, kMaxTau, false},
     &LossParams::tau,
     nullptr,
     LossTypeBit(LossType::kLogitAdjusted),
     "logit adjustment strength (LOSS.md section 9)"},
    {"max_margin",
     ParameterType::kDouble,
     true,
     kDefaultMaxMargin,
     {RangeWording::kMustBeIn, 0.0, true, kMaxMargin, false},
     &LossParams::max_margin,
     nullptr,
     LossTypeBit(LossType::kLdam),
     "largest LDAM margin (LOSS.md section 9)"},
    {"scale",
     ParameterType::kDouble,
     true,
     kDefaultScale,
     {RangeWording::kMustBeIn, 0.0, true, kMaxScale, false},
     &LossParams::scale,
     nullptr,
     LossTypeBit(LossType::kLdam),
     "LDAM logit scale (LOSS.md section 9)"},
    {"drw_start_epoch",
     ParameterType::kInt32,
     false,
     0.0,
     {},
     nullptr,
     nullptr,
     kEveryLossType,
     "first epoch with class weights; before it every weight is 1 "
     "(deferred re-weighting, LOSS.md section 9)"},
    {"seesaw_p",
     ParameterType::kDouble,
     true,
     kDefaultSeesawP,
     {RangeWording::kMustBeIn, 0.0, false, kMaxSeesawParameter, false},
     &LossParams::seesaw_p,
     nullptr,
     LossTypeBit(LossType::kSeesaw),
     "SEESAW mitigation exponent p (LOSS.md section 10)"},
    {"seesaw_q",
     ParameterType::kDouble,
     true,
     kDefaultSeesawQ,
     {RangeWording::kMustBeIn, 0.0, false, kMaxSeesawParameter, false},
     &LossParams::seesaw_q,
     nullptr,
     LossTypeBit(LossType::kSeesaw),
     "SEESAW compensation exponent q (LOSS.md section 10)"},
    {"seesaw_eps",
     ParameterType::kDouble,
     true,
     kDefaultSeesawEps,
     {RangeWording::kMustBeIn, 0.0, true, kMaxSeesawParameter, false},
     &LossParams::seesaw_eps,
     nullptr,
     LossTypeBit(LossType::kSeesaw),
     "SEESAW floor of the label's probability (LOSS.md section 10)"},
    {"eql_lambda",
     ParameterType::kDouble,
     true,
     kDefaultEqlLambda,
     {RangeWording::kIsOutside, 0.0, false, 1.0, false},
     &LossParams::eql_lambda,
     nullptr,
     LossTypeBit(LossType::kEql),
     "EQL frequency threshold lambda of the tail classes (LOSS.md section "
     "10)"},
    {"eqlv2_gamma",
     ParameterType::kDouble,
     true,
     kDefaultEqlV2Gamma,
     {RangeWording::kFiniteAtLeast, 0.0, false, kInf, true},
     &LossParams::eqlv2_gamma,
     nullptr,
     LossTypeBit(LossType::kEqlV2),
     "EQL v2 slope of the negative weights' sigmoid (LOSS.md section 10)"},
    {"eqlv2_mu",
     ParameterType::kDouble,
     true,
     kDefaultEqlV2Mu,
     {RangeWording::kFinite, -kInf, true, kInf, true},
     &LossParams::eqlv2_mu,
     nullptr,
     LossTypeBit(LossType::kEqlV2),
     "EQL v2 centre of the negative weights' sigmoid (LOSS.md section 10)"},
    {"eqlv2_alpha",
     ParameterType::kDouble,
     true,
     kDefaultEqlV2Alpha,
     {RangeWording::kMustBeIn, 0.0, false, kMaxEqlV2Alpha, false},
     &LossParams::eqlv2_alpha,
     nullptr,
     LossTypeBit(LossType::kEqlV2),
     "EQL v2 amplitude of the positive weights (LOSS.md section 10)"},
    {"vs_gamma",
     ParameterType::kDouble,
     true,
     kDefaultVsGamma,
     {RangeWording::kMustBeIn, 0.0, false, kMaxVsGamma, false},
     &LossParams::vs_gamma,
     nullptr,
     LossTypeBit(LossType::kVs),
     "VS multiplicative logit exponent (LOSS.md section 10)"},
    {"focal_alpha",
     ParameterType::kDouble,
     false,
     0.0,
     {RangeWording::kIsOutside, 0.0, false, 1.0, false},
     &LossParams::focal_alpha,
     nullptr,
     LossTypeBit(LossType::kFocal) | LossTypeBit(LossType::kSigmoid),
     "alpha balancing of positives and negatives; unset: none (LOSS.md "
     "section 10)"},
};

bool InRange(const ParameterRange& r, double v) {
  if (r.wording == RangeWording::kNone) return true;
  // Written so that NaN fails every comparison.
  const bool above_min = r.min_open ? v > r.min : v >= r.min;
  const bool below_max = r.max_open ? v < r.max : v <= r.max;
  return above_min && below_max;
}

std::string ValueString(const LossParameter& param, double value) {
  if (param.type == ParameterType::kInt32) {
    return absl::StrCat(static_cast<int64_t>(value));
  }
  return absl::StrCat(value);
}

}  // namespace

absl::Span<const LossParameter> LossParameters() { return kLossParameters; }

const LossParameter* FindLossParameter(absl::string_view name) {
  for (const LossParameter& p : kLossParameters) {
    if (name == p.name) return &p;
  }
  return nullptr;
}

std::string RangeString(const ParameterRange& range) {
  return absl::StrCat(range.min_open ? "(" : "[", range.min, ", ", range.max,
                      range.max_open ? ")" : "]");
}

absl::Status CheckLossParameter(const LossParameter& param, double value,
                                absl::string_view prefix) {
  const ParameterRange& r = param.range;
  if (InRange(r, value)) return absl::OkStatus();
  std::string rule;
  switch (r.wording) {
    case RangeWording::kIsOutside:
      rule = absl::StrCat("is outside ", RangeString(r));
      break;
    case RangeWording::kMustBeIn:
      rule = absl::StrCat("must be in ", RangeString(r));
      break;
    case RangeWording::kFiniteAtLeast:
      rule = absl::StrCat("must be finite and >= ", r.min);
      break;
    case RangeWording::kFinite:
      rule = "must be finite";
      break;
    case RangeWording::kNone:
      break;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      prefix, ".", param.name, " = ", ValueString(param, value), " ", rule));
}

double GetLossParameter(const LossParameter& param, const LossParams& params) {
  if (param.double_member != nullptr) return params.*param.double_member;
  if (param.int32_member != nullptr) return params.*param.int32_member;
  return param.default_value;
}

void SetLossParameter(const LossParameter& param, double value,
                      LossParams* params) {
  if (param.double_member != nullptr) params->*param.double_member = value;
  if (param.int32_member != nullptr) {
    params->*param.int32_member = static_cast<int32_t>(value);
  }
}

absl::Status ValidateLossParams(const LossParams& params) {
  for (const LossParameter& p : kLossParameters) {
    if (p.double_member == nullptr && p.int32_member == nullptr) continue;
    // An optional parameter without a default is NaN while unset.
    if (!p.has_default && std::isnan(GetLossParameter(p, params))) continue;
    CBLOSS_RETURN_IF_ERROR(
        CheckLossParameter(p, GetLossParameter(p, params), "config"));
  }
  return absl::OkStatus();
}

}  // namespace cbloss
