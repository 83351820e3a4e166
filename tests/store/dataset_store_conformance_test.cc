// The DatasetStore conformance suite: the contract of dataset_store.h
// (versions, expected_version, ordering, atomic count updates and their
// error codes), concurrency within one store and between two stores on the
// same storage (two replicas), durability across close/reopen and across
// SIGKILL. One source, built once per backend (tests/store/CMakeLists.txt):
// CBLOSS_TEST_POSTGRES selects PostgreSQL (a fresh database per test on the
// server that the ctest fixture `postgres` started), otherwise SQLite (a
// fresh data_dir per test). Backend-specific tests live in
// sqlite_dataset_store_test.cc and postgres_dataset_store_test.cc.

#include <signal.h>
#include <stdlib.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/barrier.h"
#include "absl/types/optional.h"
#include "cbloss/v1/cbloss.pb.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"
#include "server/store/dataset_store.h"
#include "tests/store/store_backend.h"

namespace cbloss {
namespace {

using ::google::protobuf::util::MessageDifferencer;
using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;

constexpr int64_t kInt64Max = std::numeric_limits<int64_t>::max();

v1::Dataset MakeDataset(const std::string& name, std::vector<int64_t> counts) {
  v1::Dataset dataset;
  dataset.set_name(name);
  for (int64_t c : counts) dataset.add_class_counts(c);
  return dataset;
}

std::vector<int64_t> Counts(const v1::Dataset& dataset) {
  return {dataset.class_counts().begin(), dataset.class_counts().end()};
}

int64_t Nanos(const google::protobuf::Timestamp& ts) {
  return ts.seconds() * 1000000000 + ts.nanos();
}

// Asserts the code exactly and that the message contains `substring`.
void ExpectError(const absl::Status& status, absl::StatusCode code,
                 const std::string& substring) {
  EXPECT_EQ(status.code(), code) << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr(substring));
}

class DatasetStoreConformanceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    backend_ = MakeStoreBackend();
    absl::Status s = backend_->SetUp();
    ASSERT_TRUE(s.ok()) << s;
  }

  void TearDown() override {
    store_.reset();
    if (backend_ != nullptr) backend_->TearDown();
  }

  // Opens (or reopens) the store on the test's storage.
  DatasetStore& Open() {
    store_.reset();
    absl::StatusOr<std::unique_ptr<DatasetStore>> store = backend_->Open();
    EXPECT_TRUE(store.ok()) << store.status();
    if (store.ok()) store_ = *std::move(store);
    return *store_;
  }

  void Close() { store_.reset(); }

  v1::Dataset MustPut(const v1::Dataset& dataset,
                      absl::optional<uint64_t> expected = absl::nullopt) {
    absl::StatusOr<v1::Dataset> put = store_->Put(dataset, expected);
    EXPECT_TRUE(put.ok()) << put.status();
    return put.ok() ? *put : v1::Dataset();
  }

  v1::Dataset MustGet(const std::string& name) {
    absl::StatusOr<v1::Dataset> got = store_->Get(name);
    EXPECT_TRUE(got.ok()) << got.status();
    return got.ok() ? *got : v1::Dataset();
  }

  std::vector<std::string> ListNames(const std::string& start_after,
                                     int limit) {
    absl::StatusOr<std::vector<v1::Dataset>> list =
        store_->List(start_after, limit);
    EXPECT_TRUE(list.ok()) << list.status();
    std::vector<std::string> names;
    if (list.ok()) {
      for (const v1::Dataset& d : *list) names.push_back(d.name());
    }
    return names;
  }

  std::unique_ptr<StoreBackend> backend_;
  std::unique_ptr<DatasetStore> store_;
};

// ---------------------------------------------------------------- Put / Get

