// DatasetStore: durable, versioned storage of cbloss.v1.Dataset records keyed
// by name. The server's registry reads and writes datasets only through this
// interface, so the embedded SQLite backend (sqlite_dataset_store.h) can be
// swapped for the PostgreSQL one (postgres_dataset_store.h), shared by
// replicas, without touching the service.
//
// Thread-safety: implementations are safe for concurrent use from many
// threads without external synchronization. Every mutating method is atomic
// (all or nothing) and durable (committed and fsynced) before it returns OK.
//
// Versions: a new dataset gets version 1; every successful Put (replace) or
// AddClassCounts adds 1. `expected_version` arguments implement optimistic
// concurrency: nullopt = unconditional, 0 = the dataset must not exist yet,
// N = the dataset must currently be at version N; otherwise ABORTED with a
// message stating the current and the expected version.
//
// The store validates what it needs for its own invariants (counts, indexes,
// overflow); dataset names and loss configurations are validated by the
// service (API.md section 1) before they reach the store.
//
// Example:
//
//   absl::StatusOr<std::unique_ptr<DatasetStore>> store =
//       OpenSqliteDatasetStore("/var/lib/cbloss");
//   if (!store.ok()) return store.status();
//   v1::Dataset d;
//   d.set_name("cifar10-lt");
//   d.add_class_counts(5000);
//   d.add_class_counts(2997);
//   absl::StatusOr<v1::Dataset> put = (*store)->Put(d, /*expected_version=*/0);
//   // put->version() == 1
//   const int32_t labels[] = {1, 1, 0};
//   absl::StatusOr<v1::Dataset> added =
//       (*store)->AddClassCounts("cifar10-lt", {}, labels);
//   // added->class_counts() == {5001, 2999}, added->version() == 2

#ifndef CBLOSS_SERVER_STORE_DATASET_STORE_H_
#define CBLOSS_SERVER_STORE_DATASET_STORE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/optional.h"
#include "absl/types/span.h"
#include "cbloss/v1/cbloss.pb.h"

namespace cbloss {

// What a batch of accumulating requests adds to one run (LOSS.md section
// 11), applied as a whole: each statistic adds its delta and the version
// adds `requests`. Vectors are empty (no change) or have the run's C
// entries.
struct RunUpdate {
  std::string name;
  int64_t requests = 0;  // accumulating requests in the batch, >= 1
  std::vector<int64_t> seen_counts;
  int64_t background_seen = 0;
  std::vector<double> positive_gradient;
  std::vector<double> negative_gradient;
  int64_t eqlv2_updates = 0;
};

class DatasetStore {
 public:
  virtual ~DatasetStore() = default;

  // Creates or replaces `dataset` (keyed by its name). Its version,
  // create_time and update_time fields are ignored on input. A new dataset
  // gets version 1; a replace increments the version and keeps create_time;
  // update_time is now. Returns the dataset as now stored.
  // Errors: INVALID_ARGUMENT (empty name), ABORTED (expected_version
  // mismatch), UNAVAILABLE / INTERNAL (storage).
  virtual absl::StatusOr<v1::Dataset> Put(
      const v1::Dataset& dataset,
      absl::optional<uint64_t> expected_version) = 0;

  // Returns the dataset called `name`; NOT_FOUND "dataset 'x' not found".
  virtual absl::StatusOr<v1::Dataset> Get(absl::string_view name) = 0;

  // Returns up to `limit` (> 0, else INVALID_ARGUMENT) datasets whose names
  // are greater than `start_after`, ordered by name in byte order. An empty
  // `start_after` starts at the first dataset.
  virtual absl::StatusOr<std::vector<v1::Dataset>> List(
      absl::string_view start_after, int limit) = 0;

  // Deletes the dataset called `name`. NOT_FOUND if absent (whatever
  // `expected_version` says); ABORTED on an expected_version mismatch
  // (including 0, "must not exist").
  virtual absl::Status Delete(absl::string_view name,
                              absl::optional<uint64_t> expected_version) = 0;

  // Atomically adds deltas[j] to class_counts[j] (`deltas` is empty or has C
  // entries) and one to class_counts[labels[i]] for each i; the version grows
  // by 1 and update_time is now. Concurrent calls never lose an update.
  // Nothing is applied on error:
  //   NOT_FOUND         "dataset 'x' not found"
  //   INVALID_ARGUMENT  "deltas has 3 entries, dataset 'x' has 5 classes"
  //                     "labels[4] = 9 is outside [0, 5)"
  //   FAILED_PRECONDITION "class_counts[2] would become -3"
  //   OUT_OF_RANGE      "class_counts[2] would overflow int64"
  virtual absl::StatusOr<v1::Dataset> AddClassCounts(
      absl::string_view name, absl::Span<const int64_t> deltas,
      absl::Span<const int32_t> labels) = 0;

