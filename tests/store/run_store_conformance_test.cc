// The DatasetStore conformance suite for runs (dataset_store.h, LOSS.md
// section 11): CreateRun / GetRun / ListRuns / DeleteRun and their errors,
// ApplyRunUpdates' arithmetic and per-update errors, durability across
// reopen, the dataset/run integrity rules, and concurrency within one store
// and between two stores on the same storage (two replicas). Built into
// both conformance binaries with dataset_store_conformance_test.cc
// (tests/store/CMakeLists.txt), so it runs against SQLite (store.sqlite.*)
// and PostgreSQL (store.postgres.*).
//
// Expected statistics are computed by the tests from their own inputs.

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <memory>
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

v1::Run MakeRun(const std::string& name, const std::string& dataset,
                int num_classes) {
  v1::Run run;
  run.set_name(name);
  run.set_dataset(dataset);
  run.set_num_classes(num_classes);
  return run;
}

RunUpdate MakeUpdate(const std::string& name, int64_t requests,
                     std::vector<int64_t> seen) {
  RunUpdate update;
  update.name = name;
  update.requests = requests;
  update.seen_counts = std::move(seen);
  return update;
}

std::vector<int64_t> Seen(const v1::Run& run) {
  return {run.statistics().seen_counts().begin(),
          run.statistics().seen_counts().end()};
}
std::vector<double> Positive(const v1::Run& run) {
  return {run.statistics().positive_gradient().begin(),
          run.statistics().positive_gradient().end()};
}
std::vector<double> Negative(const v1::Run& run) {
  return {run.statistics().negative_gradient().begin(),
          run.statistics().negative_gradient().end()};
}

int64_t Nanos(const google::protobuf::Timestamp& ts) {
  return ts.seconds() * 1000000000 + ts.nanos();
}

// Asserts the code exactly and the whole message.
void ExpectError(const absl::Status& status, absl::StatusCode code,
                 const std::string& message) {
  EXPECT_EQ(status.code(), code) << status;
  EXPECT_EQ(std::string(status.message()), message);
}

class RunStoreConformanceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    backend_ = MakeStoreBackend();
    absl::Status s = backend_->SetUp();
    ASSERT_TRUE(s.ok()) << s;
    Open();
  }

  void TearDown() override {
    store_.reset();
    if (backend_ != nullptr) backend_->TearDown();
  }

  // Opens (or reopens) the store on the test's storage.
  void Open() {
    store_.reset();
    absl::StatusOr<std::unique_ptr<DatasetStore>> store = backend_->Open();
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
  }

  v1::Dataset MustPut(const v1::Dataset& dataset) {
    absl::StatusOr<v1::Dataset> put = store_->Put(dataset, absl::nullopt);
    EXPECT_TRUE(put.ok()) << put.status();
    return put.ok() ? *put : v1::Dataset();
  }

  v1::Run MustCreate(const v1::Run& run) {
    absl::StatusOr<v1::Run> created = store_->CreateRun(run);
    EXPECT_TRUE(created.ok()) << created.status();
    return created.ok() ? *created : v1::Run();
  }

  v1::Run MustGetRun(const std::string& name) {
    absl::StatusOr<v1::Run> got = store_->GetRun(name);
    EXPECT_TRUE(got.ok()) << got.status();
    return got.ok() ? *got : v1::Run();
  }

  // ApplyRunUpdates with an OK outer status.
  std::vector<absl::StatusOr<v1::Run>> MustApply(
      const std::vector<RunUpdate>& updates) {
    absl::StatusOr<std::vector<absl::StatusOr<v1::Run>>> applied =
        store_->ApplyRunUpdates(updates);
    EXPECT_TRUE(applied.ok()) << applied.status();
    if (!applied.ok()) return {};
    EXPECT_EQ(applied->size(), updates.size());
    return *std::move(applied);
  }

  std::vector<std::string> ListRunNames(const std::string& start_after,
                                        int limit, const std::string& dataset) {
    absl::StatusOr<std::vector<v1::Run>> list =
        store_->ListRuns(start_after, limit, dataset);
    EXPECT_TRUE(list.ok()) << list.status();
    std::vector<std::string> names;
    if (list.ok()) {
      for (const v1::Run& run : *list) names.push_back(run.name());
    }
    return names;
  }

  std::unique_ptr<StoreBackend> backend_;
  std::unique_ptr<DatasetStore> store_;
};

// ------------------------------------------------------------ CreateRun/Get