TEST_F(DatasetStoreConformanceTest, PutThenGetRoundTripsEveryField) {
  Open();
  v1::Dataset in = MakeDataset("cifar10-lt", {5000, 2997, 1796});
  in.add_class_names("airplane");
  in.add_class_names("automobile");
  in.add_class_names("bird");
  in.mutable_defaults()->set_loss_type(v1::LOSS_TYPE_FOCAL);
  in.mutable_defaults()->set_beta(0.9999);
  in.mutable_defaults()->set_gamma(0.0);  // Set to zero: must stay "set".
  // Output-only fields are ignored on input.
  in.set_version(77);
  in.mutable_create_time()->set_seconds(12345);
  in.mutable_update_time()->set_seconds(12345);

  v1::Dataset put = MustPut(in);
  EXPECT_EQ(put.version(), 1u);
  EXPECT_EQ(put.name(), "cifar10-lt");
  EXPECT_THAT(Counts(put), ElementsAre(5000, 2997, 1796));
  EXPECT_THAT(put.class_names(), ElementsAre("airplane", "automobile", "bird"));
  EXPECT_GT(put.create_time().seconds(), 1600000000);
  EXPECT_EQ(Nanos(put.create_time()), Nanos(put.update_time()));

  v1::Dataset got = MustGet("cifar10-lt");
  EXPECT_TRUE(MessageDifferencer::Equals(got, put))
      << got.DebugString() << " vs " << put.DebugString();
  EXPECT_TRUE(got.defaults().has_gamma());
  EXPECT_FALSE(got.defaults().has_tau());
}

TEST_F(DatasetStoreConformanceTest, GetMissingIsNotFound) {
  Open();
  ExpectError(store_->Get("nope").status(), absl::StatusCode::kNotFound,
              "dataset 'nope' not found");
}

TEST_F(DatasetStoreConformanceTest, PutRejectsEmptyName) {
  Open();
  ExpectError(store_->Put(MakeDataset("", {1}), absl::nullopt).status(),
              absl::StatusCode::kInvalidArgument, "name");
}

TEST_F(DatasetStoreConformanceTest, ReplaceBumpsVersionAndKeepsCreateTime) {
  Open();
  v1::Dataset first = MustPut(MakeDataset("d", {1, 2}));
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  v1::Dataset second = MustPut(MakeDataset("d", {7, 8, 9}));
  EXPECT_EQ(second.version(), 2u);
  EXPECT_EQ(Nanos(second.create_time()), Nanos(first.create_time()));
  EXPECT_GT(Nanos(second.update_time()), Nanos(first.update_time()));
  v1::Dataset third = MustPut(MakeDataset("d", {}));
  EXPECT_EQ(third.version(), 3u);

  v1::Dataset got = MustGet("d");
  EXPECT_EQ(got.version(), 3u);
  EXPECT_EQ(got.class_counts_size(), 0);
  EXPECT_EQ(Nanos(got.create_time()), Nanos(first.create_time()));
}

// ---------------------------------------------------------- expected_version

TEST_F(DatasetStoreConformanceTest, ExpectedVersionZeroCreatesOnlyIfAbsent) {
  Open();
  EXPECT_EQ(MustPut(MakeDataset("d", {1}), 0).version(), 1u);
  ExpectError(store_->Put(MakeDataset("d", {2}), 0).status(),
              absl::StatusCode::kAborted,
              "dataset 'd' already exists at version 1; expected_version 0");
  EXPECT_THAT(Counts(MustGet("d")), ElementsAre(1));
  EXPECT_EQ(MustGet("d").version(), 1u);
}

TEST_F(DatasetStoreConformanceTest, ExpectedVersionMustMatchCurrent) {
  Open();
  MustPut(MakeDataset("d", {1}));
  MustPut(MakeDataset("d", {2}));  // Now at version 2.
  ExpectError(store_->Put(MakeDataset("d", {3}), 1).status(),
              absl::StatusCode::kAborted,
              "dataset 'd' is at version 2; expected_version is 1");
  ExpectError(store_->Put(MakeDataset("d", {3}), 3).status(),
              absl::StatusCode::kAborted,
              "dataset 'd' is at version 2; expected_version is 3");
  EXPECT_THAT(Counts(MustGet("d")), ElementsAre(2));

  v1::Dataset put = MustPut(MakeDataset("d", {3}), 2);
  EXPECT_EQ(put.version(), 3u);
  EXPECT_THAT(Counts(put), ElementsAre(3));
}

TEST_F(DatasetStoreConformanceTest, ExpectedVersionOnMissingDatasetIsAborted) {
  Open();
  ExpectError(store_->Put(MakeDataset("ghost", {1}), 4).status(),
              absl::StatusCode::kAborted,
              "dataset 'ghost' does not exist; expected_version is 4");
  ExpectError(store_->Get("ghost").status(), absl::StatusCode::kNotFound,
              "'ghost'");
}

// ---------------------------------------------------------------------- List

