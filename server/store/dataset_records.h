// Copyright 2026 The cbloss Authors.
//
// The rules every DatasetStore backend applies to a dataset record, apart
// from the database that holds it: versions and times of a write, the
// expected_version check, AddClassCounts' arithmetic, and the messages of
// their errors. The SQLite and PostgreSQL stores call these inside their
// own transactions, so both give the same answers (one conformance suite,
// tests/store/, runs against both). Pure functions; thread-safe.
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

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/optional.h"
#include "absl/types/span.h"
#include "cbloss/v1/cbloss.pb.h"
#include "google/protobuf/timestamp.pb.h"

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

}  // namespace cbloss

#endif  // CBLOSS_SERVER_STORE_DATASET_RECORDS_H_
