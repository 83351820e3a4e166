// Copyright 2026 The cbloss Authors.

#include "loss_config.h"

#include <algorithm>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"

namespace cbloss::cli {
namespace {

using ::google::protobuf::Descriptor;
using ::google::protobuf::EnumDescriptor;
using ::google::protobuf::EnumValueDescriptor;
using ::google::protobuf::FieldDescriptor;
using ::google::protobuf::Reflection;

// What the descriptor does not say about a field. Flags appear in --help in
// this order, then the fields missing here in field order.
struct FieldInfo {
  const char* field;
  const char* flag;  // the flag and text key, if not the field's own name
  const char* help;
  bool shapes_class_weights = false;  // also a flag of `weights`
  // LossConfigText shows the field only for this loss (UNSPECIFIED: always).
  v1::LossType shown_for = v1::LOSS_TYPE_UNSPECIFIED;
};

const FieldInfo kFieldTable[] = {
    {"beta", nullptr, "effective-number beta in [0, 1]", true},
    {"weighting", "scheme",
     "weighting: effective_number, inverse_frequency, "
     "inverse_sqrt_frequency, none",
     true},
    {"loss_type", "loss",
     "softmax, sigmoid, focal, softmax_bce (and LOSS.md sections 9 and 10 "
     "types)"},
    {"gamma", nullptr, "focal gamma >= 0"},
    {"reduction", nullptr, "mean, sum, element_mean, weighted_mean, none"},
    {"ignore_index", nullptr, "label value of ignored samples (default -100)"},
    {"tau", nullptr, "logit_adjusted: temperature tau >= 0 (default 1)", false,
     v1::LOSS_TYPE_LOGIT_ADJUSTED},
    {"max_margin", nullptr, "ldam: largest margin > 0 (default 0.5)", false,
     v1::LOSS_TYPE_LDAM},
    {"scale", nullptr, "ldam: logit scale > 0 (default 30)", false,
     v1::LOSS_TYPE_LDAM},
    {"drw_start_epoch", nullptr,
     "deferred re-weighting: class weights are 1 before this epoch"},
    {"seesaw_p", nullptr, "seesaw: mitigation exponent p >= 0 (default 0.8)",
     false, v1::LOSS_TYPE_SEESAW},
    {"seesaw_q", nullptr, "seesaw: compensation exponent q >= 0 (default 2)",
     false, v1::LOSS_TYPE_SEESAW},
    {"seesaw_eps", nullptr, "seesaw: probability floor eps > 0 (default 0.01)",
     false, v1::LOSS_TYPE_SEESAW},
    {"eql_lambda", nullptr,
     "eql: tail frequency threshold in [0, 1] (default 0.00177)", false,
     v1::LOSS_TYPE_EQL},
    {"eqlv2_gamma", nullptr, "eql_v2: sigmoid slope >= 0 (default 12)", false,
     v1::LOSS_TYPE_EQL_V2},
    {"eqlv2_mu", nullptr, "eql_v2: sigmoid centre (default 0.8)", false,
     v1::LOSS_TYPE_EQL_V2},
    {"eqlv2_alpha", nullptr,
     "eql_v2: positive weight amplitude >= 0 (default 4)", false,
     v1::LOSS_TYPE_EQL_V2},
    {"vs_gamma", nullptr, "vs: logit scale exponent >= 0 (default 0.3)", false,
     v1::LOSS_TYPE_VS},
    {"focal_alpha", nullptr,
     "focal, sigmoid: alpha balancing in [0, 1] (default: none)"},
};

// Enum flags are checked in this order: the first bad one is reported.
const char* const kEnumCheckOrder[] = {"loss_type", "reduction", "weighting"};

const FieldInfo* InfoOf(const FieldDescriptor* field) {
  for (const FieldInfo& info : kFieldTable) {
    if (field->name() == info.field) return &info;
  }
  return nullptr;
}

// "loss" for loss_type, "ignore_index" for ignore_index.
std::string KeyOf(const FieldDescriptor* field) {
  const FieldInfo* info = InfoOf(field);
  return info != nullptr && info->flag != nullptr ? info->flag : field->name();
}

bool IsScalar(const FieldDescriptor* field) {
  return !field->is_repeated() &&
         field->cpp_type() != FieldDescriptor::CPPTYPE_MESSAGE;
}

// The LossConfig fields in flag order: the table's, then the others.
std::vector<const FieldDescriptor*> FieldsInFlagOrder() {
  const Descriptor* d = v1::LossConfig::descriptor();
  std::vector<const FieldDescriptor*> fields;
  for (const FieldInfo& info : kFieldTable) {
    if (const FieldDescriptor* f = d->FindFieldByName(info.field)) {
      fields.push_back(f);
    }
  }
  for (int i = 0; i < d->field_count(); ++i) {
    if (InfoOf(d->field(i)) == nullptr) fields.push_back(d->field(i));
  }
  return fields;
}

// "LOSS_TYPE_" for LossType: the value 0's name without UNSPECIFIED.
std::string EnumPrefix(const EnumDescriptor* type) {
  const EnumValueDescriptor* zero = type->FindValueByNumber(0);
  if (zero == nullptr || !absl::EndsWith(zero->name(), "UNSPECIFIED")) {
    return "";
  }
  return zero->name().substr(0, zero->name().size() - 11);
}

std::string ShortEnumName(const FieldDescriptor* field, int number) {
  const EnumValueDescriptor* v = field->enum_type()->FindValueByNumber(number);
  if (v == nullptr) return "";
  const std::string prefix = EnumPrefix(field->enum_type());
  return absl::AsciiStrToLower(absl::StartsWith(v->name(), prefix)
                                   ? v->name().substr(prefix.size())
                                   : v->name());
}

std::string ValueText(const v1::LossConfig& c, const FieldDescriptor* field) {
  const Reflection* r = c.GetReflection();
  switch (field->cpp_type()) {
    case FieldDescriptor::CPPTYPE_DOUBLE:
      return absl::StrCat(r->GetDouble(c, field));
    case FieldDescriptor::CPPTYPE_FLOAT:
      return absl::StrCat(r->GetFloat(c, field));
    case FieldDescriptor::CPPTYPE_INT32:
      return absl::StrCat(r->GetInt32(c, field));
    case FieldDescriptor::CPPTYPE_INT64:
      return absl::StrCat(r->GetInt64(c, field));
    case FieldDescriptor::CPPTYPE_UINT32:
      return absl::StrCat(r->GetUInt32(c, field));
    case FieldDescriptor::CPPTYPE_UINT64:
      return absl::StrCat(r->GetUInt64(c, field));
    case FieldDescriptor::CPPTYPE_BOOL:
      return r->GetBool(c, field) ? "true" : "false";
    case FieldDescriptor::CPPTYPE_ENUM:
      return ShortEnumName(field, r->GetEnumValue(c, field));
    case FieldDescriptor::CPPTYPE_STRING:
      return r->GetString(c, field);
    case FieldDescriptor::CPPTYPE_MESSAGE:
      break;
  }
  return "";
}

}  // namespace

absl::StatusOr<int> ParseEnumName(const EnumDescriptor* type,
                                  const std::string& text,
                                  const std::string& flag) {
  const std::string upper = absl::AsciiStrToUpper(text);
  const EnumValueDescriptor* v = type->FindValueByName(upper);
  if (v == nullptr) v = type->FindValueByName(EnumPrefix(type) + upper);
  if (v == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, " '", text, "' is not known"));
  }
  return v->number();
}