TEST_F(RunStoreConformanceTest, CreateRunOfADatasetStartsAtZero) {
  MustPut(MakeDataset("lvis", {5000, 30, 2}));
  v1::Run in = MakeRun("r1", "lvis", 0);
  in.mutable_defaults()->set_loss_type(v1::LOSS_TYPE_SEESAW);
  in.mutable_defaults()->set_beta(0.0);  // Set to zero: must stay "set".
  // Output-only fields are ignored on input.
  in.mutable_statistics()->add_seen_counts(7);
  in.mutable_statistics()->set_background_seen(9);
  in.mutable_statistics()->set_eqlv2_updates(4);
  in.set_version(77);
  in.mutable_create_time()->set_seconds(12345);

  v1::Run created = MustCreate(in);
  EXPECT_EQ(created.name(), "r1");
  EXPECT_EQ(created.dataset(), "lvis");
  EXPECT_EQ(created.num_classes(), 3);
  EXPECT_EQ(created.version(), 1u);
  EXPECT_THAT(Seen(created), ElementsAre(0, 0, 0));
  EXPECT_THAT(Positive(created), ElementsAre(0.0, 0.0, 0.0));
  EXPECT_THAT(Negative(created), ElementsAre(0.0, 0.0, 0.0));
  EXPECT_EQ(created.statistics().background_seen(), 0);
  EXPECT_EQ(created.statistics().eqlv2_updates(), 0);
  EXPECT_EQ(created.defaults().loss_type(), v1::LOSS_TYPE_SEESAW);
  EXPECT_TRUE(created.defaults().has_beta());
  EXPECT_GT(created.create_time().seconds(), 1600000000);
  EXPECT_EQ(Nanos(created.create_time()), Nanos(created.update_time()));

  v1::Run got = MustGetRun("r1");
  EXPECT_TRUE(MessageDifferencer::Equals(got, created))
      << got.DebugString() << " vs " << created.DebugString();

  // num_classes equal to the dataset's is accepted too.
  EXPECT_EQ(MustCreate(MakeRun("r2", "lvis", 3)).num_classes(), 3);
}

TEST_F(RunStoreConformanceTest, CreateRunWithoutDatasetUsesNumClasses) {
  v1::Run created = MustCreate(MakeRun("solo", "", 4));
  EXPECT_EQ(created.dataset(), "");
  EXPECT_EQ(created.num_classes(), 4);
  EXPECT_EQ(created.version(), 1u);
  EXPECT_THAT(Seen(created), ElementsAre(0, 0, 0, 0));
  EXPECT_THAT(Positive(created), ElementsAre(0.0, 0.0, 0.0, 0.0));
  EXPECT_THAT(Negative(created), ElementsAre(0.0, 0.0, 0.0, 0.0));
}

TEST_F(RunStoreConformanceTest, CreateRunErrors) {
  MustPut(MakeDataset("d", {1, 2, 3}));
  ExpectError(store_->CreateRun(MakeRun("r", "x", 0)).status(),
              absl::StatusCode::kNotFound, "dataset 'x' not found");
  ExpectError(store_->CreateRun(MakeRun("r", "d", 5)).status(),
              absl::StatusCode::kInvalidArgument,
              "run.num_classes = 5 but dataset 'd' has 3 classes");
  ExpectError(store_->CreateRun(MakeRun("r", "", -1)).status(),
              absl::StatusCode::kInvalidArgument,
              "run.num_classes = -1 is negative");
  ExpectError(store_->CreateRun(MakeRun("r", "d", -1)).status(),
              absl::StatusCode::kInvalidArgument,
              "run.num_classes = -1 is negative");
  ExpectError(store_->CreateRun(MakeRun("r", "", 0)).status(),
              absl::StatusCode::kInvalidArgument,
              "run.num_classes = 0: give run.dataset or run.num_classes >= 1");
  ExpectError(store_->CreateRun(MakeRun("", "", 2)).status(),
              absl::StatusCode::kInvalidArgument, "run.name must not be empty");
  // None of these created anything.
  ExpectError(store_->GetRun("r").status(), absl::StatusCode::kNotFound,
              "run 'r' not found");

  MustCreate(MakeRun("r", "d", 0));
  ExpectError(store_->CreateRun(MakeRun("r", "", 7)).status(),
              absl::StatusCode::kAlreadyExists, "run 'r' already exists");
  ExpectError(store_->CreateRun(MakeRun("r", "d", 0)).status(),
              absl::StatusCode::kAlreadyExists, "run 'r' already exists");
  v1::Run kept = MustGetRun("r");
  EXPECT_EQ(kept.num_classes(), 3);
  EXPECT_EQ(kept.dataset(), "d");
}

