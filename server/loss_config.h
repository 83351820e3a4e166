// Copyright 2026 The cbloss Authors.
//
// The wire's LossConfig and the engine's LossParams: validation of enum
// values and ranges, field-by-field resolution (request overrides dataset
// defaults, which override LOSS.md's defaults; API.md section 1) and
// conversion. The scalar fields are not listed here: all three follow the
// table of core/loss_parameters.h, matched to LossConfig's fields by name
// through protobuf reflection. Pure functions; thread-safe.

#ifndef CBLOSS_SERVER_LOSS_CONFIG_H_
#define CBLOSS_SERVER_LOSS_CONFIG_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "cbloss/v1/cbloss.pb.h"
#include "core/loss_parameters.h"
#include "core/loss_types.h"

namespace cbloss::server {

// Checks enum values and ranges of the set fields of `config` (enums in
// field order, then the table's rows in order). `field` prefixes messages,
// e.g. "config" or "dataset.defaults".
absl::Status ValidateLossConfig(const v1::LossConfig& config,
                                absl::string_view field);

// Overlays the set fields of `request` on `defaults`, fills what is still
// unset with LOSS.md's defaults, and returns the result with every field set.
v1::LossConfig ResolveLossConfig(const v1::LossConfig& defaults,
                                 const v1::LossConfig& request);

// Engine parameters of a resolved, validated config (drw_start_epoch is not
// one: ResolveComputation decides the weights with it).
absl::StatusOr<LossParams> ToLossParams(const v1::LossConfig& resolved);

// Engine scheme of a wire scheme (UNSPECIFIED = effective number).
WeightingScheme ToWeightingScheme(v1::WeightingScheme scheme);
// Engine reduction of a wire reduction (UNSPECIFIED = mean).
Reduction ToReduction(v1::Reduction reduction);

// Wire dtype to engine dtype (UNSPECIFIED = float32). INVALID_ARGUMENT
// naming `field` for values outside the enum.
absl::StatusOr<DType> ToDType(v1::DType dtype, absl::string_view field);
v1::DType ToWireDType(DType dtype);

}  // namespace cbloss::server

#endif  // CBLOSS_SERVER_LOSS_CONFIG_H_
