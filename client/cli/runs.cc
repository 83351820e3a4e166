// Copyright 2026 The cbloss Authors.
//
// `cbloss runs create|get|list|delete`: runs, the statistics a training run
// accumulates online (LOSS.md section 11, docs/spec/API.md section 5.2).

#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "command.h"
#include "loss_config.h"

namespace cbloss::cli {
namespace {

// EQL_V2's ratio r_j of LOSS.md section 10.
double Ratio(double p, double q) { return p / (q + 1e-10); }

// A run as protobuf JSON, with its counts and version as numbers (protobuf
// JSON writes int64 as strings) and every statistic present.
json RunJson(const v1::Run& run) {
  json j = ProtoJson(run);
  const v1::RunStatistics& s = run.statistics();
  j["num_classes"] = run.num_classes();
  j["version"] = run.version();
  j["statistics"] = json{
      {"seen_counts",
       std::vector<int64_t>(s.seen_counts().begin(), s.seen_counts().end())},
      {"background_seen", s.background_seen()},
      {"positive_gradient", std::vector<double>(s.positive_gradient().begin(),
                                                s.positive_gradient().end())},
      {"negative_gradient", std::vector<double>(s.negative_gradient().begin(),
                                                s.negative_gradient().end())},
      {"eqlv2_updates", s.eqlv2_updates()}};
  return j;
}

// Prints a run: its header, then one row per class: the class (and its name
// if the run's dataset has names), its seen count, and once EQL_V2 has
// updated the run, P, Q and P/Q. Returns 0.
int ShowRun(const v1::Run& run, const Context& context) {
  if (context.json) {
    PrintJson(RunJson(run));
    return 0;
  }
  std::vector<std::string> names;
  if (!run.dataset().empty()) {
    // The names are a courtesy: without the dataset the table has none.
    absl::StatusOr<v1::Dataset> d = context.client->GetDataset(run.dataset());
    if (d.ok()) names.assign(d->class_names().begin(), d->class_names().end());
  }
  const v1::RunStatistics& s = run.statistics();
  std::cout << "name:       " << run.name() << "\n"
            << "dataset:    "
            << (run.dataset().empty() ? "(none)" : run.dataset()) << "\n"
            << "classes:    " << run.num_classes() << "\n"
            << "version:    " << run.version() << "\n"
            << "updates:    " << (run.version() > 0 ? run.version() - 1 : 0)
            << "\n"
            << "background: " << s.background_seen() << "\n"
            << "eqlv2:      " << s.eqlv2_updates() << " updates\n"
            << "defaults:   " << LossConfigText(run.defaults()) << "\n";
  const bool eqlv2 = s.eqlv2_updates() > 0;
  std::string header = absl::StrFormat("%6s", "class");
  if (!names.empty()) header += absl::StrFormat("  %-16s", "name");
  header += absl::StrFormat(" %12s", "seen");
  if (eqlv2) header += absl::StrFormat(" %16s %16s %16s", "P", "Q", "P/Q");
  std::cout << header << "\n";
  for (int j = 0; j < run.num_classes(); ++j) {
    std::string row = absl::StrFormat("%6d", j);
    if (!names.empty()) {
      row += absl::StrFormat("  %-16s", j < static_cast<int>(names.size())
                                            ? names[j]
                                            : std::string());
    }
    row += absl::StrFormat(
        " %12d", j < s.seen_counts_size() ? s.seen_counts(j) : int64_t{0});
    if (eqlv2) {
      const double p =
          j < s.positive_gradient_size() ? s.positive_gradient(j) : 0.0;
      const double q =
          j < s.negative_gradient_size() ? s.negative_gradient(j) : 0.0;
      row += absl::StrFormat(" %16.8g %16.8g %16.8g", p, q, Ratio(p, q));
    }
    std::cout << row << "\n";
  }
  return 0;
}

struct CreateFlags {
  std::string name, dataset;
  int32_t classes = 0;
  LossConfigFlags config;
};

int RunCreate(const CreateFlags& f, const Context& context) {
  v1::Run run;
  run.set_name(f.name);
  run.set_dataset(f.dataset);
  run.set_num_classes(f.classes);
  absl::StatusOr<v1::LossConfig> config = f.config.Config();
  if (!config.ok()) return Fail(config.status());
  *run.mutable_defaults() = *config;
  absl::StatusOr<v1::Run> created = context.client->CreateRun(run);
  if (!created.ok()) return Fail(created.status());
  return ShowRun(*created, context);
}

void AddCreate(CLI::App* runs, Handler* chosen) {
  auto f = std::make_shared<CreateFlags>();
  CLI::App* create = runs->add_subcommand("create", "create a run");
  create->add_option("name", f->name, "run name")->required();
  CLI::Option* dataset = create->add_option(
      "--dataset", f->dataset, "the dataset whose counts and defaults it uses");
  CLI::Option* classes = create->add_option(
      "--classes", f->classes, "number of classes C (a run without dataset)");
  dataset->excludes(classes);
  classes->excludes(dataset);
  f->config.AddTo(create, LossConfigFlags::kAllFields);
  create->callback([f, dataset, classes, chosen] {
    if (!*dataset && !*classes) {
      throw CLI::ValidationError("give --dataset or --classes");
    }
    *chosen = [f](const Context& context) { return RunCreate(*f, context); };
  });
}

void AddGet(CLI::App* runs, Handler* chosen) {
  auto name = std::make_shared<std::string>();
  CLI::App* get = runs->add_subcommand("get", "show one run's statistics");
  get->add_option("name", *name, "run name")->required();
  get->callback([name, chosen] {
    *chosen = [name](const Context& context) {
      absl::StatusOr<v1::Run> run = context.client->GetRun(*name);
      if (!run.ok()) return Fail(run.status());
      return ShowRun(*run, context);
    };
  });
}

int RunList(const std::string& dataset, const Context& context) {
  absl::StatusOr<std::vector<v1::Run>> all = context.client->ListRuns(dataset);
  if (!all.ok()) return Fail(all.status());
  if (context.json) {
    json j = json::array();
    for (const v1::Run& r : *all) j.push_back(RunJson(r));
    PrintJson(json{{"runs", j}});
    return 0;
  }
  std::cout << absl::StrFormat("%-32s %-20s %8s %8s  %s\n", "name", "dataset",
                               "version", "classes", "defaults");
  for (const v1::Run& r : *all) {
    std::cout << absl::StrFormat("%-32s %-20s %8d %8d  %s\n", r.name(),
                                 r.dataset().empty() ? "(none)" : r.dataset(),
                                 r.version(), r.num_classes(),
                                 LossConfigText(r.defaults()));
  }
  return 0;
}

void AddList(CLI::App* runs, Handler* chosen) {
  auto dataset = std::make_shared<std::string>();
  CLI::App* list = runs->add_subcommand("list", "list runs");
  list->add_option("--dataset", *dataset, "only the runs of this dataset");
  list->callback([dataset, chosen] {
    *chosen = [dataset](const Context& context) {
      return RunList(*dataset, context);
    };
  });
}

struct DeleteFlags {
  std::string name;
  uint64_t expected_version = 0;
  CLI::Option* expected = nullptr;
};

void AddDelete(CLI::App* runs, Handler* chosen) {
  auto f = std::make_shared<DeleteFlags>();
  CLI::App* del = runs->add_subcommand("delete", "delete a run");
  del->add_option("name", f->name, "run name")->required();
  f->expected = del->add_option("--expected-version,--expected_version",
                                f->expected_version, "must be at version N");
  del->callback([f, chosen] {
    *chosen = [f](const Context& context) {
      absl::optional<uint64_t> expected;
      if (f->expected->count() > 0) expected = f->expected_version;
      absl::Status s = context.client->DeleteRun(f->name, expected);
      if (!s.ok()) return Fail(s);
      if (context.json) {
        PrintJson(json{{"deleted", f->name}});
      } else {
        std::cout << "deleted " << f->name << "\n";
      }
      return 0;
    };
  });
}

}  // namespace

void AddRunsCommand(CLI::App* app, Handler* chosen) {
  CLI::App* runs = app->add_subcommand(
      "runs", "manage runs (statistics a training run accumulates)");
  runs->require_subcommand(1);
  AddCreate(runs, chosen);
  AddGet(runs, chosen);
  AddList(runs, chosen);
  AddDelete(runs, chosen);
}

}  // namespace cbloss::cli