TEST_F(DatasetStoreConformanceTest, ListOrdersByNameInByteOrder) {
  Open();
  // '-' (0x2d) < '.' (0x2e) < '0' (0x30) < '_' (0x5f) < 'a'; 0xc3 > 'z'.
  std::vector<std::string> names = {
      "b", "a0", "a.b", "a-b", "a_b",
      "a", "ab", "z9",  "Z",   "\xc3\xa9t\xc3\xa9"};
  for (const std::string& name : names) MustPut(MakeDataset(name, {1}));
  std::vector<std::string> expected = names;
  std::sort(expected.begin(), expected.end());  // std::string: byte order.
  ASSERT_EQ(expected.front(), "Z");
  ASSERT_EQ(expected.back(), "\xc3\xa9t\xc3\xa9");
  EXPECT_THAT(ListNames("", 100), ElementsAreArray(expected));

  absl::StatusOr<std::vector<v1::Dataset>> list = store_->List("", 100);
  ASSERT_TRUE(list.ok()) << list.status();
  for (const v1::Dataset& d : *list) {
    EXPECT_EQ(d.version(), 1u);
    EXPECT_THAT(Counts(d), ElementsAre(1));
  }
}

TEST_F(DatasetStoreConformanceTest, ListPagesWithStartAfter) {
  Open();
  for (const char* name : {"g", "a", "e", "c", "b", "f", "d"}) {
    MustPut(MakeDataset(name, {1}));
  }
  EXPECT_THAT(ListNames("", 3), ElementsAre("a", "b", "c"));
  EXPECT_THAT(ListNames("c", 3), ElementsAre("d", "e", "f"));
  EXPECT_THAT(ListNames("f", 3), ElementsAre("g"));
  EXPECT_THAT(ListNames("g", 3), ElementsAre());
  // start_after need not be a stored name; it is exclusive.
  EXPECT_THAT(ListNames("bb", 2), ElementsAre("c", "d"));
  EXPECT_THAT(ListNames("a", 1), ElementsAre("b"));
  EXPECT_THAT(ListNames("zzz", 10), ElementsAre());
}

TEST_F(DatasetStoreConformanceTest, ListOfEmptyStoreIsEmpty) {
  Open();
  EXPECT_THAT(ListNames("", 10), ElementsAre());
}

TEST_F(DatasetStoreConformanceTest, ListRejectsNonPositiveLimit) {
  Open();
  ExpectError(store_->List("", 0).status(), absl::StatusCode::kInvalidArgument,
              "limit must be positive, got 0");
  ExpectError(store_->List("", -5).status(), absl::StatusCode::kInvalidArgument,
              "got -5");
}

// -------------------------------------------------------------------- Delete

TEST_F(DatasetStoreConformanceTest,
       DeleteRemovesAndRecreateStartsAtVersionOne) {
  Open();
  MustPut(MakeDataset("a", {1}));
  MustPut(MakeDataset("b", {1}));
  MustPut(MakeDataset("b", {2}));
  ASSERT_TRUE(store_->Delete("b", absl::nullopt).ok());
  ExpectError(store_->Get("b").status(), absl::StatusCode::kNotFound,
              "dataset 'b' not found");
  EXPECT_THAT(ListNames("", 10), ElementsAre("a"));
  EXPECT_EQ(MustPut(MakeDataset("b", {5}), 0).version(), 1u);
}

TEST_F(DatasetStoreConformanceTest, DeleteMissingIsNotFound) {
  Open();
  ExpectError(store_->Delete("nope", absl::nullopt),
              absl::StatusCode::kNotFound, "dataset 'nope' not found");
  ExpectError(store_->Delete("nope", 3), absl::StatusCode::kNotFound,
              "dataset 'nope' not found");
}

TEST_F(DatasetStoreConformanceTest, DeleteChecksExpectedVersion) {
  Open();
  MustPut(MakeDataset("d", {1}));
  MustPut(MakeDataset("d", {1}));  // Version 2.
  ExpectError(store_->Delete("d", 1), absl::StatusCode::kAborted,
              "dataset 'd' is at version 2; expected_version is 1");
  ExpectError(store_->Delete("d", 0), absl::StatusCode::kAborted,
              "already exists at version 2");
  EXPECT_EQ(MustGet("d").version(), 2u);
  EXPECT_TRUE(store_->Delete("d", 2).ok());
  EXPECT_EQ(store_->Get("d").status().code(), absl::StatusCode::kNotFound);
}

