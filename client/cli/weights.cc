// Copyright 2026 The cbloss Authors.
//
// `cbloss weights`: the normalised class weights w of LOSS.md section 2.

#include <iostream>
#include <memory>
#include <vector>

#include "absl/strings/str_format.h"
#include "command.h"
#include "loss_config.h"

namespace cbloss::cli {
namespace {

struct WeightsFlags {
  SourceFlags source;
  LossConfigFlags config;
};

int RunWeights(const WeightsFlags& f, const Context& context) {
  absl::StatusOr<client::LossSource> source = f.source.Source();
  if (!source.ok()) return Fail(source.status());
  absl::StatusOr<v1::LossConfig> config = f.config.Config();
  if (!config.ok()) return Fail(config.status());
  absl::StatusOr<v1::ClassWeights> w =
      context.client->GetClassWeights(*source, *config);
  if (!w.ok()) return Fail(w.status());
  if (context.json) {
    json j{{"weights",
            std::vector<double>(w->weights().begin(), w->weights().end())}};
    if (w->dataset_version()) j["dataset_version"] = w->dataset_version();
    PrintJson(j);
    return 0;
  }
  std::cout << absl::StrFormat("%6s %14s\n", "class", "weight");
  for (int j = 0; j < w->weights_size(); ++j) {
    std::cout << absl::StrFormat("%6d %14.8f\n", j, w->weights(j));
  }
  return 0;
}

}  // namespace

void AddWeightsCommand(CLI::App* app, Handler* chosen) {
  auto f = std::make_shared<WeightsFlags>();
  CLI::App* weights =
      app->add_subcommand("weights", "class weights w of LOSS.md section 2");
  f->source.AddTo(weights);
  f->config.AddTo(weights, LossConfigFlags::kClassWeightFields);
  weights->callback([f, chosen] {
    *chosen = [f](const Context& context) { return RunWeights(*f, context); };
  });
}

}  // namespace cbloss::cli