TEST_F(RunStoreConformanceTest, GetMissingRunIsNotFound) {
  ExpectError(store_->GetRun("nope").status(), absl::StatusCode::kNotFound,
              "run 'nope' not found");
  // A dataset of that name is not a run.
  MustPut(MakeDataset("nope", {1}));
  ExpectError(store_->GetRun("nope").status(), absl::StatusCode::kNotFound,
              "run 'nope' not found");
}

// ------------------------------------------------------------------ ListRuns

TEST_F(RunStoreConformanceTest, ListRunsOrdersPagesAndFilters) {
  MustPut(MakeDataset("even", {1, 1}));
  MustPut(MakeDataset("odd", {1, 1, 1}));
  const std::vector<std::string> names = {"g", "a", "e", "c", "b", "f", "d"};
  for (size_t i = 0; i < names.size(); ++i) {
    // a, c, e, g -> "even"; b, d, f -> "odd" (by letter).
    const bool even = (names[i][0] - 'a') % 2 == 0;
    MustCreate(MakeRun(names[i], even ? "even" : "odd", 0));
  }
  MustCreate(MakeRun("h", "", 5));

  EXPECT_THAT(ListRunNames("", 100, ""),
              ElementsAre("a", "b", "c", "d", "e", "f", "g", "h"));
  EXPECT_THAT(ListRunNames("", 3, ""), ElementsAre("a", "b", "c"));
  EXPECT_THAT(ListRunNames("c", 3, ""), ElementsAre("d", "e", "f"));
  EXPECT_THAT(ListRunNames("f", 3, ""), ElementsAre("g", "h"));
  EXPECT_THAT(ListRunNames("h", 3, ""), ElementsAre());
  EXPECT_THAT(ListRunNames("bb", 2, ""), ElementsAre("c", "d"));

  EXPECT_THAT(ListRunNames("", 100, "even"), ElementsAre("a", "c", "e", "g"));
  EXPECT_THAT(ListRunNames("", 2, "even"), ElementsAre("a", "c"));
  EXPECT_THAT(ListRunNames("c", 2, "even"), ElementsAre("e", "g"));
  EXPECT_THAT(ListRunNames("", 100, "odd"), ElementsAre("b", "d", "f"));
  EXPECT_THAT(ListRunNames("", 100, "unknown"), ElementsAre());

  absl::StatusOr<std::vector<v1::Run>> list = store_->ListRuns("", 100, "odd");
  ASSERT_TRUE(list.ok()) << list.status();
  for (const v1::Run& run : *list) {
    EXPECT_EQ(run.dataset(), "odd");
    EXPECT_EQ(run.num_classes(), 3);
    EXPECT_EQ(run.version(), 1u);
    EXPECT_THAT(Seen(run), ElementsAre(0, 0, 0));
    EXPECT_TRUE(MessageDifferencer::Equals(run, MustGetRun(run.name())));
  }
}

TEST_F(RunStoreConformanceTest, ListRunsRejectsNonPositiveLimit) {
  ExpectError(store_->ListRuns("", 0, "").status(),
              absl::StatusCode::kInvalidArgument,
              "limit must be positive, got 0");
  ExpectError(store_->ListRuns("", -3, "d").status(),
              absl::StatusCode::kInvalidArgument,
              "limit must be positive, got -3");
  EXPECT_THAT(ListRunNames("", 10, ""), ElementsAre());
}

// ----------------------------------------------------------------- DeleteRun

TEST_F(RunStoreConformanceTest, DeleteRunChecksExistenceAndVersion) {
  ExpectError(store_->DeleteRun("ghost", absl::nullopt),
              absl::StatusCode::kNotFound, "run 'ghost' not found");
  ExpectError(store_->DeleteRun("ghost", 4), absl::StatusCode::kNotFound,
              "run 'ghost' not found");
  ExpectError(store_->DeleteRun("ghost", 0), absl::StatusCode::kNotFound,
              "run 'ghost' not found");

  MustCreate(MakeRun("r", "", 2));
  MustApply({MakeUpdate("r", 2, {1, 1})});  // Version 1 + 2 = 3.
  ExpectError(store_->DeleteRun("r", 1), absl::StatusCode::kAborted,
              "run 'r' is at version 3, not expected_version 1");
  ExpectError(store_->DeleteRun("r", 0), absl::StatusCode::kAborted,
              "run 'r' is at version 3, not expected_version 0");
  EXPECT_EQ(MustGetRun("r").version(), 3u);
  EXPECT_TRUE(store_->DeleteRun("r", 3).ok());
  ExpectError(store_->GetRun("r").status(), absl::StatusCode::kNotFound,
              "run 'r' not found");

  MustCreate(MakeRun("s", "", 2));
  EXPECT_TRUE(store_->DeleteRun("s", absl::nullopt).ok());
  ExpectError(store_->DeleteRun("s", absl::nullopt),
              absl::StatusCode::kNotFound, "run 's' not found");
  // The name is free again: a new run starts over.
  EXPECT_EQ(MustCreate(MakeRun("s", "", 3)).version(), 1u);
}