// ------------------------------------------------------------ AddClassCounts

TEST_F(DatasetStoreConformanceTest, AddClassCountsAddsDeltas) {
  Open();
  v1::Dataset created = MustPut(MakeDataset("d", {10, 20, 30}));
  const int64_t deltas[] = {1, -20, 5};
  absl::StatusOr<v1::Dataset> added = store_->AddClassCounts("d", deltas, {});
  ASSERT_TRUE(added.ok()) << added.status();
  EXPECT_THAT(Counts(*added), ElementsAre(11, 0, 35));
  EXPECT_EQ(added->version(), 2u);
  EXPECT_EQ(Nanos(added->create_time()), Nanos(created.create_time()));
  EXPECT_GE(Nanos(added->update_time()), Nanos(created.update_time()));
  EXPECT_TRUE(MessageDifferencer::Equals(MustGet("d"), *added));
}

TEST_F(DatasetStoreConformanceTest, AddClassCountsCountsLabels) {
  Open();
  MustPut(MakeDataset("d", {0, 0, 0, 0}));
  const int32_t labels[] = {3, 0, 3, 3, 1};
  absl::StatusOr<v1::Dataset> added = store_->AddClassCounts("d", {}, labels);
  ASSERT_TRUE(added.ok()) << added.status();
  EXPECT_THAT(Counts(*added), ElementsAre(1, 1, 0, 3));
  EXPECT_EQ(added->version(), 2u);
}

TEST_F(DatasetStoreConformanceTest,
       AddClassCountsAppliesDeltasAndLabelsTogether) {
  Open();
  MustPut(MakeDataset("d", {5, 5}));
  // The delta alone would take class 1 below zero; with the labels it does
  // not: the check applies to the combined result.
  const int64_t deltas[] = {2, -6};
  const int32_t labels[] = {1, 1, 0};
  absl::StatusOr<v1::Dataset> added =
      store_->AddClassCounts("d", deltas, labels);
  ASSERT_TRUE(added.ok()) << added.status();
  EXPECT_THAT(Counts(*added), ElementsAre(8, 1));
  EXPECT_EQ(added->version(), 2u);
  EXPECT_THAT(Counts(MustGet("d")), ElementsAre(8, 1));
}

TEST_F(DatasetStoreConformanceTest, AddClassCountsBelowZeroAppliesNothing) {
  Open();
  MustPut(MakeDataset("d", {5, 1, 3}));
  const int64_t deltas[] = {4, 0, -6};
  const int32_t labels[] = {2, 0};
  ExpectError(store_->AddClassCounts("d", deltas, labels).status(),
              absl::StatusCode::kFailedPrecondition,
              "class_counts[2] would become -2");
  v1::Dataset got = MustGet("d");
  EXPECT_THAT(Counts(got), ElementsAre(5, 1, 3));
  EXPECT_EQ(got.version(), 1u);
}

TEST_F(DatasetStoreConformanceTest, AddClassCountsRejectsWrongDeltasLength) {
  Open();
  MustPut(MakeDataset("x", {1, 1, 1, 1, 1}));
  const int64_t deltas[] = {1, 2, 3};
  ExpectError(store_->AddClassCounts("x", deltas, {}).status(),
              absl::StatusCode::kInvalidArgument,
              "deltas has 3 entries, dataset 'x' has 5 classes");
  EXPECT_EQ(MustGet("x").version(), 1u);
}

TEST_F(DatasetStoreConformanceTest, AddClassCountsRejectsLabelOutOfRange) {
  Open();
  MustPut(MakeDataset("x", {1, 1, 1, 1, 1}));
  const int32_t too_big[] = {0, 1, 2, 3, 9, 4};
  ExpectError(store_->AddClassCounts("x", {}, too_big).status(),
              absl::StatusCode::kInvalidArgument,
              "labels[4] = 9 is outside [0, 5)");
  const int32_t negative[] = {-1};
  ExpectError(store_->AddClassCounts("x", {}, negative).status(),
              absl::StatusCode::kInvalidArgument,
              "labels[0] = -1 is outside [0, 5)");
  v1::Dataset got = MustGet("x");
  EXPECT_THAT(Counts(got), ElementsAre(1, 1, 1, 1, 1));
  EXPECT_EQ(got.version(), 1u);
}

