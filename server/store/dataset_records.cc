// Copyright 2026 The cbloss Authors.

#include "server/store/dataset_records.h"

#include <algorithm>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "core/status_macros.h"

namespace cbloss {

int64_t NowUnixNanos() { return absl::ToUnixNanos(absl::Now()); }

void SetTimestamp(int64_t unix_nanos, google::protobuf::Timestamp* ts) {
  constexpr int64_t kNanosPerSecond = 1000000000;
  int64_t seconds = unix_nanos / kNanosPerSecond;
  int64_t nanos = unix_nanos % kNanosPerSecond;
  if (nanos < 0) {
    seconds -= 1;
    nanos += kNanosPerSecond;
  }
  ts->set_seconds(seconds);
  ts->set_nanos(static_cast<int32_t>(nanos));
}

std::string Quoted(absl::string_view name) {
  return absl::StrCat("'", name, "'");
}

absl::Status NotFound(absl::string_view name) {
  return absl::NotFoundError(
      absl::StrCat("dataset ", Quoted(name), " not found"));
}

absl::Status CheckExpectedVersion(absl::string_view name,
                                  absl::optional<uint64_t> current,
                                  absl::optional<uint64_t> expected) {
  if (!expected.has_value()) return absl::OkStatus();
  if (*expected == 0) {
    if (!current.has_value()) return absl::OkStatus();
    return absl::AbortedError(absl::StrCat(
        "dataset ", Quoted(name), " already exists at version ", *current,
        "; expected_version 0 requires that it does not exist"));
  }
  if (!current.has_value()) {
    return absl::AbortedError(absl::StrCat("dataset ", Quoted(name),
                                           " does not exist; expected_version "
                                           "is ",
                                           *expected));
  }
  if (*current != *expected) {
    return absl::AbortedError(
        absl::StrCat("dataset ", Quoted(name), " is at version ", *current,
                     "; expected_version is ", *expected));
  }
  return absl::OkStatus();
}

void StampDataset(const RecordMeta& meta, v1::Dataset* dataset) {
  dataset->set_version(meta.version);
  SetTimestamp(meta.create_time_ns, dataset->mutable_create_time());
  SetTimestamp(meta.update_time_ns, dataset->mutable_update_time());
}

absl::StatusOr<v1::Dataset> RecordForPut(
    const v1::Dataset& dataset, const absl::optional<RecordMeta>& current,
    absl::optional<uint64_t> expected_version, int64_t now, RecordMeta* meta) {
  absl::optional<uint64_t> current_version;
  if (current.has_value()) current_version = current->version;
  CBLOSS_RETURN_IF_ERROR(
      CheckExpectedVersion(dataset.name(), current_version, expected_version));
  *meta = current.has_value()
              ? RecordMeta{current->version + 1, current->create_time_ns,
                           std::max(now, current->update_time_ns)}
              : RecordMeta{1, now, now};
  v1::Dataset stored = dataset;
  StampDataset(*meta, &stored);
  return stored;
}

absl::Status UpdateClassCounts(absl::string_view name,
                               absl::Span<const int64_t> deltas,
                               absl::Span<const int32_t> labels, int64_t now,
                               RecordMeta* meta, v1::Dataset* dataset) {
  const int num_classes = dataset->class_counts_size();
  if (!deltas.empty() && deltas.size() != static_cast<size_t>(num_classes)) {
    return absl::InvalidArgumentError(
        absl::StrCat("deltas has ", deltas.size(), " entries, dataset ",
                     Quoted(name), " has ", num_classes, " classes"));
  }
  std::vector<int64_t> label_counts(static_cast<size_t>(num_classes), 0);
  for (size_t i = 0; i < labels.size(); ++i) {
    if (labels[i] < 0 || labels[i] >= num_classes) {
      return absl::InvalidArgumentError(
          absl::StrCat("labels[", i, "] = ", labels[i], " is outside [0, ",
                       num_classes, ")"));
    }
    ++label_counts[static_cast<size_t>(labels[i])];
  }
  std::vector<int64_t> counts(dataset->class_counts().begin(),
                              dataset->class_counts().end());
  for (size_t j = 0; j < counts.size(); ++j) {
    int64_t& count = counts[j];
    if ((!deltas.empty() && __builtin_add_overflow(count, deltas[j], &count)) ||
        __builtin_add_overflow(count, label_counts[j], &count)) {
      return absl::OutOfRangeError(
          absl::StrCat("class_counts[", j, "] would overflow int64"));
    }
    if (count < 0) {
      return absl::FailedPreconditionError(
          absl::StrCat("class_counts[", j, "] would become ", count));
    }
  }
  dataset->mutable_class_counts()->Assign(counts.begin(), counts.end());
  *meta = RecordMeta{meta->version + 1, meta->create_time_ns,
                     std::max(now, meta->update_time_ns)};
  StampDataset(*meta, dataset);
  return absl::OkStatus();
}

}  // namespace cbloss