// ----------------------------------------------------------- ApplyRunUpdates

TEST_F(RunStoreConformanceTest, UpdatesOfOneRunInOneCallAddUp) {
  MustCreate(MakeRun("r", "", 3));
  MustCreate(MakeRun("s", "", 2));
  const v1::Run before = MustGetRun("r");

  RunUpdate first = MakeUpdate("r", 2, {1, 0, 4});
  first.background_seen = 5;
  first.positive_gradient = {0.5, 0.0, 0.25};
  first.negative_gradient = {1.0, 2.0, 3.0};
  first.eqlv2_updates = 2;
  RunUpdate other = MakeUpdate("s", 1, {});  // Targets mode: version only.
  RunUpdate second = MakeUpdate("r", 3, {2, 2, 0});
  second.positive_gradient = {0.125, 1.0, 0.0};
  second.negative_gradient = {};
  second.eqlv2_updates = 1;

  std::this_thread::sleep_for(std::chrono::milliseconds(2));
  std::vector<absl::StatusOr<v1::Run>> results =
      MustApply({first, other, second});
  ASSERT_EQ(results.size(), 3u);
  for (const auto& result : results)
    ASSERT_TRUE(result.ok()) << result.status();

  // After the first update alone.
  EXPECT_EQ(results[0]->version(), 1u + 2);
  EXPECT_THAT(Seen(*results[0]), ElementsAreArray(first.seen_counts));
  EXPECT_EQ(results[0]->statistics().background_seen(), 5);
  EXPECT_THAT(Positive(*results[0]), ElementsAreArray(first.positive_gradient));
  EXPECT_THAT(Negative(*results[0]), ElementsAreArray(first.negative_gradient));
  EXPECT_EQ(results[0]->statistics().eqlv2_updates(), 2);

  EXPECT_EQ(results[1]->name(), "s");
  EXPECT_EQ(results[1]->version(), 2u);
  EXPECT_THAT(Seen(*results[1]), ElementsAre(0, 0));

  // After both: the sums of the inputs.
  std::vector<int64_t> seen(3);
  std::vector<double> positive(3);
  for (int j = 0; j < 3; ++j) {
    seen[j] = first.seen_counts[j] + second.seen_counts[j];
    positive[j] = first.positive_gradient[j] + second.positive_gradient[j];
  }
  const v1::Run& after = *results[2];
  EXPECT_EQ(after.version(), 1u + 2 + 3);
  EXPECT_THAT(Seen(after), ElementsAreArray(seen));
  EXPECT_EQ(after.statistics().background_seen(), 5);
  EXPECT_THAT(Positive(after), ElementsAreArray(positive));
  EXPECT_THAT(Negative(after), ElementsAreArray(first.negative_gradient));
  EXPECT_EQ(after.statistics().eqlv2_updates(), 3);
  EXPECT_EQ(Nanos(after.create_time()), Nanos(before.create_time()));
  EXPECT_GT(Nanos(after.update_time()), Nanos(before.update_time()));

  v1::Run got = MustGetRun("r");
  EXPECT_TRUE(MessageDifferencer::Equals(got, after))
      << got.DebugString() << " vs " << after.DebugString();
  EXPECT_EQ(MustGetRun("s").version(), 2u);

  // An empty batch is a no-op.
  EXPECT_TRUE(MustApply({}).empty());
  EXPECT_EQ(MustGetRun("r").version(), 6u);
}

