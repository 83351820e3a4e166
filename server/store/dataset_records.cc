// Copyright 2026 The cbloss Authors.

#include "server/store/dataset_records.h"

#include <algorithm>
#include <cmath>
#include <limits>
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

// ---------------------------------------------------------------- Runs

absl::Status RunNotFound(absl::string_view name) {
  return absl::NotFoundError(absl::StrCat("run ", Quoted(name), " not found"));
}

absl::Status CheckRunExpectedVersion(absl::string_view name, uint64_t current,
                                     absl::optional<uint64_t> expected) {
  if (!expected.has_value() || *expected == current) return absl::OkStatus();
  return absl::AbortedError(absl::StrCat("run ", Quoted(name),
                                         " is at version ", current,
                                         ", not expected_version ", *expected));
}

absl::Status DatasetUsedByRun(absl::string_view dataset,
                              absl::string_view run) {
  return absl::FailedPreconditionError(
      absl::StrCat("dataset ", Quoted(dataset), " is used by run ", Quoted(run),
                   "; delete its runs first"));
}

absl::Status CheckReplacementKeepsClasses(const v1::Dataset& replacement,
                                          int current_classes,
                                          absl::string_view run) {
  if (run.empty() || replacement.class_counts_size() == current_classes) {
    return absl::OkStatus();
  }
  return absl::FailedPreconditionError(
      absl::StrCat("dataset ", Quoted(replacement.name()), " has ",
                   current_classes, " classes and is used by run ", Quoted(run),
                   "; a replacement must keep ", current_classes, " classes"));
}

void StampRun(const RecordMeta& meta, v1::Run* run) {
  run->set_version(meta.version);
  SetTimestamp(meta.create_time_ns, run->mutable_create_time());
  SetTimestamp(meta.update_time_ns, run->mutable_update_time());
}

absl::StatusOr<v1::Run> RecordForCreateRun(const v1::Run& run,
                                           const v1::Dataset* dataset,
                                           int64_t now, RecordMeta* meta) {
  if (run.name().empty()) {
    return absl::InvalidArgumentError("run.name must not be empty");
  }
  if (run.num_classes() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("run.num_classes = ", run.num_classes(), " is negative"));
  }
  int num_classes = run.num_classes();
  if (dataset != nullptr) {
    const int dataset_classes = dataset->class_counts_size();
    if (num_classes != 0 && num_classes != dataset_classes) {
      return absl::InvalidArgumentError(absl::StrCat(
          "run.num_classes = ", num_classes, " but dataset ",
          Quoted(dataset->name()), " has ", dataset_classes, " classes"));
    }
    num_classes = dataset_classes;
  } else if (num_classes == 0) {
    return absl::InvalidArgumentError(
        "run.num_classes = 0: give run.dataset or run.num_classes >= 1");
  }
  v1::Run stored = run;
  stored.set_num_classes(num_classes);
  v1::RunStatistics* stats = stored.mutable_statistics();
  stats->Clear();
  stats->mutable_seen_counts()->Resize(num_classes, 0);
  stats->mutable_positive_gradient()->Resize(num_classes, 0.0);
  stats->mutable_negative_gradient()->Resize(num_classes, 0.0);
  *meta = RecordMeta{1, now, now};
  StampRun(*meta, &stored);
  return stored;
}

