// Copyright 2026 The cbloss Authors.

#include "server/dataset_registry.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "core/status_macros.h"
#include "google/protobuf/util/message_differencer.h"
#include "server/loss_config.h"
#include "server/run_registry.h"
#include "spdlog/spdlog.h"

namespace cbloss::server {
namespace {

constexpr int kLoadPageSize = 1000;
constexpr size_t kMaxNameLength = 128;

bool IsNameStart(char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

bool IsNameChar(char c) {
  return IsNameStart(c) || c == '.' || c == '_' || c == '-';
}

}  // namespace

absl::Status ValidateDatasetName(absl::string_view name,
                                 absl::string_view field) {
  bool ok =
      !name.empty() && name.size() <= kMaxNameLength && IsNameStart(name[0]);
  for (size_t i = 1; ok && i < name.size(); ++i) ok = IsNameChar(name[i]);
  if (!ok) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, " = '", name.substr(0, 200),
                     "' must match [a-z0-9][a-z0-9._-]{0,127}"));
  }
  return absl::OkStatus();
}

absl::Status ValidateDataset(const v1::Dataset& dataset) {
  CBLOSS_RETURN_IF_ERROR(ValidateDatasetName(dataset.name(), "dataset.name"));
  const int classes = dataset.class_counts_size();
  if (classes == 0) {
    return absl::InvalidArgumentError(
        "dataset.class_counts is empty; a dataset needs at least one class");
  }
  for (int j = 0; j < classes; ++j) {
    if (dataset.class_counts(j) < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("dataset.class_counts[", j,
                       "] = ", dataset.class_counts(j), " is negative"));
    }
  }
  if (dataset.class_names_size() != 0 &&
      dataset.class_names_size() != classes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "dataset.class_names has ", dataset.class_names_size(),
        " entries; it must be empty or have one per class (", classes, ")"));
  }
  return ValidateLossConfig(dataset.defaults(), "dataset.defaults");
}

bool SameDatasetContent(const v1::Dataset& a, const v1::Dataset& b) {
  v1::Dataset x = a, y = b;
  for (v1::Dataset* d : {&x, &y}) {
    d->clear_version();
    d->clear_create_time();
    d->clear_update_time();
  }
  return google::protobuf::util::MessageDifferencer::Equals(x, y);
}

absl::StatusOr<std::unique_ptr<DatasetRegistry>> DatasetRegistry::Create(
    std::unique_ptr<DatasetStore> store) {
  std::unique_ptr<DatasetRegistry> registry(
      new DatasetRegistry(std::move(store)));
  std::lock_guard<std::mutex> write_lock(registry->write_mu_);
  if (registry->store_->IsShared()) {
    // Subscribe first: a change committed during the load is notified.
    CBLOSS_RETURN_IF_ERROR(registry->store_->Watch(registry.get()));
  }
  CBLOSS_RETURN_IF_ERROR(registry->ReloadAll());
  return registry;
}

DatasetRegistry::~DatasetRegistry() { store_->StopWatching(); }

absl::Status DatasetRegistry::ReloadAll() {
  std::map<std::string, std::shared_ptr<const v1::Dataset>, std::less<>> all;
  std::string after;
  while (true) {
    absl::StatusOr<std::vector<v1::Dataset>> page =
        store_->List(after, kLoadPageSize);
    if (!page.ok()) return page.status();
    for (v1::Dataset& d : *page) {
      after = d.name();
      // Key from `after`: `d` is moved from in the same statement.
      all[after] = std::make_shared<const v1::Dataset>(std::move(d));
    }
    if (static_cast<int>(page->size()) < kLoadPageSize) break;
  }
  std::lock_guard<std::shared_mutex> lock(mu_);
  datasets_ = std::move(all);
  watch_status_ = absl::OkStatus();
  return absl::OkStatus();
}

absl::Status DatasetRegistry::OnDatasetChanged(absl::string_view name) {
  std::lock_guard<std::mutex> write_lock(write_mu_);
  // Whatever the notification says, the store has the current state (and
  // writes of this process wait on write_mu_, so none is overtaken).
  absl::StatusOr<v1::Dataset> current = store_->Get(name);
  if (!current.ok() && current.status().code() != absl::StatusCode::kNotFound) {
    return current.status();
  }
  std::lock_guard<std::shared_mutex> lock(mu_);
  if (current.ok()) {
    // C++17 evaluates the right side first: do not move from `current`.
    datasets_[std::string(name)] =
        std::make_shared<const v1::Dataset>(*current);
  } else {
    auto it = datasets_.find(name);
    if (it != datasets_.end()) datasets_.erase(it);
  }
  return absl::OkStatus();
}