TEST_F(RunStoreConformanceTest, SkippedUpdatesLeaveOthersApplied) {
  MustCreate(MakeRun("r", "", 3));
  MustCreate(MakeRun("gone", "", 3));
  ASSERT_TRUE(store_->DeleteRun("gone", absl::nullopt).ok());

  RunUpdate near_max = MakeUpdate("r", 1, {0, kInt64Max - 1, 0});
  RunUpdate overflow = MakeUpdate("r", 1, {0, 2, 0});
  RunUpdate deleted = MakeUpdate("gone", 1, {1, 1, 1});
  RunUpdate short_seen = MakeUpdate("r", 1, {1, 1});
  // A valid seen_counts but a bad gradient: nothing of it applies.
  RunUpdate short_positive = MakeUpdate("r", 1, {5, 0, 0});
  short_positive.positive_gradient = {1.0, 2.0, 3.0, 4.0};
  RunUpdate no_requests = MakeUpdate("r", 0, {1, 0, 0});
  RunUpdate negative = MakeUpdate("r", 1, {0, 0, -1});
  RunUpdate nan_gradient = MakeUpdate("r", 1, {});
  nan_gradient.negative_gradient = {0.0, std::nan(""), 0.0};
  RunUpdate huge = MakeUpdate("r", 1, {});
  huge.positive_gradient = {0.0, 0.0, 1e308};
  RunUpdate too_huge = huge;  // 1e308 + 1e308 is not finite.
  RunUpdate background_max = MakeUpdate("r", 1, {});
  background_max.background_seen = kInt64Max;
  RunUpdate background_overflow = MakeUpdate("r", 1, {});
  background_overflow.background_seen = 1;
  RunUpdate last_ok = MakeUpdate("r", 1, {0, 1, 0});  // Reaches INT64_MAX.

  std::vector<absl::StatusOr<v1::Run>> results =
      MustApply({near_max, overflow, deleted, short_seen, short_positive,
                 no_requests, negative, nan_gradient, huge, too_huge,
                 background_max, background_overflow, last_ok});
  ASSERT_EQ(results.size(), 13u);
  ASSERT_TRUE(results[0].ok()) << results[0].status();
  EXPECT_EQ(results[0]->version(), 2u);
  ExpectError(results[1].status(), absl::StatusCode::kOutOfRange,
              "run 'r': seen_counts[1] would overflow int64");
  ExpectError(results[2].status(), absl::StatusCode::kNotFound,
              "run 'gone' not found");
  ExpectError(results[3].status(), absl::StatusCode::kInvalidArgument,
              "run 'r': seen_counts has 2 entries, not its 3 classes");
  ExpectError(results[4].status(), absl::StatusCode::kInvalidArgument,
              "run 'r': positive_gradient has 4 entries, not its 3 classes");
  ExpectError(results[5].status(), absl::StatusCode::kInvalidArgument,
              "run 'r': requests = 0 is not positive");
  ExpectError(results[6].status(), absl::StatusCode::kInvalidArgument,
              "run 'r': seen_counts[2] += -1 is negative");
  EXPECT_EQ(results[7].status().code(), absl::StatusCode::kInvalidArgument)
      << results[7].status();
  EXPECT_THAT(std::string(results[7].status().message()),
              HasSubstr("run 'r': negative_gradient[1] += "));
  ASSERT_TRUE(results[8].ok()) << results[8].status();
  ExpectError(results[9].status(), absl::StatusCode::kOutOfRange,
              "run 'r': positive_gradient[2] would overflow float64");
  ASSERT_TRUE(results[10].ok()) << results[10].status();
  ExpectError(results[11].status(), absl::StatusCode::kOutOfRange,
              "run 'r': background_seen would overflow int64");
  ASSERT_TRUE(results[12].ok()) << results[12].status();

  // Applied: near_max, huge, background_max, last_ok (4 requests).
  const v1::Run& last = *results[12];
  EXPECT_EQ(last.version(), 1u + 4);
  EXPECT_THAT(Seen(last), ElementsAre(0, kInt64Max, 0));
  EXPECT_EQ(last.statistics().background_seen(), kInt64Max);
  EXPECT_THAT(Positive(last), ElementsAre(0.0, 0.0, 1e308));
  EXPECT_THAT(Negative(last), ElementsAre(0.0, 0.0, 0.0));
  EXPECT_TRUE(MessageDifferencer::Equals(MustGetRun("r"), last));
  ExpectError(store_->GetRun("gone").status(), absl::StatusCode::kNotFound,
              "run 'gone' not found");
}