namespace {

// "run 'r': " + what, as every ApplyRunUpdate message starts.
std::string RunMessage(absl::string_view name, absl::string_view what) {
  return absl::StrCat("run ", Quoted(name), ": ", what);
}

// INVALID_ARGUMENT unless `size` is 0 (no change) or `num_classes`.
absl::Status CheckLength(absl::string_view name, absl::string_view field,
                         size_t size, int num_classes) {
  if (size == 0 || size == static_cast<size_t>(num_classes)) {
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(
      RunMessage(name, absl::StrCat(field, " has ", size, " entries, not its ",
                                    num_classes, " classes")));
}

// `field`, or `field[index]` for index >= 0; built only for a message (the
// flusher applies hundreds of runs of many classes at a time).
std::string FieldName(absl::string_view field, int64_t index) {
  if (index < 0) return std::string(field);
  return absl::StrCat(field, "[", index, "]");
}

// `*total` += `delta` (>= 0) for the count FieldName(field, index).
absl::Status AddCount(absl::string_view name, absl::string_view field,
                      int64_t index, int64_t delta, int64_t* total) {
  if (delta < 0) {
    return absl::InvalidArgumentError(RunMessage(
        name,
        absl::StrCat(FieldName(field, index), " += ", delta, " is negative")));
  }
  if (__builtin_add_overflow(*total, delta, total)) {
    return absl::OutOfRangeError(RunMessage(
        name, absl::StrCat(FieldName(field, index), " would overflow int64")));
  }
  return absl::OkStatus();
}

// `*total` += `delta` (finite, >= 0) for the gradient sum field[index].
absl::Status AddGradient(absl::string_view name, absl::string_view field,
                         int64_t index, double delta, double* total) {
  if (!(delta >= 0.0) || !std::isfinite(delta)) {
    return absl::InvalidArgumentError(
        RunMessage(name, absl::StrCat(FieldName(field, index), " += ", delta,
                                      " is not finite and >= 0")));
  }
  *total += delta;
  if (!std::isfinite(*total)) {
    return absl::OutOfRangeError(RunMessage(
        name,
        absl::StrCat(FieldName(field, index), " would overflow float64")));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ApplyRunUpdate(const RunUpdate& update, int64_t now,
                            RecordMeta* meta, v1::Run* run) {
  const absl::string_view name = run->name();
  const int num_classes = run->num_classes();
  if (update.requests < 1) {
    return absl::InvalidArgumentError(RunMessage(
        name,
        absl::StrCat("requests = ", update.requests, " is not positive")));
  }
  CBLOSS_RETURN_IF_ERROR(
      CheckLength(name, "seen_counts", update.seen_counts.size(), num_classes));
  CBLOSS_RETURN_IF_ERROR(CheckLength(
      name, "positive_gradient", update.positive_gradient.size(), num_classes));
  CBLOSS_RETURN_IF_ERROR(CheckLength(
      name, "negative_gradient", update.negative_gradient.size(), num_classes));

  // Work on copies: nothing changes unless everything succeeds. A stored
  // vector shorter than C (an older or damaged record) reads as zeros.
  const v1::RunStatistics& stats = run->statistics();
  const size_t c = static_cast<size_t>(num_classes);
  std::vector<int64_t> seen(c, 0);
  std::vector<double> positive(c, 0.0);
  std::vector<double> negative(c, 0.0);
  std::copy_n(stats.seen_counts().begin(),
              std::min<size_t>(c, stats.seen_counts_size()), seen.begin());
  std::copy_n(stats.positive_gradient().begin(),
              std::min<size_t>(c, stats.positive_gradient_size()),
              positive.begin());
  std::copy_n(stats.negative_gradient().begin(),
              std::min<size_t>(c, stats.negative_gradient_size()),
              negative.begin());
  for (size_t j = 0; j < update.seen_counts.size(); ++j) {
    CBLOSS_RETURN_IF_ERROR(AddCount(name, "seen_counts",
                                    static_cast<int64_t>(j),
                                    update.seen_counts[j], &seen[j]));
  }
  for (size_t j = 0; j < update.positive_gradient.size(); ++j) {
    CBLOSS_RETURN_IF_ERROR(
        AddGradient(name, "positive_gradient", static_cast<int64_t>(j),
                    update.positive_gradient[j], &positive[j]));
  }
  for (size_t j = 0; j < update.negative_gradient.size(); ++j) {
    CBLOSS_RETURN_IF_ERROR(
        AddGradient(name, "negative_gradient", static_cast<int64_t>(j),
                    update.negative_gradient[j], &negative[j]));
  }
  int64_t background = stats.background_seen();
  CBLOSS_RETURN_IF_ERROR(AddCount(name, "background_seen", -1,
                                  update.background_seen, &background));
  int64_t eqlv2_updates = stats.eqlv2_updates();
  CBLOSS_RETURN_IF_ERROR(AddCount(name, "eqlv2_updates", -1,
                                  update.eqlv2_updates, &eqlv2_updates));
  // Versions are stored as int64 (SQLite INTEGER, PostgreSQL BIGINT).
  int64_t version = static_cast<int64_t>(
      std::min<uint64_t>(meta->version, std::numeric_limits<int64_t>::max()));
  CBLOSS_RETURN_IF_ERROR(
      AddCount(name, "version", -1, update.requests, &version));

  v1::RunStatistics* out = run->mutable_statistics();
  out->mutable_seen_counts()->Assign(seen.begin(), seen.end());
  out->mutable_positive_gradient()->Assign(positive.begin(), positive.end());
  out->mutable_negative_gradient()->Assign(negative.begin(), negative.end());
  out->set_background_seen(background);
  out->set_eqlv2_updates(eqlv2_updates);
  *meta = RecordMeta{static_cast<uint64_t>(version), meta->create_time_ns,
                     std::max(now, meta->update_time_ns)};
  StampRun(*meta, run);
  return absl::OkStatus();
}

}  // namespace cbloss
