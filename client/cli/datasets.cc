// Copyright 2026 The cbloss Authors.
//
// `cbloss datasets put|get|list|delete|add-counts`: datasets, their class
// counts and loss defaults.

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <system_error>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_format.h"
#include "arrays.h"
#include "command.h"
#include "loss_config.h"

namespace cbloss::cli {
namespace {

// Class counts (and names) counted from `--from-labels`.
struct CountedLabels {
  std::vector<int64_t> counts;
  std::vector<std::string> names;  // ImageFolder only
};

// The file extensions torchvision's ImageFolder takes as images
// (torchvision.datasets.folder.IMG_EXTENSIONS), compared in lower case.
bool IsImageFile(const std::filesystem::path& path) {
  static const char* const kExtensions[] = {".jpg", ".jpeg", ".png",
                                            ".ppm", ".bmp",  ".pgm",
                                            ".tif", ".tiff", ".webp"};
  std::string ext = absl::AsciiStrToLower(path.extension().string());
  for (const char* e : kExtensions) {
    if (ext == e) return true;
  }
  return false;
}

// ImageFolder layout: one sub-folder per class, classes in sorted order of
// the folder names, each counted by its image files (recursively, following
// links), as torchvision.datasets.ImageFolder assigns labels.
absl::StatusOr<CountedLabels> CountImageFolder(const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code error;
  std::vector<std::string> classes;
  for (const fs::directory_entry& entry : fs::directory_iterator(dir, error)) {
    if (entry.is_directory()) classes.push_back(entry.path().filename());
  }
  if (error) {
    return absl::InvalidArgumentError(
        absl::StrFormat("--from-labels %s: %s", dir, error.message()));
  }
  if (classes.empty()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "--from-labels %s: no class folders (ImageFolder layout: one folder "
        "per class)",
        dir));
  }
  std::sort(classes.begin(), classes.end());
  CountedLabels out;
  for (const std::string& c : classes) {
    int64_t n = 0;
    fs::recursive_directory_iterator it(
        fs::path(dir) / c, fs::directory_options::follow_directory_symlink,
        error);
    for (; !error && it != fs::recursive_directory_iterator();
         it.increment(error)) {
      if (it->is_regular_file() && IsImageFile(it->path())) ++n;
    }
    if (error) {
      return absl::InvalidArgumentError(
          absl::StrFormat("--from-labels %s/%s: %s", dir, c, error.message()));
    }
    out.counts.push_back(n);
    out.names.push_back(c);
  }
  return out;
}

// Counts of a labels file (.npy int32/int64 1-D, or .csv): class j counts
// the labels equal to j, for j = 0..max label.
absl::StatusOr<CountedLabels> CountLabelsFile(const std::string& path) {
  absl::StatusOr<std::vector<int32_t>> labels = LoadLabels(path);
  if (!labels.ok()) return labels.status();
  if (labels->empty()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("--from-labels %s: no labels", path));
  }
  CountedLabels out;
  for (int32_t label : *labels) {
    if (label < 0) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "--from-labels %s: label %d is negative", path, label));
    }
    if (static_cast<size_t>(label) >= out.counts.size()) {
      out.counts.resize(label + 1, 0);
    }
    ++out.counts[label];
  }
  return out;
}

absl::StatusOr<CountedLabels> CountFromLabels(const std::string& path) {
  std::error_code error;
  if (std::filesystem::is_directory(path, error)) return CountImageFolder(path);
  if (!std::filesystem::exists(path, error)) {
    return absl::NotFoundError(
        absl::StrFormat("--from-labels %s: no such file or folder", path));
  }
  return CountLabelsFile(path);
}

struct PutFlags {
  std::string name;
  std::vector<int64_t> counts;
  std::string from_labels;
  CLI::Option* from_labels_option = nullptr;
  std::vector<std::string> names;
  LossConfigFlags config;
  uint64_t expected_version = 0;
  CLI::Option* expected = nullptr;
};

int RunPut(const PutFlags& f, const Context& context) {
  v1::Dataset d;
  d.set_name(f.name);
  d.mutable_class_counts()->Assign(f.counts.begin(), f.counts.end());
  for (const std::string& n : f.names) d.add_class_names(n);
  if (f.from_labels_option->count() > 0) {
    absl::StatusOr<CountedLabels> counted = CountFromLabels(f.from_labels);
    if (!counted.ok()) return Fail(counted.status());
    d.mutable_class_counts()->Assign(counted->counts.begin(),
                                     counted->counts.end());
    if (f.names.empty()) {
      for (const std::string& n : counted->names) d.add_class_names(n);
    }
  }
  absl::StatusOr<v1::LossConfig> config = f.config.Config();
  if (!config.ok()) return Fail(config.status());
  *d.mutable_defaults() = *config;
  absl::optional<uint64_t> expected;
  if (f.expected->count() > 0) expected = f.expected_version;
  absl::StatusOr<v1::Dataset> stored = context.client->PutDataset(d, expected);
  if (!stored.ok()) return Fail(stored.status());
  return ShowDataset(*stored, context.json);
}

