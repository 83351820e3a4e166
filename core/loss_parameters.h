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
// Adding a scalar parameter: one LossConfig field, one row in
// core/loss_parameters.cc, its LossParams member and default
// (core/loss_types.h), the kernel that reads it, and docs.
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
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "core/loss_types.h"

namespace cbloss {

// How a parameter's range error reads after "config.<name> = <value> ".
enum class RangeWording {
  kNone,          // any value (no check)
  kIsOutside,     // "is outside [0, 1]"
  kMustBeIn,      // "must be in (0, 1e+06]"
  kFiniteAtLeast  // "must be finite and >= 0" (the range is [min, inf))
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
  bool has_default;  // false: unset stays unset (drw_start_epoch)
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
