// Copyright 2026 The cbloss Authors.
//
// The runs the service serves (LOSS.md section 11): statistics a training
// run accumulates online, shared by every worker that names the run.
//
// Each run is held in memory as `base` (the record as last read from or
// written to the store) plus the deltas of accumulating requests applied
// since (`pending`). Every request reads base + pending, so it sees every
// update this server acknowledged before it arrived. A flusher thread
// writes the pending deltas of every run in one store transaction every
// `flush_interval` (group commit): an update is acknowledged before it is
// durable, and a crash loses at most the updates of the last interval (plus
// one commit), always whole updates, always the latest ones. Close() (a
// graceful stop) writes everything. If a commit is late by more than
// `max_flush_lag`, accumulating requests wait for it, so a slow disk slows
// callers down instead of widening what a crash can lose.
// docs/RUNS.md describes the design and its measured costs.
//
// With a shared store (PostgreSQL, several replicas) the deltas are applied
// additively in the store, so replicas never overwrite each other's
// updates; after each commit the store notifies every replica, which
// re-reads the run's base (OnRunChanged). A run created on another replica
// and not yet notified is read from the store on first use.
//
// Thread-safety: every public method may be called concurrently.

#ifndef CBLOSS_SERVER_RUN_REGISTRY_H_
#define CBLOSS_SERVER_RUN_REGISTRY_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/optional.h"
#include "cbloss/v1/cbloss.pb.h"
#include "server/store/dataset_store.h"

namespace cbloss::server {

// Checks a run as given to CreateRun (API.md section 5.2): the name, the
// dataset's name if set, num_classes >= 0 (>= 1 without a dataset) and the
// defaults. INVALID_ARGUMENT naming the field ("run.name", ...).
absl::Status ValidateRun(const v1::Run& run);

// What a computation reads of a run, taken at one instant.
struct RunView {
  std::string name;
  std::string dataset;  // empty: none
  int num_classes = 0;
  v1::LossConfig defaults;
  uint64_t version = 0;
  std::vector<int64_t> seen_counts;  // C entries
  int64_t background_seen = 0;
  std::vector<double> positive_gradient;  // C entries
  std::vector<double> negative_gradient;  // C entries
  int64_t eqlv2_updates = 0;
};

class RunRegistry {
 public:
  struct Options {
    std::chrono::milliseconds flush_interval{100};
    std::chrono::milliseconds max_flush_lag{500};
    // How long an accumulating request waits for a late commit before
    // UNAVAILABLE (its update stays applied and is written later).
    std::chrono::milliseconds max_flush_wait{5000};
  };

  // Loads every run of `store` (not owned; must outlive the registry) and
  // starts the flusher.
  static absl::StatusOr<std::unique_ptr<RunRegistry>> Create(
      DatasetStore* store, Options options);
  ~RunRegistry();  // Close()

  // CreateRun after ValidateRun; durable before it returns.
  absl::StatusOr<v1::Run> Create(const v1::Run& run);
  // The run as this server sees it (base + pending). `field` names the
  // request field of a bad name.
  absl::StatusOr<v1::Run> Get(absl::string_view name, absl::string_view field);
  // Up to `limit` runs after `start_after` in name order; a non-empty
  // `dataset` keeps that dataset's runs.
  std::vector<v1::Run> List(absl::string_view start_after, int limit,
                            absl::string_view dataset) const;
  // Writes the run's pending updates, then deletes it (expected_version is
  // checked against the version a GetRun would have shown).
  absl::Status Delete(absl::string_view name,
                      absl::optional<uint64_t> expected_version);

  // The statistics a computation reads; NOT_FOUND, or INVALID_ARGUMENT
  // naming `field` for a name no run can have.
  absl::StatusOr<RunView> View(absl::string_view name, absl::string_view field);
  // Applies one accumulating request's update (update.requests == 1) and
  // returns the run's version after it. NOT_FOUND if the run was deleted
  // meanwhile (nothing applied); UNAVAILABLE if a late commit did not
  // finish within max_flush_wait (the update is applied and will be
  // written). `deadline` bounds the wait for a late commit.
  absl::StatusOr<uint64_t> Accumulate(
      const RunUpdate& update, std::chrono::system_clock::time_point deadline);

  // Writes every pending update now (one transaction).
  absl::Status Flush();
  // Stops the flusher after a final Flush. Later Accumulate calls are
  // UNAVAILABLE. Idempotent.
  void Close();

  int size() const;
  // Updates acknowledged and not yet durable, over all runs (metrics).
  int64_t unflushed_updates() const;

  // Called on the store's listener thread (through DatasetRegistry) when a
  // shared store changes.
  absl::Status OnRunChanged(absl::string_view name);
  absl::Status OnResync();

 private:
  struct Entry;

  RunRegistry(DatasetStore* store, Options options)
      : store_(store), options_(options) {}
  absl::Status LoadAll();  // requires flush_mu_
  std::shared_ptr<Entry> Find(absl::string_view name) const;
  // Find, else read from the store (a run another replica created).
  absl::StatusOr<std::shared_ptr<Entry>> FindOrLoad(absl::string_view name);
  void Install(v1::Run stored);  // requires flush_mu_ or a fresh record
  // Drops the run from the map and marks its entry deleted.
  void Forget(absl::string_view name);
  absl::Status FlushLocked();  // requires flush_mu_
  void FlusherLoop();

  DatasetStore* const store_;
  const Options options_;

  // Serialises flushes, reloads and deletes, so a base is never replaced
  // while its deltas are being written. Taken before every other lock.
  std::mutex flush_mu_;
  // Accumulate holds it shared while applying; a flush holds it exclusively
  // while it takes the pending deltas, so `applied_seq_` then counts
  // exactly the updates it takes.
  std::shared_mutex apply_mu_;
  bool closing_ = false;          // guarded by apply_mu_: no update after Close
  mutable std::shared_mutex mu_;  // guards runs_
  std::map<std::string, std::shared_ptr<Entry>, std::less<>> runs_;

  std::atomic<uint64_t> applied_seq_{0};  // accumulating updates applied
  // Durability progress, for back-pressure and Close.
  mutable std::mutex durable_mu_;
  std::condition_variable durable_cv_;
  uint64_t flushed_seq_ = 0;  // guarded by durable_mu_
  std::chrono::steady_clock::time_point last_flush_end_;  // durable_mu_
  bool closed_ = false;                                   // durable_mu_
  std::thread flusher_;
};

}  // namespace cbloss::server

#endif  // CBLOSS_SERVER_RUN_REGISTRY_H_