void LossConfigFlags::AddTo(CLI::App* command, Fields fields) {
  for (const FieldDescriptor* field : FieldsInFlagOrder()) {
    const FieldInfo* info = InfoOf(field);
    if (!IsScalar(field)) continue;
    if (fields == kClassWeightFields &&
        (info == nullptr || !info->shapes_class_weights)) {
      continue;
    }
    Flag& flag = flags_.emplace_back();
    flag.field = field;
    flag.name = "--" + absl::StrReplaceAll(KeyOf(field), {{"_", "-"}});
    const std::string help = info != nullptr
                                 ? std::string(info->help)
                                 : absl::StrCat("LossConfig.", field->name());
    auto add = [&](auto initial) -> CLI::Option* {
      flag.value = initial;
      return command->add_option(flag.name,
                                 std::get<decltype(initial)>(flag.value), help);
    };
    switch (field->cpp_type()) {
      case FieldDescriptor::CPPTYPE_DOUBLE:
        flag.option = add(0.0);
        break;
      case FieldDescriptor::CPPTYPE_FLOAT:
        flag.option = add(0.0f);
        break;
      case FieldDescriptor::CPPTYPE_INT32:
        flag.option = add(int32_t{0});
        break;
      case FieldDescriptor::CPPTYPE_INT64:
        flag.option = add(int64_t{0});
        break;
      case FieldDescriptor::CPPTYPE_UINT32:
        flag.option = add(uint32_t{0});
        break;
      case FieldDescriptor::CPPTYPE_UINT64:
        flag.option = add(uint64_t{0});
        break;
      case FieldDescriptor::CPPTYPE_BOOL:
        flag.value = false;
        flag.option =
            command->add_flag(flag.name, std::get<bool>(flag.value), help);
        break;
      default:  // strings and enum names
        flag.option = add(std::string());
        break;
    }
  }
}