TEST_F(DatasetStoreConformanceTest, AddClassCountsRejectsInt64Overflow) {
  Open();
  MustPut(MakeDataset("d", {0, kInt64Max - 1}));
  const int64_t deltas[] = {0, 2};
  ExpectError(store_->AddClassCounts("d", deltas, {}).status(),
              absl::StatusCode::kOutOfRange,
              "class_counts[1] would overflow int64");
  // Delta fits, the labels on top of it do not.
  const int64_t one[] = {0, 1};
  const int32_t labels[] = {1};
  ExpectError(store_->AddClassCounts("d", one, labels).status(),
              absl::StatusCode::kOutOfRange,
              "class_counts[1] would overflow int64");
  v1::Dataset got = MustGet("d");
  EXPECT_THAT(Counts(got), ElementsAre(0, kInt64Max - 1));
  EXPECT_EQ(got.version(), 1u);

  // Reaching exactly INT64_MAX is fine.
  absl::StatusOr<v1::Dataset> added = store_->AddClassCounts("d", {}, labels);
  ASSERT_TRUE(added.ok()) << added.status();
  EXPECT_THAT(Counts(*added), ElementsAre(0, kInt64Max));
}

TEST_F(DatasetStoreConformanceTest, AddClassCountsOnMissingIsNotFound) {
  Open();
  const int32_t labels[] = {0};
  ExpectError(store_->AddClassCounts("nope", {}, labels).status(),
              absl::StatusCode::kNotFound, "dataset 'nope' not found");
}

// --------------------------------------------------------------- Persistence

TEST_F(DatasetStoreConformanceTest, EverythingPersistsAcrossReopen) {
  Open();
  v1::Dataset a = MakeDataset("a", {3, 4});
  a.add_class_names("cat");
  a.add_class_names("dog");
  a.mutable_defaults()->set_reduction(v1::REDUCTION_SUM);
  a.mutable_defaults()->set_ignore_index(-100);
  MustPut(a);
  MustPut(MakeDataset("b", {1}));
  MustPut(MakeDataset("c", {1}));
  const int32_t labels[] = {1, 1};
  ASSERT_TRUE(store_->AddClassCounts("a", {}, labels).ok());
  ASSERT_TRUE(store_->Delete("c", absl::nullopt).ok());
  absl::StatusOr<std::vector<v1::Dataset>> before = store_->List("", 10);
  ASSERT_TRUE(before.ok()) << before.status();
  Close();

  Open();
  absl::StatusOr<std::vector<v1::Dataset>> after = store_->List("", 10);
  ASSERT_TRUE(after.ok()) << after.status();
  ASSERT_EQ(after->size(), 2u);
  for (size_t i = 0; i < after->size(); ++i) {
    EXPECT_TRUE(MessageDifferencer::Equals((*after)[i], (*before)[i]))
        << (*after)[i].DebugString() << " vs " << (*before)[i].DebugString();
  }
  v1::Dataset got = MustGet("a");
  EXPECT_EQ(got.version(), 2u);
  EXPECT_THAT(Counts(got), ElementsAre(3, 6));
  EXPECT_EQ(got.defaults().ignore_index(), -100);
  // Versions continue where they were.
  EXPECT_EQ(MustPut(MakeDataset("a", {1}), 2).version(), 3u);
}

// --------------------------------------------------------------- Concurrency