TEST_F(RunStoreConformanceTest, VersionOverflowIsOutOfRange) {
  MustCreate(MakeRun("r", "", 1));
  // Version 1 + (INT64_MAX - 1) = INT64_MAX, the largest a store keeps.
  std::vector<absl::StatusOr<v1::Run>> results =
      MustApply({MakeUpdate("r", kInt64Max - 1, {}), MakeUpdate("r", 1, {})});
  ASSERT_EQ(results.size(), 2u);
  ASSERT_TRUE(results[0].ok()) << results[0].status();
  EXPECT_EQ(results[0]->version(), static_cast<uint64_t>(kInt64Max));
  ExpectError(results[1].status(), absl::StatusCode::kOutOfRange,
              "run 'r': version would overflow int64");
  EXPECT_EQ(MustGetRun("r").version(), static_cast<uint64_t>(kInt64Max));
}

// ---------------------------------------------------------------- Durability

TEST_F(RunStoreConformanceTest, RunsPersistAcrossReopen) {
  MustPut(MakeDataset("d", {10, 20}));
  MustCreate(MakeRun("a", "d", 0));
  v1::Run b_in = MakeRun("b", "", 2);
  b_in.mutable_defaults()->set_tau(0.5);
  MustCreate(b_in);
  RunUpdate update = MakeUpdate("a", 4, {3, 1});
  update.positive_gradient = {0.1, 0.2};
  update.negative_gradient = {0.3, 0.4};
  update.eqlv2_updates = 4;
  update.background_seen = 2;
  std::vector<absl::StatusOr<v1::Run>> results = MustApply({update});
  ASSERT_EQ(results.size(), 1u);
  ASSERT_TRUE(results[0].ok()) << results[0].status();
  const v1::Run a = *results[0];
  const v1::Run b = MustGetRun("b");

  Open();
  EXPECT_TRUE(MessageDifferencer::Equals(MustGetRun("a"), a))
      << MustGetRun("a").DebugString() << " vs " << a.DebugString();
  EXPECT_TRUE(MessageDifferencer::Equals(MustGetRun("b"), b));
  EXPECT_TRUE(MustGetRun("b").defaults().has_tau());
  EXPECT_THAT(ListRunNames("", 10, "d"), ElementsAre("a"));
  // Versions continue where they were.
  results = MustApply({MakeUpdate("a", 1, {0, 1})});
  ASSERT_TRUE(results[0].ok()) << results[0].status();
  EXPECT_EQ(results[0]->version(), 1u + 4 + 1);
  EXPECT_THAT(Seen(*results[0]), ElementsAre(3, 2));
}

// ---------------------------------------------------- Datasets and their runs

TEST_F(RunStoreConformanceTest, DatasetUsedByARunCannotBeDeleted) {
  MustPut(MakeDataset("d", {1, 2, 3}));
  MustPut(MakeDataset("free", {1}));
  MustCreate(MakeRun("zeta", "d", 0));
  MustCreate(MakeRun("alpha", "d", 0));
  MustCreate(MakeRun("other", "", 3));

  // The first run by name is named.
  ExpectError(store_->Delete("d", absl::nullopt),
              absl::StatusCode::kFailedPrecondition,
              "dataset 'd' is used by run 'alpha'; delete its runs first");
  // expected_version is checked first.
  ExpectError(store_->Delete("d", 5), absl::StatusCode::kAborted,
              "dataset 'd' is at version 1; expected_version is 5");
  ExpectError(store_->Delete("d", 1), absl::StatusCode::kFailedPrecondition,
              "dataset 'd' is used by run 'alpha'; delete its runs first");
  EXPECT_EQ(store_->Get("d")->version(), 1u);
  EXPECT_TRUE(store_->Delete("free", absl::nullopt).ok());

  ASSERT_TRUE(store_->DeleteRun("alpha", absl::nullopt).ok());
  ExpectError(store_->Delete("d", absl::nullopt),
              absl::StatusCode::kFailedPrecondition,
              "dataset 'd' is used by run 'zeta'; delete its runs first");
  ASSERT_TRUE(store_->DeleteRun("zeta", absl::nullopt).ok());
  EXPECT_TRUE(store_->Delete("d", absl::nullopt).ok());
}

