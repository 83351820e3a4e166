// Copyright 2026 The cbloss Authors.
//
// The LossConfig flags of the CLI (client/cli/loss_config.h), derived from
// the proto descriptor: which flags exist, what a command line sets, and how
// a config prints. The flag names and texts are those of docs/CLI.md.

#include "loss_config.h"

#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace cbloss::cli {
namespace {

using ::testing::ElementsAre;
using ::testing::UnorderedElementsAreArray;

std::vector<std::string> LongFlags(const CLI::App& app) {
  std::vector<std::string> names;
  for (const CLI::Option* o : app.get_options()) {
    for (const std::string& name : o->get_lnames()) {
      if (name != "help") names.push_back("--" + name);
    }
  }
  return names;
}

// Parses `args` (after the program name) into a config.
absl::StatusOr<v1::LossConfig> Parse(std::vector<std::string> args) {
  CLI::App app;
  LossConfigFlags flags;
  flags.AddTo(&app, LossConfigFlags::kAllFields);
  std::vector<std::string> reversed(args.rbegin(), args.rend());
  app.parse(reversed);
  return flags.Config();
}

TEST(LossConfigFlags, EveryScalarFieldIsAFlag) {
  CLI::App app;
  LossConfigFlags flags;
  flags.AddTo(&app, LossConfigFlags::kAllFields);
  const std::vector<std::string> documented = {
      "--beta",        "--scheme",          "--loss",        "--gamma",
      "--reduction",   "--ignore-index",    "--tau",         "--max-margin",
      "--scale",       "--drw-start-epoch", "--seesaw-p",    "--seesaw-q",
      "--seesaw-eps",  "--eql-lambda",      "--eqlv2-gamma", "--eqlv2-mu",
      "--eqlv2-alpha", "--vs-gamma",        "--focal-alpha"};
  EXPECT_THAT(LongFlags(app), UnorderedElementsAreArray(documented));
  // One flag per field: a new LossConfig field is a new flag.
  EXPECT_EQ(static_cast<int>(LongFlags(app).size()),
            v1::LossConfig::descriptor()->field_count());
}

TEST(LossConfigFlags, ClassWeightFlagsAreBetaAndScheme) {
  CLI::App app;
  LossConfigFlags flags;
  flags.AddTo(&app, LossConfigFlags::kClassWeightFields);
  EXPECT_THAT(LongFlags(app), ElementsAre("--beta", "--scheme"));
}

TEST(LossConfigFlags, HelpTextsComeFromTheTable) {
  CLI::App app;
  LossConfigFlags flags;
  flags.AddTo(&app, LossConfigFlags::kAllFields);
  EXPECT_EQ(app.get_option("--tau")->get_description(),
            "logit_adjusted: temperature tau >= 0 (default 1)");
  EXPECT_EQ(app.get_option("--scheme")->get_description(),
            "weighting: effective_number, inverse_frequency, "
            "inverse_sqrt_frequency, none");
}

TEST(LossConfigFlags, SetsOnlyTheFieldsGiven) {
  absl::StatusOr<v1::LossConfig> c =
      Parse({"--beta", "0.5", "--loss", "Focal", "--scheme",
             "inverse_frequency", "--ignore-index", "-1", "--reduction",
             "REDUCTION_SUM", "--drw-start-epoch", "3"});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->has_beta());
  EXPECT_EQ(c->beta(), 0.5);
  EXPECT_EQ(c->loss_type(), v1::LOSS_TYPE_FOCAL);
  EXPECT_EQ(c->weighting(), v1::WEIGHTING_SCHEME_INVERSE_FREQUENCY);
  EXPECT_EQ(c->reduction(), v1::REDUCTION_SUM);
  EXPECT_EQ(c->ignore_index(), -1);
  EXPECT_EQ(c->drw_start_epoch(), 3);
  EXPECT_FALSE(c->has_gamma());
  EXPECT_FALSE(c->has_tau());

  c = Parse({"--gamma", "0"});  // a zero is set, not dropped
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->has_gamma());
  EXPECT_EQ(c->loss_type(), v1::LOSS_TYPE_UNSPECIFIED);
}

TEST(LossConfigFlags, UnknownEnumNamesAreInvalidArgument) {
  absl::StatusOr<v1::LossConfig> c = Parse({"--reduction", "median"});
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(c.status().message(), "--reduction 'median' is not known");
  // Several bad names: --loss, then --reduction, then --scheme is reported.
  c = Parse({"--scheme", "x", "--reduction", "y", "--loss", "z"});
  EXPECT_EQ(c.status().message(), "--loss 'z' is not known");
  c = Parse({"--scheme", "x", "--reduction", "y"});
  EXPECT_EQ(c.status().message(), "--reduction 'y' is not known");
}

TEST(ParseEnumName, ShortAndFullNamesInAnyCase) {
  const auto* type = v1::WeightingScheme_descriptor();
  EXPECT_EQ(*ParseEnumName(type, "none", "--scheme"),
            v1::WEIGHTING_SCHEME_NONE);
  EXPECT_EQ(*ParseEnumName(type, "Inverse_Sqrt_Frequency", "--scheme"),
            v1::WEIGHTING_SCHEME_INVERSE_SQRT_FREQUENCY);
  EXPECT_EQ(*ParseEnumName(type, "WEIGHTING_SCHEME_EFFECTIVE_NUMBER", "--s"),
            v1::WEIGHTING_SCHEME_EFFECTIVE_NUMBER);
  EXPECT_FALSE(ParseEnumName(type, "effective", "--scheme").ok());
}

TEST(LossConfigText, FieldOrderAndSection9ParametersOfTheirLossOnly) {
  v1::LossConfig c;
  EXPECT_EQ(LossConfigText(c), "(service defaults)");
  c.set_loss_type(v1::LOSS_TYPE_LDAM);
  c.set_weighting(v1::WEIGHTING_SCHEME_EFFECTIVE_NUMBER);
  c.set_beta(0.9999);
  c.set_gamma(2);
  c.set_reduction(v1::REDUCTION_MEAN);
  c.set_ignore_index(-100);
  c.set_tau(1);
  c.set_max_margin(0.5);
  c.set_scale(30);
  EXPECT_EQ(LossConfigText(c),
            "loss=ldam scheme=effective_number beta=0.9999 gamma=2 "
            "reduction=mean ignore_index=-100 max_margin=0.5 scale=30");
  c.set_loss_type(v1::LOSS_TYPE_LOGIT_ADJUSTED);
  c.set_tau(1.5);
  c.set_drw_start_epoch(3);
  EXPECT_EQ(LossConfigText(c),
            "loss=logit_adjusted scheme=effective_number beta=0.9999 gamma=2 "
            "reduction=mean ignore_index=-100 tau=1.5 drw_start_epoch=3");
}

}  // namespace
}  // namespace cbloss::cli