TEST_F(DatasetStoreConformanceTest, ConcurrentAddClassCountsLosesNoUpdate) {
  Open();
  constexpr int kThreads = 8;
  constexpr int kCalls = 200;
  constexpr int kClasses = 3;
  MustPut(MakeDataset("d", {0, 0, 0}));
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      const int64_t deltas[kClasses] = {1, 2, 0};
      const int32_t labels[] = {t % kClasses, 2};
      for (int i = 0; i < kCalls; ++i) {
        absl::StatusOr<v1::Dataset> added =
            store_->AddClassCounts("d", deltas, labels);
        if (!added.ok()) ++failures;
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(failures.load(), 0);

  // Threads 0, 3, 6 label class 0; 1, 4, 7 class 1; 2, 5 class 2.
  const int64_t n = kCalls;
  v1::Dataset got = MustGet("d");
  EXPECT_THAT(Counts(got),
              ElementsAre(kThreads * n + 3 * n, 2 * kThreads * n + 3 * n,
                          kThreads * n + 2 * n));
  EXPECT_EQ(got.version(), 1u + kThreads * kCalls);
}

TEST_F(DatasetStoreConformanceTest,
       ConcurrentPutHasExactlyOneWinnerPerVersion) {
  Open();
  constexpr int kThreads = 8;
  constexpr int kRounds = 40;
  MustPut(MakeDataset("d", {0}));  // Version 1.
  std::vector<std::unique_ptr<absl::Barrier>> barriers;
  for (int r = 0; r < kRounds; ++r) {
    barriers.push_back(std::make_unique<absl::Barrier>(kThreads));
  }
  std::vector<std::atomic<int>> winners(kRounds);
  std::vector<std::atomic<int>> losers(kRounds);
  std::atomic<int> other_errors{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int r = 0; r < kRounds; ++r) {
        barriers[r]->Block();
        // Everyone races to move the dataset from version r + 1 to r + 2.
        absl::StatusOr<v1::Dataset> put =
            store_->Put(MakeDataset("d", {t}), static_cast<uint64_t>(r + 1));
        if (put.ok() && put->version() == static_cast<uint64_t>(r + 2)) {
          ++winners[r];
        } else if (put.status().code() == absl::StatusCode::kAborted) {
          ++losers[r];
        } else {
          ++other_errors;
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(other_errors.load(), 0);
  for (int r = 0; r < kRounds; ++r) {
    EXPECT_EQ(winners[r].load(), 1) << "round " << r;
    EXPECT_EQ(losers[r].load(), kThreads - 1) << "round " << r;
  }
  EXPECT_EQ(MustGet("d").version(), static_cast<uint64_t>(kRounds + 1));
}

TEST_F(DatasetStoreConformanceTest, ConcurrentCreateHasExactlyOneWinner) {
  Open();
  constexpr int kThreads = 8;
  absl::Barrier start(kThreads);
  std::atomic<int> winners{0};
  std::atomic<int> aborted{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      start.Block();
      absl::StatusOr<v1::Dataset> put = store_->Put(MakeDataset("d", {t}), 0);
      if (put.ok()) ++winners;
      if (put.status().code() == absl::StatusCode::kAborted) ++aborted;
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(winners.load(), 1);
  EXPECT_EQ(aborted.load(), kThreads - 1);
  EXPECT_EQ(MustGet("d").version(), 1u);
}

// Two stores on one database stand in for two processes (replicas) sharing
// it: the backend's locking must serialise them.
TEST_F(DatasetStoreConformanceTest, TwoStoresOnOneDatabaseLoseNoUpdate) {
  Open();
  MustPut(MakeDataset("d", {0}));
  absl::StatusOr<std::unique_ptr<DatasetStore>> other = backend_->Open();
  ASSERT_TRUE(other.ok()) << other.status();
  constexpr int kThreadsPerStore = 4;
  constexpr int kCalls = 50;
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (DatasetStore* store : {store_.get(), other->get()}) {
    for (int t = 0; t < kThreadsPerStore; ++t) {
      threads.emplace_back([&, store] {
        const int32_t labels[] = {0};
        for (int i = 0; i < kCalls; ++i) {
          absl::StatusOr<v1::Dataset> added =
              store->AddClassCounts("d", {}, labels);
          if (!added.ok()) {
            ADD_FAILURE() << added.status();
            ++failures;
          }
        }
      });
    }
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(failures.load(), 0);
  v1::Dataset got = MustGet("d");
  EXPECT_THAT(Counts(got), ElementsAre(2 * kThreadsPerStore * kCalls));
  EXPECT_EQ(got.version(), 1u + 2 * kThreadsPerStore * kCalls);
}

// ----------------------------------------------------------------- Crashes

// One acknowledgement sent by the crash child after a write returned OK.
struct Ack {
  int64_t kind;   // kAckCount or kAckCreate.
  int64_t value;  // Version of "crash" (kAckCount) or side dataset id.
};
constexpr int64_t kAckCount = 0;
constexpr int64_t kAckCreate = 1;

std::string SideName(int64_t id) { return absl::StrCat("side-", id); }

// Runs in the forked child: writes until killed, acknowledging each write on
// `fd` only after the store returned OK. Never returns.
[[noreturn]] void RunCrashChild(StoreBackend* backend, int round, int fd) {
  absl::StatusOr<std::unique_ptr<DatasetStore>> store = backend->Open();
  if (!store.ok()) _exit(2);
  for (int64_t i = 0;; ++i) {
    Ack ack;
    if (i % 8 == 7) {
      ack.kind = kAckCreate;
      ack.value = round * 1000000 + i;
      v1::Dataset side;
      side.set_name(SideName(ack.value));
      side.add_class_counts(i);
      if (!(*store)->Put(side, 0).ok()) _exit(3);
    } else {
      const int32_t labels[] = {static_cast<int32_t>(i % 2)};
      absl::StatusOr<v1::Dataset> added =
          (*store)->AddClassCounts("crash", {}, labels);
      if (!added.ok()) _exit(4);
      ack.kind = kAckCount;
      ack.value = static_cast<int64_t>(added->version());
    }
    // Writes of at most PIPE_BUF bytes to a pipe are atomic.
    if (write(fd, &ack, sizeof(ack)) != static_cast<ssize_t>(sizeof(ack))) {
      _exit(5);
    }
  }
}

// Reads one Ack; false at end of file.
bool ReadAck(int fd, Ack* ack) {
  char* out = reinterpret_cast<char*>(ack);
  size_t got = 0;
  while (got < sizeof(*ack)) {
    ssize_t n = read(fd, out + got, sizeof(*ack) - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    got += static_cast<size_t>(n);
  }
  return true;
}

TEST_F(DatasetStoreConformanceTest, AcknowledgedWritesSurviveSigkill) {
  Open();
  MustPut(MakeDataset("crash", {0, 0}));
  Close();  // The child must not inherit an open connection.

  // Kill after this many acknowledgements, then after a short extra delay,
  // so that the kill lands at varying points of a write.
  const int kKillAfterAcks[] = {1, 4, 13, 37, 90};
  const int kExtraDelayMicros[] = {0, 150, 400, 50, 900};
  int64_t max_acked_version = 1;
  std::set<int64_t> acked_sides;
  for (int round = 0; round < 5; ++round) {
    SCOPED_TRACE(absl::StrCat("round ", round));
    int fds[2];
    ASSERT_EQ(pipe(fds), 0);
    pid_t pid = fork();
    ASSERT_NE(pid, -1) << std::strerror(errno);
    if (pid == 0) {
      close(fds[0]);
      RunCrashChild(backend_.get(), round, fds[1]);
    }
    close(fds[1]);

    int acks = 0;
    Ack ack;
    auto record = [&](const Ack& a) {
      if (a.kind == kAckCount) {
        max_acked_version = std::max(max_acked_version, a.value);
      } else {
        acked_sides.insert(a.value);
      }
    };
    while (acks < kKillAfterAcks[round] && ReadAck(fds[0], &ack)) {
      record(ack);
      ++acks;
    }
    ASSERT_EQ(acks, kKillAfterAcks[round]) << "child stopped early";
    usleep(static_cast<useconds_t>(kExtraDelayMicros[round]));
    ASSERT_EQ(kill(pid, SIGKILL), 0);
    int wstatus = 0;
    ASSERT_EQ(waitpid(pid, &wstatus, 0), pid);
    EXPECT_TRUE(WIFSIGNALED(wstatus) && WTERMSIG(wstatus) == SIGKILL)
        << "child exited with status " << wstatus;
    // Acknowledgements written before the kill are still in the pipe.
    while (ReadAck(fds[0], &ack)) record(ack);
    close(fds[0]);

    Open();
    v1::Dataset crash = MustGet("crash");
    EXPECT_GE(static_cast<int64_t>(crash.version()), max_acked_version);
    ASSERT_EQ(crash.class_counts_size(), 2);
    // Every committed write is whole: one label per version step.
    EXPECT_EQ(crash.class_counts(0) + crash.class_counts(1),
              static_cast<int64_t>(crash.version()) - 1);
    for (int64_t side : acked_sides) {
      EXPECT_TRUE(store_->Get(SideName(side)).ok()) << SideName(side);
    }
    // Nothing torn: every stored record decodes.
    absl::StatusOr<std::vector<v1::Dataset>> all = store_->List("", 1000000);
    EXPECT_TRUE(all.ok()) << all.status();
    Close();
  }
  EXPECT_GT(max_acked_version, 1);
}

}  // namespace
}  // namespace cbloss
