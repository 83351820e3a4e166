// Copyright 2026 The cbloss Authors.
//
// Fuzzes the SQLite DatasetStore (server/store/dataset_store.h) against a
// model: each input is decoded into a sequence of Put / Get / List / Delete /
// AddClassCounts calls on a fresh store, and every outcome (status code,
// returned dataset, versions, times, listing order) is compared with what a
// std::map says the store must do. Any difference aborts with the call log.
//
// Input format, read front to back; a missing byte reads as 0, so every
// input is valid (fuzz/make_corpus.py writes seeds in this format):
//   per call: op (u8 % 5), name (u8 % kNames), then by op
//     Put:    expected_version, classes (u8 % 7), each count, class_names?
//             (u8 & 1), ignored input version (u8)
//     Get:    -
//     List:   start_after (u8, index into kNames + 1 for ""), limit (u8)
//     Delete: expected_version
//     Add:    deltas: (u8 % 3: none, C, C + 1) each delta; labels: count
//             (u8 % 9), each label (u8, as int8 - 1)
//   expected_version (u8 % 5): none, 0, current, current + 1, 2^64 - 1
//   count / delta (u8 % 8): 0, 1, 2, 7, -1, INT64_MAX, INT64_MAX - 1,
//             INT64_MIN (counts: Put accepts any int64; see dataset_store.h)

#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "cbloss/v1/cbloss.pb.h"
#include "google/protobuf/util/message_differencer.h"
#include "server/store/dataset_store.h"
#include "server/store/sqlite_dataset_store.h"

