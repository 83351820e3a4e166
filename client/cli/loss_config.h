// Copyright 2026 The cbloss Authors.
//
// v1::LossConfig on the command line, derived from its protobuf descriptor:
// every scalar field becomes a flag `--field-name-with-dashes` (the three
// enums have the short names --loss, --scheme and --reduction), its value is
// set in the config only if the flag is given, and the config prints as
// `loss=focal beta=0.9999 ...`. A new LossConfig field is a new flag of
// `loss` and `datasets put` with no CLI edit; its help text is
// "LossConfig.<field>" until kFieldTable in loss_config.cc gives one.
//
// Enum values are the value names without their prefix, any case
// ("focal", "inverse_frequency"), or the full names ("LOSS_TYPE_FOCAL").
//
// Example:
//   LossConfigFlags flags;
//   flags.AddTo(loss_command, LossConfigFlags::kAllFields);
//   ... parse ...
//   absl::StatusOr<v1::LossConfig> config = flags.Config();

#ifndef CBLOSS_CLIENT_CLI_LOSS_CONFIG_H_
#define CBLOSS_CLIENT_CLI_LOSS_CONFIG_H_

#include <cstdint>
#include <deque>
#include <string>
#include <variant>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/statusor.h"
#include "cbloss/v1/cbloss.pb.h"
#include "google/protobuf/descriptor.h"

namespace cbloss::cli {

class LossConfigFlags {
 public:
  enum Fields {
    kClassWeightFields,  // those that shape the class weights: beta, scheme
    kAllFields,
  };

  // Adds the flags of `fields` to `command`. Call once.
  void AddTo(CLI::App* command, Fields fields);

  // The config of the flags given; INVALID_ARGUMENT ("--loss 'x' is not
  // known") for an enum name that is not one.
  absl::StatusOr<v1::LossConfig> Config() const;

 private:
  struct Flag {
    const google::protobuf::FieldDescriptor* field;
    std::string name;  // "--beta"
    std::variant<double, float, int32_t, int64_t, uint32_t, uint64_t, bool,
                 std::string>
        value;
    CLI::Option* option = nullptr;
  };
  static void SetScalar(const Flag& flag, v1::LossConfig* config);
  // The enum flags, in the order their names are checked.
  std::vector<const Flag*> EnumFlags() const;

  std::deque<Flag> flags_;  // stable addresses: CLI11 writes into `value`
};

// An enum value from its short or full name; `flag` names it in the error.
absl::StatusOr<int> ParseEnumName(const google::protobuf::EnumDescriptor* type,
                                  const std::string& text,
                                  const std::string& flag);

// "loss=focal scheme=effective_number beta=0.9999 ...": the fields set, in
// field order (LOSS.md section 9 parameters only where their loss uses
// them), or "(service defaults)".
std::string LossConfigText(const v1::LossConfig& config);

}  // namespace cbloss::cli

#endif  // CBLOSS_CLIENT_CLI_LOSS_CONFIG_H_
