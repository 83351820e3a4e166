// Copyright 2026 The cbloss Authors.
//
// The datasets the service serves: a DatasetStore for durability, plus an
// in-memory snapshot of every dataset so the compute path never waits on
// storage. Writes go to the store first (durable before they are
// acknowledged) and then replace the snapshot, one write at a time.
//
// With the embedded SQLite store this process is the only writer, so the
// snapshot is authoritative. With a shared store (PostgreSQL, several
// replicas) the registry Watches the store: every committed change, by any
// replica, is notified (LISTEN/NOTIFY) and the changed dataset is re-read
// into the snapshot, typically within milliseconds. While the subscription
// is down (database restart, network), notifications could be missed, so
// Get and Available return UNAVAILABLE instead of possibly stale data until
// the store has reconnected and the registry has reloaded everything.
//
// Thread-safety: every method may be called concurrently.

#ifndef CBLOSS_SERVER_DATASET_REGISTRY_H_
#define CBLOSS_SERVER_DATASET_REGISTRY_H_

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cbloss/v1/cbloss.pb.h"
#include "server/store/dataset_store.h"

namespace cbloss::server {

class RunRegistry;

// Checks `name` against [a-z0-9][a-z0-9._-]{0,127}; INVALID_ARGUMENT naming
// `field`.
absl::Status ValidateDatasetName(absl::string_view name,
                                 absl::string_view field);

// Checks a dataset as given to PutDataset (API.md section 1): the name
// pattern, at least one class, counts >= 0, class_names empty or C entries,
// and the defaults. INVALID_ARGUMENT naming the field.
absl::Status ValidateDataset(const v1::Dataset& dataset);

// True if `a` and `b` hold the same user-given content (name, counts, class
// names, defaults), whatever their versions and times.
bool SameDatasetContent(const v1::Dataset& a, const v1::Dataset& b);

class DatasetRegistry : private DatasetStore::ChangeListener {
 public:
  // Loads every dataset of `store` into memory (after subscribing to its
  // changes if it is shared).
  static absl::StatusOr<std::unique_ptr<DatasetRegistry>> Create(
      std::unique_ptr<DatasetStore> store);
  ~DatasetRegistry() override;

  // As DatasetStore, after ValidateDataset / argument checks. Dataset names
  // are checked here, for every write (INVALID_ARGUMENT naming "name" for
  // Delete and AddClassCounts, "dataset.name" for Put).
  absl::StatusOr<v1::Dataset> Put(const v1::Dataset& dataset,
                                  absl::optional<uint64_t> expected_version);
  absl::Status Delete(absl::string_view name,
                      absl::optional<uint64_t> expected_version);
  absl::StatusOr<v1::Dataset> AddClassCounts(absl::string_view name,
                                             absl::Span<const int64_t> deltas,
                                             absl::Span<const int32_t> labels);

  // NOT_FOUND "dataset 'x' not found"; UNAVAILABLE while a shared store's
  // changes cannot be followed. The snapshot never changes.
  absl::StatusOr<std::shared_ptr<const v1::Dataset>> Get(
      absl::string_view name) const;
  // Get, after checking `name` (the request's `field`): a name no dataset
  // can have is INVALID_ARGUMENT, not NOT_FOUND.
  absl::StatusOr<std::shared_ptr<const v1::Dataset>> Lookup(
      absl::string_view name, absl::string_view field) const;
  // Up to `limit` datasets named after `start_after`, in name (byte) order.
  std::vector<std::shared_ptr<const v1::Dataset>> List(
      absl::string_view start_after, int limit) const;
  int size() const;
  // OK if the snapshot is known to be current (always, for an unshared
  // store); UNAVAILABLE while a shared store's changes cannot be followed.
  absl::Status Available() const;

  // The store, for the RunRegistry that keeps runs in it.
  DatasetStore* store() const { return store_.get(); }
  // Passes the shared store's run notifications (and resyncs) on to `runs`
  // (not owned; null stops it). The registry holds the one subscription.
  void FollowRuns(RunRegistry* runs) { runs_.store(runs); }

 private:
  explicit DatasetRegistry(std::unique_ptr<DatasetStore> store)
      : store_(std::move(store)) {}

  // DatasetStore::ChangeListener, called on the store's listener thread.
  absl::Status OnDatasetChanged(absl::string_view name) override;
  absl::Status OnRunChanged(absl::string_view name) override;
  absl::Status OnResync() override;
  void OnWatchLost(const absl::Status& why) override;
  // Reads every dataset from the store and replaces the snapshot.
  absl::Status ReloadAll();  // requires write_mu_

  const std::unique_ptr<DatasetStore> store_;
  // Serialises writes, so the snapshot follows the store's order of commits.
  // Standard mutexes: ThreadSanitizer sees them (thread_pool.h says why).
  std::mutex write_mu_;
  // Taken after write_mu_, never before.
  mutable std::shared_mutex mu_;
  std::map<std::string, std::shared_ptr<const v1::Dataset>, std::less<>>
      datasets_;  // guarded by mu_
  // Not OK while a shared store's changes cannot be followed.
  absl::Status watch_status_;  // guarded by mu_
  std::atomic<RunRegistry*> runs_{nullptr};
};

}  // namespace cbloss::server

#endif  // CBLOSS_SERVER_DATASET_REGISTRY_H_
