// Copyright 2026 The cbloss Authors.
//
// `cbloss weights`: the normalised class weights w of LOSS.md section 2.

#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "command.h"
#include "loss_config.h"

namespace cbloss::cli {
namespace {

struct WeightsFlags {
  SourceFlags source;
  LossConfigFlags config;
  // Every value of `--beta B1,B2,...` as given; the --beta flag itself holds
  // the first one.
  std::vector<std::string> betas;
};

// `--beta B1,B2,...`: one column of weights per beta.
int RunWeightsPerBeta(const WeightsFlags& f, const client::LossSource& source,
                      v1::LossConfig config, const Context& context) {
  std::vector<double> betas;
  for (const std::string& text : f.betas) {
    double beta = 0;
    if (!absl::SimpleAtod(text, &beta)) {
      return Fail(absl::InvalidArgumentError(
          absl::StrFormat("--beta '%s' is not a number", text)));
    }
    betas.push_back(beta);
  }
  std::vector<std::vector<double>> columns;
  uint64_t dataset_version = 0;
  for (double beta : betas) {
    config.set_beta(beta);
    absl::StatusOr<v1::ClassWeights> w =
        context.client->GetClassWeights(source, config);
    if (!w.ok()) return Fail(w.status());
    columns.emplace_back(w->weights().begin(), w->weights().end());
    dataset_version = w->dataset_version();
  }
  if (context.json) {
    json j{{"betas", betas}, {"weights", columns}};
    if (dataset_version) j["dataset_version"] = dataset_version;
    PrintJson(j);
    return 0;
  }
  std::cout << absl::StrFormat("%6s", "class");
  for (const std::string& text : f.betas) {
    std::cout << absl::StrFormat(" %14s", "beta=" + text);
  }
  std::cout << "\n";
  for (size_t j = 0; j < columns[0].size(); ++j) {
    std::cout << absl::StrFormat("%6d", j);
    for (const std::vector<double>& column : columns) {
      std::cout << absl::StrFormat(" %14.8f", column[j]);
    }
    std::cout << "\n";
  }
  return 0;
}

int RunWeights(const WeightsFlags& f, const Context& context) {
  absl::StatusOr<client::LossSource> source = f.source.Source();
  if (!source.ok()) return Fail(source.status());
  absl::StatusOr<v1::LossConfig> config = f.config.Config();
  if (!config.ok()) return Fail(config.status());
  if (f.betas.size() > 1)
    return RunWeightsPerBeta(f, *source, *config, context);
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
  // `--beta 0.9,0.99,0.999`: the flag parses the first value as before; the
  // list is kept for one column per beta.
  CLI::Option* beta = weights->get_option("--beta");
  beta->description(
      "effective-number beta in [0, 1]; a list 0.9,0.99,... prints one "
      "column per beta");
  beta->transform(CLI::Validator(
      [f](std::string& value) {
        f->betas = absl::StrSplit(value, ',');
        value = f->betas[0];
        return std::string();
      },
      "", "beta list"));
  weights->callback([f, chosen] {
    *chosen = [f](const Context& context) { return RunWeights(*f, context); };
  });
}

}  // namespace cbloss::cli
