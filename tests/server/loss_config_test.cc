// Copyright 2026 The cbloss Authors.
//
// The loss-parameter table (core/loss_parameters.h) against the wire's
// LossConfig, and the config functions derived from it: every optional
// scalar field has its row and every row its field; validation,
// resolution and conversion follow the rows.

#include "server/loss_config.h"

#include <set>
#include <string>

#include "core/loss_parameters.h"
#include "google/protobuf/descriptor.h"
#include "gtest/gtest.h"

namespace cbloss::server {
namespace {

using google::protobuf::FieldDescriptor;

TEST(LossParameterTable, MatchesLossConfigFieldByField) {
  const google::protobuf::Descriptor* d = v1::LossConfig::descriptor();
  std::set<std::string> rows;
  for (const LossParameter& p : LossParameters()) {
    rows.insert(p.name);
    const FieldDescriptor* f = d->FindFieldByName(p.name);
    ASSERT_NE(f, nullptr) << p.name;
    EXPECT_TRUE(f->has_presence()) << p.name;
    EXPECT_EQ(f->cpp_type(), p.type == ParameterType::kDouble
                                 ? FieldDescriptor::CPPTYPE_DOUBLE
                                 : FieldDescriptor::CPPTYPE_INT32)
        << p.name;
  }
  for (int i = 0; i < d->field_count(); ++i) {
    const FieldDescriptor* f = d->field(i);
    if (f->cpp_type() == FieldDescriptor::CPPTYPE_ENUM) continue;
    EXPECT_TRUE(rows.count(f->name())) << f->name() << " has no table row";
  }
}

TEST(LossParameterTable, RowsAreInFieldOrder) {
  const google::protobuf::Descriptor* d = v1::LossConfig::descriptor();
  int last = 0;
  for (const LossParameter& p : LossParameters()) {
    const int number = d->FindFieldByName(p.name)->number();
    EXPECT_GT(number, last) << p.name;
    last = number;
  }
}

TEST(LossConfig, ValidationMessagesNameTheFieldAndRange) {
  v1::LossConfig c;
  c.set_beta(1.5);
  EXPECT_EQ(ValidateLossConfig(c, "config").message(),
            "config.beta = 1.5 is outside [0, 1]");
  c.clear_beta();
  c.set_gamma(-1);
  EXPECT_EQ(ValidateLossConfig(c, "dataset.defaults").message(),
            "dataset.defaults.gamma = -1 must be finite and >= 0");
  c.clear_gamma();
  c.set_tau(1e300);
  EXPECT_EQ(ValidateLossConfig(c, "config").message(),
            "config.tau = 1e+300 must be in [0, 1e+06]");
  c.clear_tau();
  c.set_max_margin(0);
  EXPECT_EQ(ValidateLossConfig(c, "config").message(),
            "config.max_margin = 0 must be in (0, 1e+06]");
  c.clear_max_margin();
  c.set_scale(1e7);
  EXPECT_EQ(ValidateLossConfig(c, "config").message(),
            "config.scale = 1e+07 must be in (0, 1e+06]");
  c.clear_scale();
  c.set_loss_type(static_cast<v1::LossType>(99));
  EXPECT_EQ(ValidateLossConfig(c, "config").message(),
            "config.loss_type = 99 is not a known value");
}

TEST(LossConfig, ResolutionIsRequestOverDefaultsOverLossMd) {
  v1::LossConfig defaults, request;
  defaults.set_loss_type(v1::LOSS_TYPE_FOCAL);
  defaults.set_gamma(1.0);
  defaults.set_drw_start_epoch(3);
  request.set_gamma(0.5);
  const v1::LossConfig r = ResolveLossConfig(defaults, request);
  EXPECT_EQ(r.loss_type(), v1::LOSS_TYPE_FOCAL);
  EXPECT_EQ(r.weighting(), v1::WEIGHTING_SCHEME_EFFECTIVE_NUMBER);
  EXPECT_EQ(r.reduction(), v1::REDUCTION_MEAN);
  EXPECT_EQ(r.gamma(), 0.5);
  EXPECT_EQ(r.beta(), kDefaultBeta);
  EXPECT_EQ(r.ignore_index(), kDefaultIgnoreIndex);
  EXPECT_EQ(r.tau(), kDefaultTau);
  EXPECT_EQ(r.max_margin(), kDefaultMaxMargin);
  EXPECT_EQ(r.scale(), kDefaultScale);
  EXPECT_EQ(r.drw_start_epoch(), 3);
  // Without a value anywhere, drw_start_epoch stays unset.
  EXPECT_FALSE(ResolveLossConfig({}, {}).has_drw_start_epoch());
}

TEST(LossConfig, ToLossParamsSetsEveryMember) {
  v1::LossConfig c;
  c.set_loss_type(v1::LOSS_TYPE_LDAM);
  c.set_reduction(v1::REDUCTION_SUM);
  c.set_ignore_index(7);
  c.set_max_margin(0.25);
  c.set_scale(16);
  absl::StatusOr<LossParams> p = ToLossParams(ResolveLossConfig({}, c));
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->loss_type, LossType::kLdam);
  EXPECT_EQ(p->reduction, Reduction::kSum);
  EXPECT_EQ(p->ignore_index, 7);
  EXPECT_EQ(p->max_margin, 0.25);
  EXPECT_EQ(p->scale, 16);
  EXPECT_EQ(p->beta, kDefaultBeta);
}

}  // namespace
}  // namespace cbloss::server