void AddPut(CLI::App* datasets, Handler* chosen) {
  auto f = std::make_shared<PutFlags>();
  CLI::App* put =
      datasets->add_subcommand("put", "create or replace a dataset");
  put->add_option("name", f->name, "dataset name")->required();
  CLI::Option* counts = put->add_option("--counts", f->counts,
                                        "class counts, e.g. 5000,2997,1796")
                            ->delimiter(',');
  f->from_labels_option = put->add_option(
      "--from-labels", f->from_labels,
      "count the classes of a labels file (.npy or .csv) or of an ImageFolder "
      "folder (one sub-folder per class)");
  f->from_labels_option->excludes(counts);
  put->add_option("--names", f->names, "class names, e.g. cat,dog")
      ->delimiter(',');
  f->config.AddTo(put, LossConfigFlags::kAllFields);
  f->expected =
      put->add_option("--expected-version", f->expected_version,
                      "0: must not exist yet; N: must be at version N");
  put->callback([f, counts, chosen] {
    if (!*counts && !*f->from_labels_option) {
      throw CLI::RequiredError(counts->get_name());
    }
    *chosen = [f](const Context& context) { return RunPut(*f, context); };
  });
}

void AddGet(CLI::App* datasets, Handler* chosen) {
  auto name = std::make_shared<std::string>();
  CLI::App* get = datasets->add_subcommand("get", "show one dataset");
  get->add_option("name", *name, "dataset name")->required();
  get->callback([name, chosen] {
    *chosen = [name](const Context& context) {
      absl::StatusOr<v1::Dataset> d = context.client->GetDataset(*name);
      if (!d.ok()) return Fail(d.status());
      return ShowDataset(*d, context.json);
    };
  });
}

int RunList(const Context& context) {
  absl::StatusOr<std::vector<v1::Dataset>> all = context.client->ListDatasets();
  if (!all.ok()) return Fail(all.status());
  if (context.json) {
    json j = json::array();
    for (const v1::Dataset& d : *all) j.push_back(DatasetJson(d));
    PrintJson(json{{"datasets", j}});
    return 0;
  }
  std::cout << absl::StrFormat("%-32s %8s %8s  %s\n", "name", "version",
                               "classes", "defaults");
  for (const v1::Dataset& d : *all) {
    std::cout << absl::StrFormat("%-32s %8d %8d  %s\n", d.name(), d.version(),
                                 d.class_counts_size(),
                                 LossConfigText(d.defaults()));
  }
  return 0;
}

void AddList(CLI::App* datasets, Handler* chosen) {
  CLI::App* list = datasets->add_subcommand("list", "list every dataset");
  list->callback([chosen] { *chosen = RunList; });
}

struct DeleteFlags {
  std::string name;
  uint64_t expected_version = 0;
  CLI::Option* expected = nullptr;
};

void AddDelete(CLI::App* datasets, Handler* chosen) {
  auto f = std::make_shared<DeleteFlags>();
  CLI::App* del = datasets->add_subcommand("delete", "delete a dataset");
  del->add_option("name", f->name, "dataset name")->required();
  f->expected = del->add_option("--expected-version", f->expected_version,
                                "must be at version N");
  del->callback([f, chosen] {
    *chosen = [f](const Context& context) {
      absl::optional<uint64_t> expected;
      if (f->expected->count() > 0) expected = f->expected_version;
      absl::Status s = context.client->DeleteDataset(f->name, expected);
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

struct AddCountsFlags {
  std::string name;
  std::vector<int64_t> deltas;
  std::string labels;
  CLI::Option* labels_option = nullptr;
};

int RunAddCounts(const AddCountsFlags& f, const Context& context) {
  std::vector<int32_t> labels;
  if (f.labels_option->count() > 0) {
    absl::StatusOr<std::vector<int32_t>> l = LoadLabels(f.labels);
    if (!l.ok()) return Fail(l.status());
    labels = *std::move(l);
  }
  absl::StatusOr<v1::Dataset> d =
      context.client->AddClassCounts(f.name, f.deltas, labels);
  if (!d.ok()) return Fail(d.status());
  return ShowDataset(*d, context.json);
}

void AddAddCounts(CLI::App* datasets, Handler* chosen) {
  auto f = std::make_shared<AddCountsFlags>();
  CLI::App* add = datasets->add_subcommand(
      "add-counts", "add to a dataset's counts, atomically");
  add->add_option("name", f->name, "dataset name")->required();
  CLI::Option* deltas = add->add_option("--deltas", f->deltas,
                                        "one delta per class, e.g. 10,0,-2")
                            ->delimiter(',');
  f->labels_option = add->add_option(
      "--labels", f->labels,
      "labels of new samples: a list 0,3,3 or a .npy/.csv file");
  add->callback([f, deltas, chosen] {
    if (!*deltas && !*f->labels_option) {
      throw CLI::ValidationError("give --deltas and/or --labels");
    }
    *chosen = [f](const Context& context) { return RunAddCounts(*f, context); };
  });
}

}  // namespace

void AddDatasetsCommand(CLI::App* app, Handler* chosen) {
  CLI::App* datasets = app->add_subcommand(
      "datasets", "manage datasets (class counts + defaults)");
  datasets->require_subcommand(1);
  AddPut(datasets, chosen);
  AddGet(datasets, chosen);
  AddList(datasets, chosen);
  AddDelete(datasets, chosen);
  AddAddCounts(datasets, chosen);
}

}  // namespace cbloss::cli