TEST_F(RunStoreConformanceTest, ReplacementOfAUsedDatasetKeepsItsClasses) {
  MustPut(MakeDataset("d", {1, 2, 3}));
  MustCreate(MakeRun("r2", "d", 0));
  MustCreate(MakeRun("r1", "d", 0));

  ExpectError(store_->Put(MakeDataset("d", {1, 2}), absl::nullopt).status(),
              absl::StatusCode::kFailedPrecondition,
              "dataset 'd' has 3 classes and is used by run 'r1'; a "
              "replacement must keep 3 classes");
  ExpectError(
      store_->Put(MakeDataset("d", {1, 2, 3, 4}), absl::nullopt).status(),
      absl::StatusCode::kFailedPrecondition,
      "dataset 'd' has 3 classes and is used by run 'r1'; a replacement "
      "must keep 3 classes");
  EXPECT_EQ(store_->Get("d")->version(), 1u);
  // Same class count: replaced.
  absl::StatusOr<v1::Dataset> put =
      store_->Put(MakeDataset("d", {7, 8, 9}), absl::nullopt);
  ASSERT_TRUE(put.ok()) << put.status();
  EXPECT_EQ(put->version(), 2u);
  // The count checks of AddClassCounts are untouched by runs.
  const int32_t labels[] = {0};
  EXPECT_TRUE(store_->AddClassCounts("d", {}, labels).ok());

  // Once no run uses it, any replacement goes.
  ASSERT_TRUE(store_->DeleteRun("r1", absl::nullopt).ok());
  ASSERT_TRUE(store_->DeleteRun("r2", absl::nullopt).ok());
  put = store_->Put(MakeDataset("d", {1}), absl::nullopt);
  ASSERT_TRUE(put.ok()) << put.status();
  EXPECT_EQ(put->version(), 4u);
}

// --------------------------------------------------------------- Concurrency

