// Copyright 2026 The cbloss Authors.
//
// The rules every DatasetStore backend applies to a dataset or run record,
// apart from the database that holds it: versions and times of a write, the
// expected_version checks, AddClassCounts' and ApplyRunUpdates' arithmetic,
// the dataset/run integrity rules, and the messages of their errors. The SQLite
// and PostgreSQL stores call these inside their own transactions, so both give
// the same answers (one conformance suite, tests/store/, runs against both).
// Pure functions; thread-safe.
//
// Example (a backend's Put, inside a write transaction):
//   absl::optional<RecordMeta> current = ...;  // read from the database
//   RecordMeta meta;
//   absl::StatusOr<v1::Dataset> stored = RecordForPut(
//       dataset, current, expected_version, NowUnixNanos(), &meta);
//   if (!stored.ok()) return stored.status();
//   ...  // write *stored and meta, commit

#ifndef CBLOSS_SERVER_STORE_DATASET_RECORDS_H_
#define CBLOSS_SERVER_STORE_DATASET_RECORDS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/optional.h"
#include "absl/types/span.h"
#include "cbloss/v1/cbloss.pb.h"
#include "google/protobuf/timestamp.pb.h"
#include "server/store/dataset_store.h"

namespace cbloss {

// Version and times of a stored dataset: the database's columns, which are
// authoritative over the copies inside the serialized record.
struct RecordMeta {
  uint64_t version = 0;
  int64_t create_time_ns = 0;
  int64_t update_time_ns = 0;
};

int64_t NowUnixNanos();

// Unix nanoseconds (negative too) as a normalized Timestamp.
void SetTimestamp(int64_t unix_nanos, google::protobuf::Timestamp* ts);

// 'name', as error messages quote dataset names.
std::string Quoted(absl::string_view name);

// NOT_FOUND "dataset 'name' not found".
absl::Status NotFound(absl::string_view name);

// ABORTED unless `expected` (nullopt: no condition) matches `current`, the
// stored version (nullopt: absent). expected 0 means "must not exist".
absl::Status CheckExpectedVersion(absl::string_view name,
                                  absl::optional<uint64_t> current,
                                  absl::optional<uint64_t> expected);

// Sets `dataset`'s version and times from `meta`.
void StampDataset(const RecordMeta& meta, v1::Dataset* dataset);

// The record a Put writes: checks `expected_version` against `current`
// (nullopt: no such dataset) as CheckExpectedVersion, then returns `dataset`
// stamped with the write's version (current + 1, or 1) and times (creation
// kept; update at `now`, never moving backwards even if the clock does),
// and that meta in `*meta`.
absl::StatusOr<v1::Dataset> RecordForPut(
    const v1::Dataset& dataset, const absl::optional<RecordMeta>& current,
    absl::optional<uint64_t> expected_version, int64_t now, RecordMeta* meta);

// AddClassCounts on `dataset`, stored at `*meta`: adds `deltas` (empty, or
// one per class) and one per entry of `labels` to its class counts, then
// advances `*meta` and the dataset's version and update time as a write at
// `now`. All or nothing: INVALID_ARGUMENT for a wrong deltas length or a
// label outside [0, C) (naming the first), OUT_OF_RANGE if a count would
// overflow int64, FAILED_PRECONDITION if one would become negative; on
// error neither argument changes.
absl::Status UpdateClassCounts(absl::string_view name,
                               absl::Span<const int64_t> deltas,
                               absl::Span<const int32_t> labels, int64_t now,
                               RecordMeta* meta, v1::Dataset* dataset);

// ---------------------------------------------------------------- Runs
//
// Example (a backend's ApplyRunUpdates, inside a write transaction):
//   RecordMeta meta = ...;  // read with `run` from the database
//   absl::Status applied = ApplyRunUpdate(update, NowUnixNanos(), &meta, &run);
//   if (applied.ok()) ...  // write run and meta back before committing

// NOT_FOUND "run 'name' not found".
absl::Status RunNotFound(absl::string_view name);

// ABORTED "run 'r' is at version 7, not expected_version 3" unless
// `expected` (nullopt: no condition) equals `current`, the stored version.
absl::Status CheckRunExpectedVersion(absl::string_view name, uint64_t current,
                                     absl::optional<uint64_t> expected);

// FAILED_PRECONDITION "dataset 'x' is used by run 'r'; delete its runs
// first": Delete of a dataset that `run` (the first by name) refers to.
absl::Status DatasetUsedByRun(absl::string_view dataset, absl::string_view run);

// OK unless `replacement` would replace a dataset of `current_classes`
// classes that `run` (the first by name; empty: no run uses it) refers to
// with another class count: FAILED_PRECONDITION "dataset 'x' has 10 classes
// and is used by run 'r'; a replacement must keep 10 classes".
absl::Status CheckReplacementKeepsClasses(const v1::Dataset& replacement,
                                          int current_classes,
                                          absl::string_view run);

// Sets `run`'s version and times from `meta`.
void StampRun(const RecordMeta& meta, v1::Run* run);

// The record CreateRun writes for `run`, given its dataset (null: run has
// no dataset; otherwise the stored dataset called run.dataset()): C is the
// dataset's class count or run.num_classes(); statistics all zero with C
// entries; version 1 and both times `now`, also into `*meta`. Input
// statistics, version and times are ignored. INVALID_ARGUMENT for an empty
// name, "run.num_classes = -1 is negative", "run.num_classes = 0: give
// run.dataset or run.num_classes >= 1", "run.num_classes = 5 but dataset 'x'
// has 10 classes". Does not check that the name is free.
absl::StatusOr<v1::Run> RecordForCreateRun(const v1::Run& run,
                                           const v1::Dataset* dataset,
                                           int64_t now, RecordMeta* meta);

// Applies one RunUpdate to `run`, stored at `*meta`: adds each statistic's
// delta, version += update.requests, update_time = now (never backwards).
// All or nothing; on error neither `run` nor `*meta` changes:
//   INVALID_ARGUMENT "run 'r': requests = 0 is not positive"
//                    "run 'r': seen_counts has 3 entries, not its 5 classes"
//                    (also positive_gradient, negative_gradient)
//                    "run 'r': seen_counts[2] += -1 is negative" (every
//                    delta must be >= 0; gradients finite and >= 0)
//   OUT_OF_RANGE     "run 'r': seen_counts[2] would overflow int64" (also
//                    background_seen, eqlv2_updates, version; a gradient
//                    sum that would become infinite)
absl::Status ApplyRunUpdate(const RunUpdate& update, int64_t now,
                            RecordMeta* meta, v1::Run* run);

}  // namespace cbloss

#endif  // CBLOSS_SERVER_STORE_DATASET_RECORDS_H_