namespace {

using cbloss::v1::Dataset;

// Valid UTF-8 (proto3 strings must be), including an embedded NUL, a
// multi-byte character and prefixes of each other; "" is INVALID_ARGUMENT
// for Put and NOT_FOUND elsewhere.
const std::string kNames[] = {
    "a", "b", "ab", "a-b.c", "\xc3\xa9t\xc3\xa9", std::string("a\0b", 3), "",
};
constexpr int kNumNames = sizeof(kNames) / sizeof(kNames[0]);

class Reader {
 public:
  Reader(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  bool done() const { return pos_ >= size_; }
  uint8_t Byte() { return pos_ < size_ ? data_[pos_++] : 0; }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

int64_t Amount(Reader& in) {
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  constexpr int64_t kValues[] = {
      0, 1, 2, 7, -1, kMax, kMax - 1, std::numeric_limits<int64_t>::min()};
  return kValues[in.Byte() % 8];
}

class StoreModelCheck {
 public:
  explicit StoreModelCheck(cbloss::DatasetStore* store) : store_(store) {}

  void Step(Reader& in) {
    const int op = in.Byte() % 5;
    const std::string& name = kNames[in.Byte() % kNumNames];
    switch (op) {
      case 0:
        Put(in, name);
        break;
      case 1:
        Get(name);
        break;
      case 2:
        List(in);
        break;
      case 3:
        Delete(in, name);
        break;
      case 4:
        Add(in, name);
        break;
    }
  }

  // The whole store, listed in pages of 2, equals the model.
  void CheckAll() {
    log_ += "CheckAll\n";
    std::string after;
    auto it = model_.begin();
    for (;;) {
      absl::StatusOr<std::vector<Dataset>> page = store_->List(after, 2);
      if (!page.ok()) Fail(page.status().ToString());
      for (const Dataset& d : *page) {
        if (it == model_.end()) Fail("listed '" + d.name() + "' not in model");
        ExpectSame(d, it->second, "CheckAll");
        ++it;
      }
      if (page->size() < 2) break;
      after = page->back().name();
    }
    if (it != model_.end()) Fail("'" + it->first + "' missing from List");
  }

 private:
  [[noreturn]] void Fail(const std::string& what) {
    std::fprintf(stderr, "store_fuzzer: divergence: %s\ncalls:\n%s\n",
                 what.c_str(), log_.c_str());
    std::abort();
  }

  void ExpectCode(const absl::Status& got, absl::StatusCode want) {
    if (got.code() != want) {
      Fail(absl::StrCat("got ", got.ToString(), ", model expects ",
                        absl::StatusCodeToString(want)));
    }
    if (!got.ok() && got.message().empty()) Fail("error without a message");
  }

  void ExpectSame(const Dataset& got, const Dataset& want,
                  absl::string_view call) {
    if (!google::protobuf::util::MessageDifferencer::Equals(got, want)) {
      Fail(absl::StrCat(call, " returned\n", got.DebugString(), "model has\n",
                        want.DebugString()));
    }
  }

  absl::optional<uint64_t> Current(const std::string& name) const {
    auto it = model_.find(name);
    if (it == model_.end()) return absl::nullopt;
    return it->second.version();
  }

  absl::optional<uint64_t> ExpectedVersion(Reader& in,
                                           const std::string& name) {
    const uint64_t current = Current(name).value_or(1);
    switch (in.Byte() % 5) {
      case 0:
        return absl::nullopt;
      case 1:
        return 0;
      case 2:
        return current;
      case 3:
        return current + 1;
      default:
        return std::numeric_limits<uint64_t>::max();
    }
  }

  // dataset_store.h: nullopt passes; 0 needs absence; N needs version N.
  absl::StatusCode VersionCheck(const std::string& name,
                                absl::optional<uint64_t> expected) const {
    const absl::optional<uint64_t> current = Current(name);
    if (!expected.has_value()) return absl::StatusCode::kOk;
    if (*expected == 0) {
      return current ? absl::StatusCode::kAborted : absl::StatusCode::kOk;
    }
    return current == expected ? absl::StatusCode::kOk
                               : absl::StatusCode::kAborted;
  }

  static std::string Opt(absl::optional<uint64_t> v) {
    return v ? absl::StrCat(*v) : "none";
  }

  static int64_t Nanos(const google::protobuf::Timestamp& t) {
    return t.seconds() * 1000000000 + t.nanos();
  }

  void Put(Reader& in, const std::string& name) {
    const absl::optional<uint64_t> expected = ExpectedVersion(in, name);
    Dataset d;
    d.set_name(name);
    const int classes = in.Byte() % 7;
    for (int j = 0; j < classes; ++j) d.add_class_counts(Amount(in));
    if (in.Byte() & 1) {
      for (int j = 0; j < classes; ++j) d.add_class_names(absl::StrCat("c", j));
    }
    d.mutable_defaults()->set_gamma(0.5 * classes);
    d.set_version(in.Byte());  // ignored by the store
    d.mutable_create_time()->set_seconds(1);
    log_ += absl::StrCat("Put('", name, "', counts=[",
                         absl::StrJoin(d.class_counts(), ","),
                         "], expected=", Opt(expected), ")\n");

    absl::StatusOr<Dataset> got = store_->Put(d, expected);
    absl::StatusCode want = name.empty() ? absl::StatusCode::kInvalidArgument
                                         : VersionCheck(name, expected);
    ExpectCode(got.status(), want);
    if (!got.ok()) return;
    auto it = model_.find(name);
    Dataset want_stored = d;
    want_stored.set_version(it == model_.end() ? 1 : it->second.version() + 1);
    if (it != model_.end()) {
      *want_stored.mutable_create_time() = it->second.create_time();
      if (Nanos(got->update_time()) < Nanos(it->second.update_time())) {
        Fail("update_time went backwards");
      }
    } else if (Nanos(got->update_time()) != Nanos(got->create_time())) {
      Fail("new dataset: update_time != create_time");
    } else {
      *want_stored.mutable_create_time() = got->create_time();
    }
    *want_stored.mutable_update_time() = got->update_time();
    ExpectSame(*got, want_stored, "Put");
    model_[name] = *got;
  }

  void Get(const std::string& name) {
    log_ += absl::StrCat("Get('", name, "')\n");
    absl::StatusOr<Dataset> got = store_->Get(name);
    auto it = model_.find(name);
    ExpectCode(got.status(), it == model_.end() ? absl::StatusCode::kNotFound
                                                : absl::StatusCode::kOk);
    if (got.ok()) ExpectSame(*got, it->second, "Get");
  }

  void List(Reader& in) {
    const uint8_t pick = in.Byte() % (kNumNames + 1);
    const std::string start_after = pick < kNumNames ? kNames[pick] : "";
    constexpr int kLimits[] = {-1, 0, 1, 2, 3, 100};
    const int limit = kLimits[in.Byte() % 6];
    log_ += absl::StrCat("List('", start_after, "', ", limit, ")\n");
    absl::StatusOr<std::vector<Dataset>> got = store_->List(start_after, limit);
    ExpectCode(got.status(), limit > 0 ? absl::StatusCode::kOk
                                       : absl::StatusCode::kInvalidArgument);
    if (!got.ok()) return;
    // Names in byte order (std::string compares bytes as unsigned char).
    auto it = model_.upper_bound(start_after);
    size_t i = 0;
    for (; it != model_.end() && i < static_cast<size_t>(limit); ++it, ++i) {
      if (i >= got->size())
        Fail(absl::StrCat("List is missing '", it->first, "'"));
      ExpectSame((*got)[i], it->second, "List");
    }
    if (i != got->size()) Fail("List returned too many datasets");
  }

  void Delete(Reader& in, const std::string& name) {
    const absl::optional<uint64_t> expected = ExpectedVersion(in, name);
    log_ +=
        absl::StrCat("Delete('", name, "', expected=", Opt(expected), ")\n");
    const absl::Status got = store_->Delete(name, expected);
    // NOT_FOUND whatever expected_version says, then the version check.
    ExpectCode(got, !Current(name) ? absl::StatusCode::kNotFound
                                   : VersionCheck(name, expected));
    if (got.ok()) model_.erase(name);
  }

  void Add(Reader& in, const std::string& name) {
    auto it = model_.find(name);
    const int classes = it == model_.end() ? 1 : it->second.class_counts_size();
    std::vector<int64_t> deltas;
    const int delta_shape = in.Byte() % 3;
    const int num_deltas =
        delta_shape == 0 ? 0 : (delta_shape == 1 ? classes : classes + 1);
    for (int j = 0; j < num_deltas; ++j) deltas.push_back(Amount(in));
    std::vector<int32_t> labels(in.Byte() % 9);
    for (int32_t& l : labels) l = static_cast<int8_t>(in.Byte()) - 1;
    log_ += absl::StrCat("AddClassCounts('", name, "', deltas=[",
                         absl::StrJoin(deltas, ","), "], labels=[",
                         absl::StrJoin(labels, ","), "])\n");

    absl::StatusOr<Dataset> got = store_->AddClassCounts(name, deltas, labels);
    absl::StatusCode want = absl::StatusCode::kOk;
    std::vector<int64_t> counts;
    if (it == model_.end()) {
      want = absl::StatusCode::kNotFound;
    } else if (!deltas.empty() && num_deltas != classes) {
      want = absl::StatusCode::kInvalidArgument;
    } else {
      std::vector<int64_t> label_counts(classes, 0);
      for (int32_t l : labels) {
        if (l < 0 || l >= classes) {
          want = absl::StatusCode::kInvalidArgument;
          break;
        }
        ++label_counts[l];
      }
      // dataset_store.h: the first class whose count + delta + labels leaves
      // int64 (in that order) is OUT_OF_RANGE, or goes below 0 is
      // FAILED_PRECONDITION. Exact arithmetic in __int128.
      constexpr __int128 kMin = std::numeric_limits<int64_t>::min();
      constexpr __int128 kMax = std::numeric_limits<int64_t>::max();
      for (int j = 0; j < classes && want == absl::StatusCode::kOk; ++j) {
        __int128 c = it->second.class_counts(j);
        if (!deltas.empty()) c += deltas[j];
        if (c < kMin || c > kMax) {
          want = absl::StatusCode::kOutOfRange;
          break;
        }
        c += label_counts[j];
        if (c > kMax) {
          want = absl::StatusCode::kOutOfRange;
        } else if (c < 0) {
          want = absl::StatusCode::kFailedPrecondition;
        }
        counts.push_back(static_cast<int64_t>(c));
      }
    }
    ExpectCode(got.status(), want);
    if (!got.ok()) return;
    Dataset want_stored = it->second;
    want_stored.mutable_class_counts()->Assign(counts.begin(), counts.end());
    want_stored.set_version(it->second.version() + 1);
    if (Nanos(got->update_time()) < Nanos(it->second.update_time())) {
      Fail("update_time went backwards");
    }
    *want_stored.mutable_update_time() = got->update_time();
    ExpectSame(*got, want_stored, "AddClassCounts");
    it->second = *got;
  }

  cbloss::DatasetStore* store_;
  std::map<std::string, Dataset> model_;
  std::string log_;
};

// A fresh directory per input, on tmpfs when there is one (SQLite fsyncs
// every commit; on tmpfs that is cheap).
std::string FreshDataDir() {
  static const std::string root = [] {
    struct stat st;
    const char* base = stat("/dev/shm", &st) == 0 ? "/dev/shm" : "/tmp";
    return absl::StrCat(base, "/cbloss-store-fuzzer-", getpid());
  }();
  std::filesystem::remove_all(root);
  return root + "/data";
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string dir = FreshDataDir();
  absl::StatusOr<std::unique_ptr<cbloss::DatasetStore>> store =
      cbloss::OpenSqliteDatasetStore(dir);
  if (!store.ok()) {
    std::fprintf(stderr, "cannot open a store in %s: %s\n", dir.c_str(),
                 store.status().ToString().c_str());
    std::abort();
  }
  StoreModelCheck check(store->get());
  Reader in(data, size);
  for (int calls = 0; !in.done() && calls < 64; ++calls) check.Step(in);
  check.CheckAll();
  return 0;
}