absl::Status DatasetRegistry::OnRunChanged(absl::string_view name) {
  RunRegistry* runs = runs_.load();
  return runs != nullptr ? runs->OnRunChanged(name) : absl::OkStatus();
}

absl::Status DatasetRegistry::OnResync() {
  {
    std::lock_guard<std::mutex> write_lock(write_mu_);
    CBLOSS_RETURN_IF_ERROR(ReloadAll());
    spdlog::info("dataset store reachable again: {} datasets reloaded", size());
  }
  RunRegistry* runs = runs_.load();
  return runs != nullptr ? runs->OnResync() : absl::OkStatus();
}

void DatasetRegistry::OnWatchLost(const absl::Status& why) {
  spdlog::warn(
      "cannot follow the shared dataset store ({}); dataset reads are "
      "UNAVAILABLE until it is back",
      why.ToString());
  std::lock_guard<std::shared_mutex> lock(mu_);
  watch_status_ = absl::UnavailableError(absl::StrCat(
      "the shared dataset store is unavailable, datasets may be stale: ",
      why.message()));
}

absl::Status DatasetRegistry::Available() const {
  std::shared_lock<std::shared_mutex> lock(mu_);
  return watch_status_;
}

absl::StatusOr<v1::Dataset> DatasetRegistry::Put(
    const v1::Dataset& dataset, absl::optional<uint64_t> expected_version) {
  CBLOSS_RETURN_IF_ERROR(ValidateDataset(dataset));
  std::lock_guard<std::mutex> write_lock(write_mu_);
  absl::StatusOr<v1::Dataset> stored = store_->Put(dataset, expected_version);
  if (!stored.ok()) return stored.status();
  std::lock_guard<std::shared_mutex> lock(mu_);
  datasets_[stored->name()] = std::make_shared<const v1::Dataset>(*stored);
  return stored;
}

absl::Status DatasetRegistry::Delete(
    absl::string_view name, absl::optional<uint64_t> expected_version) {
  CBLOSS_RETURN_IF_ERROR(ValidateDatasetName(name, "name"));
  std::lock_guard<std::mutex> write_lock(write_mu_);
  CBLOSS_RETURN_IF_ERROR(store_->Delete(name, expected_version));
  std::lock_guard<std::shared_mutex> lock(mu_);
  auto it = datasets_.find(name);
  if (it != datasets_.end()) datasets_.erase(it);
  return absl::OkStatus();
}

absl::StatusOr<v1::Dataset> DatasetRegistry::AddClassCounts(
    absl::string_view name, absl::Span<const int64_t> deltas,
    absl::Span<const int32_t> labels) {
  CBLOSS_RETURN_IF_ERROR(ValidateDatasetName(name, "name"));
  if (deltas.empty() && labels.empty()) {
    return absl::InvalidArgumentError(
        "give deltas (one per class) and/or labels (one per sample); both "
        "are empty");
  }
  std::lock_guard<std::mutex> write_lock(write_mu_);
  absl::StatusOr<v1::Dataset> stored =
      store_->AddClassCounts(name, deltas, labels);
  if (!stored.ok()) return stored.status();
  std::lock_guard<std::shared_mutex> lock(mu_);
  datasets_[stored->name()] = std::make_shared<const v1::Dataset>(*stored);
  return stored;
}

absl::StatusOr<std::shared_ptr<const v1::Dataset>> DatasetRegistry::Get(
    absl::string_view name) const {
  std::shared_lock<std::shared_mutex> lock(mu_);
  if (!watch_status_.ok()) return watch_status_;
  auto it = datasets_.find(name);
  if (it == datasets_.end()) {
    return absl::NotFoundError(absl::StrCat("dataset '", name, "' not found"));
  }
  return it->second;
}

absl::StatusOr<std::shared_ptr<const v1::Dataset>> DatasetRegistry::Lookup(
    absl::string_view name, absl::string_view field) const {
  CBLOSS_RETURN_IF_ERROR(ValidateDatasetName(name, field));
  return Get(name);
}

std::vector<std::shared_ptr<const v1::Dataset>> DatasetRegistry::List(
    absl::string_view start_after, int limit) const {
  std::vector<std::shared_ptr<const v1::Dataset>> out;
  std::shared_lock<std::shared_mutex> lock(mu_);
  for (auto it = datasets_.upper_bound(start_after);
       it != datasets_.end() && static_cast<int>(out.size()) < limit; ++it) {
    out.push_back(it->second);
  }
  return out;
}

int DatasetRegistry::size() const {
  std::shared_lock<std::shared_mutex> lock(mu_);
  return static_cast<int>(datasets_.size());
}

}  // namespace cbloss::server
