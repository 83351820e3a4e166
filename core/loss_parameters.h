// Copyright 2026 The cbloss Authors.
//
// The scalar loss parameters, as one table: a row per optional scalar field
// of the wire's LossConfig (proto/cbloss/v1/cbloss.proto), with its type, its
// LOSS.md default, its allowed range and the exact wording of its error, the
// LossParams member it sets and the loss types that read it. Everything else
// is derived from the rows: the server's config validation, resolution
// (request over dataset defaults over these defaults) and conversion to
// LossParams (server/loss_config.cc, by protobuf reflection on the field
// `name`), and ValidateLossParams below for callers of the engine that do not
// come through the server (tests, benchmarks).
//
// Adding a scalar parameter: one LossConfig field, its LossParams member and
// default below with one row in core/loss_parameters.cc, the kernel that
// reads it (from RowsArgs::params), and docs (docs/ARCHITECTURE.md).
//
// The enums of LossConfig (loss_type, weighting, reduction) are not rows:
// each maps to an engine enum of core/loss_types.h.
//
// Example:
//   const LossParameter* tau = FindLossParameter("tau");
//   absl::Status s = CheckLossParameter(*tau, 1e300, "config");
//   // INVALID_ARGUMENT "config.tau = 1e+300 must be in [0, 1e+06]"
//
// Thread-safety: the table is immutable; every function is thread-safe.

#ifndef CBLOSS_CORE_LOSS_PARAMETERS_H_
#define CBLOSS_CORE_LOSS_PARAMETERS_H_

#include <cstdint>
#include <limits>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "core/loss_types.h"

namespace cbloss {

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
// Defaults of LOSS.md section 10.
inline constexpr double kDefaultSeesawP = 0.8;
inline constexpr double kDefaultSeesawQ = 2.0;
inline constexpr double kDefaultSeesawEps = 0.01;
inline constexpr double kDefaultEqlLambda = 0.00177;
inline constexpr double kDefaultEqlV2Gamma = 12.0;
inline constexpr double kDefaultEqlV2Mu = 0.8;
inline constexpr double kDefaultEqlV2Alpha = 4.0;
inline constexpr double kDefaultVsGamma = 0.3;
inline constexpr double kNoFocalAlpha =
    std::numeric_limits<double>::quiet_NaN();
// Upper bounds of the section 10 exponents and amplitudes, for the same
// reason: z + p log(n ratio) + q log(p ratio), (max n / n)^vs_gamma and
// 1 + alpha stay finite. The contract sets only the lower bounds.
inline constexpr double kMaxSeesawParameter = 1e6;
inline constexpr double kMaxEqlV2Alpha = 1e6;
inline constexpr double kMaxVsGamma = 1e6;

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
  double tau = kDefaultTau;               // LOGIT_ADJUSTED, VS
  double max_margin = kDefaultMaxMargin;  // LDAM
  double scale = kDefaultScale;           // LDAM
  // LOSS.md section 10.
  double seesaw_p = kDefaultSeesawP;
  double seesaw_q = kDefaultSeesawQ;
  double seesaw_eps = kDefaultSeesawEps;
  double eql_lambda = kDefaultEqlLambda;
  double eqlv2_gamma = kDefaultEqlV2Gamma;
  double eqlv2_mu = kDefaultEqlV2Mu;
  double eqlv2_alpha = kDefaultEqlV2Alpha;
  double vs_gamma = kDefaultVsGamma;
  // FOCAL / SIGMOID alpha balancing; NaN = unset (no alpha factor).
  double focal_alpha = kNoFocalAlpha;
};

// How a parameter's range error reads after "config.<name> = <value> ".
enum class RangeWording {
  kNone,           // any value (no check)
  kIsOutside,      // "is outside [0, 1]"
  kMustBeIn,       // "must be in (0, 1e+06]"
  kFiniteAtLeast,  // "must be finite and >= 0" (the range is [min, inf))
  kFinite          // "must be finite" (the range is (-inf, inf))
};

// Allowed values: between `min` and `max`, each end open or closed. NaN is
// never allowed when there is a check.
struct ParameterRange {
  RangeWording wording = RangeWording::kNone;
  double min = 0.0;
  bool min_open = false;
  double max = 0.0;
  bool max_open = false;
};

enum class ParameterType { kDouble, kInt32 };

// A bit per LossType: which losses read a parameter.
constexpr uint32_t LossTypeBit(LossType t) {
  return uint32_t{1} << static_cast<int>(t);
}
inline constexpr uint32_t kEveryLossType = ~uint32_t{0};

struct LossParameter {
  const char* name;  // the LossConfig field, e.g. "max_margin"
  ParameterType type;
  bool has_default;  // false: unset stays unset (drw_start_epoch; focal_alpha,
                     // whose member is NaN while unset)
  double default_value;
  ParameterRange range;
  // The member it sets; at most one is non-null, and neither for a
  // parameter that resolution consumes (drw_start_epoch decides the weights
  // of a request, LOSS.md section 9, and is not an engine input).
  double LossParams::*double_member;
  int32_t LossParams::*int32_member;
  uint32_t used_by;     // LossTypeBit()s, or kEveryLossType
  const char* summary;  // one line, for docs and --help texts
};

// Every row, in LossConfig field order (which is the order of validation).
absl::Span<const LossParameter> LossParameters();

// The row called `name`, or null.
const LossParameter* FindLossParameter(absl::string_view name);

// OK if `value` is allowed for `param`; else INVALID_ARGUMENT
// "<prefix>.<name> = <value> <rule>" (e.g. prefix "config" or
// "dataset.defaults").
absl::Status CheckLossParameter(const LossParameter& param, double value,
                                absl::string_view prefix);

// "[0, 1]", "(0, 1e+06]": the range as its error messages print it.
std::string RangeString(const ParameterRange& range);

// The value of `param` in `params` (its default if it has no member).
double GetLossParameter(const LossParameter& param, const LossParams& params);
// Sets the member of `param` (nothing if it has none).
void SetLossParameter(const LossParameter& param, double value,
                      LossParams* params);

// Checks every row against `params`, with the messages of the server's
// checks ("config.beta = 1.5 is outside [0, 1]"). For callers of the engine
// that build LossParams themselves; the server checks the wire config
// instead (once per request) and the engine trusts what it is given.
absl::Status ValidateLossParams(const LossParams& params);

}  // namespace cbloss

#endif  // CBLOSS_CORE_LOSS_PARAMETERS_H_