// Threads on two stores (two replicas) update one run: nothing is lost.
TEST_F(RunStoreConformanceTest, ConcurrentApplyRunUpdatesLosesNothing) {
  absl::StatusOr<std::unique_ptr<DatasetStore>> other = backend_->Open();
  ASSERT_TRUE(other.ok()) << other.status();
  constexpr int kThreads = 6;
  constexpr int kCalls = 60;
  MustCreate(MakeRun("r", "", 3));
  MustCreate(MakeRun("s", "", 1));
  std::atomic<int> failures{0};
  absl::Barrier start(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    DatasetStore* store = t % 2 == 0 ? store_.get() : other->get();
    threads.emplace_back([&, t, store] {
      start.Block();
      for (int i = 0; i < kCalls; ++i) {
        RunUpdate r = MakeUpdate("r", 2, {1, t, 0});
        r.positive_gradient = {0.5, 0.0, 0.25};
        r.eqlv2_updates = 1;
        // Alternate the order of the two runs between threads.
        std::vector<RunUpdate> batch = {r, MakeUpdate("s", 1, {1})};
        if (t % 3 == 0) std::swap(batch[0], batch[1]);
        absl::StatusOr<std::vector<absl::StatusOr<v1::Run>>> applied =
            store->ApplyRunUpdates(batch);
        if (!applied.ok()) {
          ++failures;
          continue;
        }
        for (const auto& result : *applied) {
          if (!result.ok()) ++failures;
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(failures.load(), 0);

  int64_t sum_t = 0;
  for (int t = 0; t < kThreads; ++t) sum_t += t;
  const int64_t n = kThreads * kCalls;
  const v1::Run r = MustGetRun("r");
  EXPECT_EQ(r.version(), static_cast<uint64_t>(1 + 2 * n));
  EXPECT_THAT(Seen(r), ElementsAre(n, sum_t * kCalls, 0));
  // Multiples of 1/4 below 2^53: exact in float64.
  EXPECT_THAT(Positive(r), ElementsAre(0.5 * n, 0.0, 0.25 * n));
  EXPECT_EQ(r.statistics().eqlv2_updates(), n);
  const v1::Run s = MustGetRun("s");
  EXPECT_EQ(s.version(), static_cast<uint64_t>(1 + n));
  EXPECT_THAT(Seen(s), ElementsAre(n));
}

// The flusher's load (runs_design.md: every 100 ms, up to hundreds of
// runs): one call updating 300 runs of 100 classes, ten times. Checks the
// sums and prints the time per call.
TEST_F(RunStoreConformanceTest, ApplyRunUpdatesOfManyRuns) {
  constexpr int kRuns = 300;
  constexpr int kClasses = 100;
  constexpr int kRounds = 10;
  for (int i = 0; i < kRuns; ++i) {
    MustCreate(MakeRun(absl::StrCat("run-", i), "", kClasses));
  }
  std::vector<RunUpdate> batch;
  for (int i = 0; i < kRuns; ++i) {
    RunUpdate update = MakeUpdate(absl::StrCat("run-", i), 3,
                                  std::vector<int64_t>(kClasses, 0));
    update.seen_counts[i % kClasses] = i;
    update.positive_gradient.assign(kClasses, 0.5);
    update.negative_gradient.assign(kClasses, 0.25);
    update.eqlv2_updates = 3;
    batch.push_back(std::move(update));
  }
  const auto start = std::chrono::steady_clock::now();
  for (int round = 0; round < kRounds; ++round) {
    std::vector<absl::StatusOr<v1::Run>> results = MustApply(batch);
    for (const auto& result : results) {
      ASSERT_TRUE(result.ok()) << result.status();
    }
  }
  const double ms = std::chrono::duration<double, std::milli>(
                        std::chrono::steady_clock::now() - start)
                        .count();
  std::printf("ApplyRunUpdates of %d runs x %d classes: %.2f ms per call\n",
              kRuns, kClasses, ms / kRounds);
  for (int i = 0; i < kRuns; i += 37) {
    const v1::Run run = MustGetRun(absl::StrCat("run-", i));
    EXPECT_EQ(run.version(), 1u + 3 * kRounds);
    std::vector<int64_t> seen(kClasses, 0);
    seen[i % kClasses] = int64_t{i} * kRounds;
    EXPECT_THAT(Seen(run), ElementsAreArray(seen));
    EXPECT_THAT(Positive(run),
                ElementsAreArray(std::vector<double>(kClasses, 0.5 * kRounds)));
    EXPECT_THAT(Negative(run), ElementsAreArray(std::vector<double>(
                                   kClasses, 0.25 * kRounds)));
    EXPECT_EQ(run.statistics().eqlv2_updates(), 3 * kRounds);
  }
}

// CreateRun racing a Delete of its dataset on another store: exactly one
// wins, and no run is ever left referring to a missing dataset.
TEST_F(RunStoreConformanceTest, CreateRunRacingDatasetDeleteKeepsIntegrity) {
  absl::StatusOr<std::unique_ptr<DatasetStore>> other = backend_->Open();
  ASSERT_TRUE(other.ok()) << other.status();
  constexpr int kRounds = 25;
  for (int round = 0; round < kRounds; ++round) {
    const std::string run = absl::StrCat("run-", round);
    MustPut(MakeDataset("d", {1, 2}));
    absl::Barrier start(2);
    absl::Status created;
    absl::Status deleted;
    std::thread creator([&] {
      start.Block();
      created = store_->CreateRun(MakeRun(run, "d", 0)).status();
    });
    std::thread deleter([&] {
      start.Block();
      deleted = (*other)->Delete("d", absl::nullopt);
    });
    creator.join();
    deleter.join();
    if (created.ok()) {
      ExpectError(deleted, absl::StatusCode::kFailedPrecondition,
                  absl::StrCat("dataset 'd' is used by run '", run,
                               "'; delete its runs first"));
      EXPECT_TRUE(store_->Get("d").ok());
      ASSERT_TRUE(store_->DeleteRun(run, absl::nullopt).ok());
      ASSERT_TRUE(store_->Delete("d", absl::nullopt).ok());
    } else {
      ExpectError(created, absl::StatusCode::kNotFound,
                  "dataset 'd' not found");
      EXPECT_TRUE(deleted.ok()) << deleted;
      ExpectError(store_->GetRun(run).status(), absl::StatusCode::kNotFound,
                  absl::StrCat("run '", run, "' not found"));
    }
  }
  EXPECT_THAT(ListRunNames("", 100, ""), ElementsAre());
}

// Concurrent creates of one run: exactly one wins.
TEST_F(RunStoreConformanceTest, ConcurrentCreateRunHasExactlyOneWinner) {
  absl::StatusOr<std::unique_ptr<DatasetStore>> other = backend_->Open();
  ASSERT_TRUE(other.ok()) << other.status();
  constexpr int kThreads = 6;
  absl::Barrier start(kThreads);
  std::atomic<int> winners{0};
  std::atomic<int> taken{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    DatasetStore* store = t % 2 == 0 ? store_.get() : other->get();
    threads.emplace_back([&, t, store] {
      start.Block();
      absl::StatusOr<v1::Run> created =
          store->CreateRun(MakeRun("r", "", t + 1));
      if (created.ok()) ++winners;
      if (created.status().code() == absl::StatusCode::kAlreadyExists) {
        ++taken;
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(winners.load(), 1);
  EXPECT_EQ(taken.load(), kThreads - 1);
  EXPECT_EQ(MustGetRun("r").version(), 1u);
}

}  // namespace
}  // namespace cbloss