void LossConfigFlags::SetScalar(const Flag& flag, v1::LossConfig* config) {
  const Reflection* r = config->GetReflection();
  const FieldDescriptor* field = flag.field;
  switch (field->cpp_type()) {
    case FieldDescriptor::CPPTYPE_DOUBLE:
      r->SetDouble(config, field, std::get<double>(flag.value));
      break;
    case FieldDescriptor::CPPTYPE_FLOAT:
      r->SetFloat(config, field, std::get<float>(flag.value));
      break;
    case FieldDescriptor::CPPTYPE_INT32:
      r->SetInt32(config, field, std::get<int32_t>(flag.value));
      break;
    case FieldDescriptor::CPPTYPE_INT64:
      r->SetInt64(config, field, std::get<int64_t>(flag.value));
      break;
    case FieldDescriptor::CPPTYPE_UINT32:
      r->SetUInt32(config, field, std::get<uint32_t>(flag.value));
      break;
    case FieldDescriptor::CPPTYPE_UINT64:
      r->SetUInt64(config, field, std::get<uint64_t>(flag.value));
      break;
    case FieldDescriptor::CPPTYPE_BOOL:
      r->SetBool(config, field, std::get<bool>(flag.value));
      break;
    case FieldDescriptor::CPPTYPE_STRING:
      r->SetString(config, field, std::get<std::string>(flag.value));
      break;
    default:  // enums: see Config
      break;
  }
}

std::vector<const LossConfigFlags::Flag*> LossConfigFlags::EnumFlags() const {
  std::vector<const Flag*> enums;
  for (const char* name : kEnumCheckOrder) {
    for (const Flag& flag : flags_) {
      if (flag.field->name() == name) enums.push_back(&flag);
    }
  }
  for (const Flag& flag : flags_) {
    if (flag.field->cpp_type() == FieldDescriptor::CPPTYPE_ENUM &&
        std::find(enums.begin(), enums.end(), &flag) == enums.end()) {
      enums.push_back(&flag);
    }
  }
  return enums;
}

absl::StatusOr<v1::LossConfig> LossConfigFlags::Config() const {
  v1::LossConfig config;
  for (const Flag* flag : EnumFlags()) {
    const std::string& text = std::get<std::string>(flag->value);
    if (flag->option->count() == 0 || text.empty()) continue;
    absl::StatusOr<int> value =
        ParseEnumName(flag->field->enum_type(), text, flag->name);
    if (!value.ok()) return value.status();
    config.GetReflection()->SetEnumValue(&config, flag->field, *value);
  }
  for (const Flag& flag : flags_) {
    if (flag.option->count() > 0) SetScalar(flag, &config);
  }
  return config;
}

std::string LossConfigText(const v1::LossConfig& config) {
  const Descriptor* d = v1::LossConfig::descriptor();
  const Reflection* r = config.GetReflection();
  std::vector<std::string> parts;
  for (int i = 0; i < d->field_count(); ++i) {
    const FieldDescriptor* field = d->field(i);
    if (!IsScalar(field) || !r->HasField(config, field)) continue;
    const FieldInfo* info = InfoOf(field);
    if (info != nullptr && info->shown_for != v1::LOSS_TYPE_UNSPECIFIED &&
        config.loss_type() != info->shown_for) {
      continue;  // LOSS.md section 9 parameters only where their loss uses them
    }
    parts.push_back(absl::StrCat(KeyOf(field), "=", ValueText(config, field)));
  }
  return parts.empty() ? "(service defaults)" : absl::StrJoin(parts, " ");
}

}  // namespace cbloss::cli