  // ------------------------------------------------------------------------
  // Runs (LOSS.md section 11, API.md section 5.2), in the same database as
  // the datasets they refer to. The service validates names and defaults.
  //
  // Datasets and runs: Delete of a dataset that a run refers to is
  // FAILED_PRECONDITION "dataset 'x' is used by run 'r'; delete its runs
  // first"; a Put that replaces such a dataset with another number of
  // classes is FAILED_PRECONDITION "dataset 'x' has 10 classes and is used by
  // run 'r'; a replacement must keep 10 classes". Both checks are in the
  // transaction of the change, so no run can appear meanwhile.

  // Creates `run` (statistics, version and times are ignored on input):
  // statistics all zero with C entries, version 1, both times now. With
  // run.dataset set, the dataset must exist (NOT_FOUND "dataset 'x' not
  // found") and C is its class count; run.num_classes is 0 or equal to it
  // (else INVALID_ARGUMENT "run.num_classes = 5 but dataset 'x' has 10
  // classes"). Without a dataset, run.num_classes >= 1 is C. ALREADY_EXISTS
  // "run 'r' already exists". Returns the run as stored (num_classes set).
  // INVALID_ARGUMENT for an empty name or num_classes < 0, or 0 without a
  // dataset (dataset_records.h has the texts). Checks in this order:
  // arguments, the dataset, then the name.
  virtual absl::StatusOr<v1::Run> CreateRun(const v1::Run& run) = 0;

  // NOT_FOUND "run 'r' not found".
  virtual absl::StatusOr<v1::Run> GetRun(absl::string_view name) = 0;

  // As List, for runs; a non-empty `dataset` keeps only that dataset's runs.
  virtual absl::StatusOr<std::vector<v1::Run>> ListRuns(
      absl::string_view start_after, int limit, absl::string_view dataset) = 0;

  // NOT_FOUND if absent (whatever `expected_version` says); ABORTED "run
  // 'r' is at version 7, not expected_version 3" on a mismatch (including
  // 0).
  virtual absl::Status DeleteRun(absl::string_view name,
                                 absl::optional<uint64_t> expected_version) = 0;

  // Applies `updates` in one transaction, in order (one run may appear more
  // than once). Returns, per update, the run as stored after it, or
  // NOT_FOUND (the run was deleted), INVALID_ARGUMENT (a vector without C
  // entries, requests < 1, a negative delta, a gradient delta that is not
  // finite), OUT_OF_RANGE (a count would overflow int64, a gradient sum
  // float64) or DATA_LOSS (the run's stored record is corrupt) for an
  // update that was skipped, leaving its run as it was; the others are
  // applied (a later update of the same run applies to the result of the
  // earlier ones). Messages: dataset_records.h, ApplyRunUpdate. update_time
  // is now. The outer status fails only when storage does, and then nothing
  // is applied.
  virtual absl::StatusOr<std::vector<absl::StatusOr<v1::Run>>> ApplyRunUpdates(
      absl::Span<const RunUpdate> updates) = 0;

  // ------------------------------------------------------------------------
  // Following changes made by other processes (shared stores only).

  // Receives change notifications from a shared store (Watch). Callbacks run
  // on a thread the store owns, one at a time, and may call the store.
  class ChangeListener {
   public:
    virtual ~ChangeListener() = default;
    // Dataset `name` was put, counted or deleted by some process (this one
    // included); the change is committed before the callback runs. A non-OK
    // result is handled as for OnResync.
    virtual absl::Status OnDatasetChanged(absl::string_view name) = 0;
    // Run `name` was created, updated or deleted by some process; as
    // OnDatasetChanged.
    virtual absl::Status OnRunChanged(absl::string_view /*name*/) {
      return absl::OkStatus();
    }
    // Notifications may have been missed (the store reconnected): reload
    // everything (datasets and runs). A non-OK result makes the store drop the
    // subscription and try again later (OnWatchLost first).
    virtual absl::Status OnResync() = 0;
    // Changes cannot be followed until the next OnResync; `why` says why.
    virtual void OnWatchLost(const absl::Status& why) = 0;
  };

  // True if other processes may write the same datasets, so a cache in front
  // of the store must Watch it. False for the embedded SQLite store.
  virtual bool IsShared() const { return false; }

  // Subscribes `listener` (not owned; must outlive StopWatching) to changes.
  // Returns once the subscription is live, so a load done after it returns
  // misses nothing; UNAVAILABLE if it cannot be established. Call at most
  // once. The default (unshared stores) is UNIMPLEMENTED.
  virtual absl::Status Watch(ChangeListener* /*listener*/) {
    return absl::UnimplementedError("this dataset store cannot be watched");
  }

  // Ends a Watch: no callback runs after it returns. A no-op without one.
  virtual void StopWatching() {}
};

}  // namespace cbloss

#endif  // CBLOSS_SERVER_STORE_DATASET_STORE_H_
