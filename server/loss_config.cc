// Copyright 2026 The cbloss Authors.

#include "server/loss_config.h"

#include <cstdio>
#include <cstdlib>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/loss_parameters.h"
#include "core/status_macros.h"
#include "google/protobuf/descriptor.h"

namespace cbloss::server {
namespace {

using google::protobuf::FieldDescriptor;
using google::protobuf::Reflection;

// The enum fields of LossConfig, in field order, with the wire value an
// unset (UNSPECIFIED, 0) field resolves to (LOSS.md section 1).
struct EnumField {
  const char* name;
  int default_value;
};
constexpr EnumField kEnumFields[] = {
    {"loss_type", v1::LOSS_TYPE_SOFTMAX},
    {"weighting", v1::WEIGHTING_SCHEME_EFFECTIVE_NUMBER},
    {"reduction", v1::REDUCTION_MEAN},
};

// A table row (core/loss_parameters.h) and its LossConfig field.
struct ScalarField {
  const LossParameter* param;
  const FieldDescriptor* field;
};

struct ConfigFields {
  std::vector<std::pair<const EnumField*, const FieldDescriptor*>> enums;
  std::vector<ScalarField> scalars;
};

[[noreturn]] void TableMismatch(absl::string_view name) {
  std::fprintf(stderr,
               "core/loss_parameters.cc and cbloss.v1.LossConfig disagree on "
               "field '%.*s'\n",
               static_cast<int>(name.size()), name.data());
  std::abort();
}

// The descriptors of every table row, found once by name. A row without a
// field of its type is a build mistake, caught by the first request (and by
// tests/server/loss_config_test.cc).
const ConfigFields& Fields() {
  static const ConfigFields* fields = [] {
    auto* f = new ConfigFields;
    const google::protobuf::Descriptor* d = v1::LossConfig::descriptor();
    for (const EnumField& e : kEnumFields) {
      const FieldDescriptor* field = d->FindFieldByName(e.name);
      if (field == nullptr ||
          field->cpp_type() != FieldDescriptor::CPPTYPE_ENUM)
        TableMismatch(e.name);
      f->enums.emplace_back(&e, field);
    }
    for (const LossParameter& p : LossParameters()) {
      const FieldDescriptor* field = d->FindFieldByName(p.name);
      const auto want = p.type == ParameterType::kDouble
                            ? FieldDescriptor::CPPTYPE_DOUBLE
                            : FieldDescriptor::CPPTYPE_INT32;
      if (field == nullptr || field->cpp_type() != want ||
          !field->has_presence()) {
        TableMismatch(p.name);
      }
      f->scalars.push_back({&p, field});
    }
    return f;
  }();
  return *fields;
}

double GetScalar(const v1::LossConfig& config, const FieldDescriptor* field) {
  const Reflection* r = config.GetReflection();
  if (field->cpp_type() == FieldDescriptor::CPPTYPE_DOUBLE) {
    return r->GetDouble(config, field);
  }
  return r->GetInt32(config, field);
}

void SetScalar(double value, const FieldDescriptor* field,
               v1::LossConfig* config) {
  const Reflection* r = config->GetReflection();
  if (field->cpp_type() == FieldDescriptor::CPPTYPE_DOUBLE) {
    r->SetDouble(config, field, value);
  } else {
    r->SetInt32(config, field, static_cast<int32_t>(value));
  }
}

absl::Status EnumError(absl::string_view field, int value) {
  return absl::InvalidArgumentError(
      absl::StrCat(field, " = ", value, " is not a known value"));
}

}  // namespace

absl::Status ValidateLossConfig(const v1::LossConfig& config,
                                absl::string_view field) {
  const Reflection* r = config.GetReflection();
  for (const auto& [e, descriptor] : Fields().enums) {
    const int value = r->GetEnumValue(config, descriptor);
    if (descriptor->enum_type()->FindValueByNumber(value) == nullptr) {
      return EnumError(absl::StrCat(field, ".", e->name), value);
    }
  }
  for (const ScalarField& s : Fields().scalars) {
    if (!r->HasField(config, s.field)) continue;
    CBLOSS_RETURN_IF_ERROR(
        CheckLossParameter(*s.param, GetScalar(config, s.field), field));
  }
  return absl::OkStatus();
}

v1::LossConfig ResolveLossConfig(const v1::LossConfig& defaults,
                                 const v1::LossConfig& request) {
  v1::LossConfig out = defaults;
  const Reflection* r = out.GetReflection();
  for (const auto& [e, descriptor] : Fields().enums) {
    if (const int v = r->GetEnumValue(request, descriptor); v != 0) {
      r->SetEnumValue(&out, descriptor, v);
    }
    if (r->GetEnumValue(out, descriptor) == 0) {
      r->SetEnumValue(&out, descriptor, e->default_value);
    }
  }
  // SEESAW, EQL and EQL_V2 carry their own re-weighting (LOSS.md section
  // 10): a weighting the request sets is checked (it must be NONE), a
  // dataset's default weighting does not apply to them.
  const v1::LossType t = out.loss_type();
  if (t == v1::LOSS_TYPE_SEESAW || t == v1::LOSS_TYPE_EQL ||
      t == v1::LOSS_TYPE_EQL_V2) {
    out.set_weighting(request.weighting() != v1::WEIGHTING_SCHEME_UNSPECIFIED
                          ? request.weighting()
                          : v1::WEIGHTING_SCHEME_NONE);
  }
  for (const ScalarField& s : Fields().scalars) {
    if (r->HasField(request, s.field)) {
      SetScalar(GetScalar(request, s.field), s.field, &out);
    } else if (!r->HasField(out, s.field) && s.param->has_default) {
      SetScalar(s.param->default_value, s.field, &out);
    }
  }
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
    case v1::LOSS_TYPE_SEESAW:
      p.loss_type = LossType::kSeesaw;
      break;
    case v1::LOSS_TYPE_EQL:
      p.loss_type = LossType::kEql;
      break;
    case v1::LOSS_TYPE_EQL_V2:
      p.loss_type = LossType::kEqlV2;
      break;
    case v1::LOSS_TYPE_VS:
      p.loss_type = LossType::kVs;
      break;
    default:
      return EnumError("config.loss_type", resolved.loss_type());
  }
  p.weighting = ToWeightingScheme(resolved.weighting());
  p.reduction = ToReduction(resolved.reduction());
  const Reflection* r = resolved.GetReflection();
  for (const ScalarField& s : Fields().scalars) {
    if (r->HasField(resolved, s.field)) {
      SetLossParameter(*s.param, GetScalar(resolved, s.field), &p);
    }
  }
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

Reduction ToReduction(v1::Reduction reduction) {
  switch (reduction) {
    case v1::REDUCTION_SUM:
      return Reduction::kSum;
    case v1::REDUCTION_ELEMENT_MEAN:
      return Reduction::kElementMean;
    case v1::REDUCTION_WEIGHTED_MEAN:
      return Reduction::kWeightedMean;
    case v1::REDUCTION_NONE:
      return Reduction::kNone;
    default:
      return Reduction::kMean;
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

}  // namespace cbloss::server
