// Copyright 2026 The cbloss Authors.
//
// Runs without gRPC (LOSS.md section 11): what a request reads of its run
// and adds to it (ResolveComputation with a RunView, RunComputation's
// update), and the RunRegistry over a real SQLite store: group commit,
// nothing lost under concurrency or a failing store, back-pressure when a
// commit is late, the final write of Close.

#include "server/run_registry.h"

#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "server/compute_request.h"
#include "server/store/sqlite_dataset_store.h"

namespace cbloss::server {
namespace {

using std::chrono::milliseconds;

// ---------------------------------------------------------------------------
// The request path with a run.

v1::ComputeLossRequest Request(int rows, int classes,
                               std::vector<int32_t> labels) {
  v1::ComputeLossRequest r;
  r.mutable_logits()->add_shape(rows);
  r.mutable_logits()->add_shape(classes);
  for (int k = 0; k < rows * classes; ++k) {
    r.mutable_logits()->add_float_data(0.25f * static_cast<float>(k % 7) -
                                       0.5f);
  }
  for (int32_t y : labels) r.add_labels(y);
  r.set_want_gradient(true);
  return r;
}

RunView View(const std::string& name, int classes) {
  RunView v;
  v.name = name;
  v.num_classes = classes;
  v.version = 7;
  v.seen_counts.assign(classes, 0);
  v.positive_gradient.assign(classes, 0.0);
  v.negative_gradient.assign(classes, 0.0);
  return v;
}

TEST(RunRequest, AccumulateWithoutARunIsRefused) {
  v1::ComputeLossRequest r = Request(1, 2, {0});
  r.mutable_class_counts()->add_counts(1);
  r.mutable_class_counts()->add_counts(1);
  r.set_accumulate(true);
  absl::StatusOr<Computation> c = ResolveComputation(r, nullptr);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(c.status().message(),
            "accumulate needs run: name the run whose statistics this "
            "request updates");
}

TEST(RunRequest, EqlV2WithoutARunIsRefused) {
  v1::ComputeLossRequest r = Request(1, 2, {0});
  r.mutable_class_counts()->add_counts(1);
  r.mutable_class_counts()->add_counts(1);
  r.mutable_config()->set_loss_type(v1::LOSS_TYPE_EQL_V2);
  absl::StatusOr<Computation> c = ResolveComputation(r, nullptr);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(c.status().message(),
            "config.loss_type = eql_v2 needs a run (LOSS.md section 11): "
            "name one in run");
}

TEST(RunRequest, LogitsMustHaveTheRunsClasses) {
  const RunView run = View("r", 3);
  v1::ComputeLossRequest r = Request(1, 2, {0});
  r.set_run("r");
  r.mutable_config()->set_weighting(v1::WEIGHTING_SCHEME_NONE);
  absl::StatusOr<Computation> c = ResolveComputation(r, nullptr, &run);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(c.status().message(),
            "logits.shape[1] = 2 but run 'r' has 3 classes");
}

TEST(RunRequest, InlineCountsMustHaveTheRunsClasses) {
  const RunView run = View("r", 3);
  v1::ComputeLossRequest r = Request(1, 3, {0});
  r.set_run("r");
  r.mutable_class_counts()->add_counts(4);
  absl::StatusOr<Computation> c = ResolveComputation(r, nullptr, &run);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(c.status().message(),
            "class_counts has 1 classes but run 'r' has 3");
}

TEST(RunRequest, WithoutStaticCountsOnlyLossesThatNeedNoneRun) {
  const RunView run = View("r", 2);
  v1::ComputeLossRequest r = Request(1, 2, {0});
  r.set_run("r");
  // SOFTMAX with the default weighting (effective number) needs counts.
  absl::StatusOr<Computation> c = ResolveComputation(r, nullptr, &run);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(c.status().message(),
            "run 'r' has no dataset and the request gives no class_counts; "
            "loss type softmax with weighting effective_number needs class "
            "counts");
  // With weighting NONE it needs none: the loss is plain cross-entropy.
  r.mutable_config()->set_weighting(v1::WEIGHTING_SCHEME_NONE);
  c = ResolveComputation(r, nullptr, &run);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->run, "r");
  EXPECT_EQ(c->run_version, 7u);
  // BALANCED_SOFTMAX reads log n_j: refused even with weighting NONE.
  r.mutable_config()->set_loss_type(v1::LOSS_TYPE_BALANCED_SOFTMAX);
  c = ResolveComputation(r, nullptr, &run);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kFailedPrecondition);
}

// SEESAW's counts with a run are its seen counts plus, when it accumulates,
// the request's own foreground labels (LOSS.md section 10): [5, 0, 2] seen,
// labels 0, 1, 1 (and a background row, label 3, and an ignored row) give
// the counts [6, 2, 2].
TEST(RunRequest, SeesawCountsAreTheSeenCountsWithTheRequestsOwnLabels) {
  RunView run = View("r", 3);
  run.seen_counts = {5, 0, 2};
  v1::ComputeLossRequest r = Request(5, 3, {0, 1, 3, -100, 1});
  r.set_run("r");
  r.set_accumulate(true);
  r.mutable_config()->set_loss_type(v1::LOSS_TYPE_SEESAW);
  absl::StatusOr<Computation> c = ResolveComputation(r, nullptr, &run);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(
      std::vector<int64_t>(c->source.counts.begin(), c->source.counts.end()),
      (std::vector<int64_t>{6, 2, 2}));
  // Without accumulate: the seen counts alone.
  r.set_accumulate(false);
  c = ResolveComputation(r, nullptr, &run);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(
      std::vector<int64_t>(c->source.counts.begin(), c->source.counts.end()),
      (std::vector<int64_t>{5, 0, 2}));
}

TEST(RunRequest, TheUpdateCountsForegroundAndBackgroundLabels) {
  RunView run = View("r", 3);
  v1::ComputeLossRequest r = Request(6, 3, {0, 1, 3, -100, 1, 3});
  r.set_run("r");
  r.set_accumulate(true);
  r.mutable_config()->set_loss_type(v1::LOSS_TYPE_SEESAW);
  absl::StatusOr<Computation> c = ResolveComputation(r, nullptr, &run);
  ASSERT_TRUE(c.ok()) << c.status();
  v1::ComputeLossResponse response;
  RunUpdate update;
  ASSERT_TRUE(RunComputation(*c, {}, &response, nullptr, &update).ok());
  EXPECT_EQ(update.name, "r");
  EXPECT_EQ(update.requests, 1);
  EXPECT_EQ(update.seen_counts, (std::vector<int64_t>{1, 2, 0}));
  EXPECT_EQ(update.background_seen, 2);
  EXPECT_TRUE(update.positive_gradient.empty());
  EXPECT_EQ(update.eqlv2_updates, 0);
  EXPECT_EQ(response.run_version(), 7u);
}

double Sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }
double Softplus(double x) { return std::log1p(std::exp(x)); }

// EQL_V2 reads P, Q before the request and adds its increments after
// (LOSS.md section 10), here for one row, label 0, two classes, defaults
// gamma 12, mu 0.8, alpha 4, computed in float64 from the formulas.
TEST(RunRequest, EqlV2WeightsComeFromTheRunAndItsIncrementsAreReturned) {
  RunView run = View("r", 2);
  run.positive_gradient = {3.0, 0.5};
  run.negative_gradient = {4.0, 1.0};
  run.eqlv2_updates = 2;
  v1::ComputeLossRequest r;
  r.mutable_logits()->add_shape(1);
  r.mutable_logits()->add_shape(2);
  const double z[2] = {0.7, -1.2};
  for (double v : z) r.mutable_logits()->add_float_data(static_cast<float>(v));
  r.add_labels(0);
  r.set_run("r");
  r.set_accumulate(true);
  r.mutable_config()->set_loss_type(v1::LOSS_TYPE_EQL_V2);
  absl::StatusOr<Computation> c = ResolveComputation(r, nullptr, &run);
  ASSERT_TRUE(c.ok()) << c.status();
  v1::ComputeLossResponse response;
  RunUpdate update;
  ASSERT_TRUE(RunComputation(*c, {}, &response, nullptr, &update).ok());

  const double t[2] = {1.0, 0.0};
  double loss = 0.0, dp[2], dq[2];
  for (int j = 0; j < 2; ++j) {
    const double ratio =
        run.positive_gradient[j] / (run.negative_gradient[j] + 1e-10);
    const double q = Sigmoid(12.0 * (ratio - 0.8));
    const double p = 1.0 + 4.0 * (1.0 - q);
    const double e = p * t[j] + q * (1.0 - t[j]);
    loss += e * (Softplus(z[j]) - t[j] * z[j]);
    const double g = std::fabs(Sigmoid(z[j]) - t[j]);
    dp[j] = e * g * t[j];
    dq[j] = e * g * (1.0 - t[j]);
  }
  EXPECT_NEAR(response.loss(), loss, 1e-6 * std::fabs(loss));
  ASSERT_EQ(update.positive_gradient.size(), 2u);
  ASSERT_EQ(update.negative_gradient.size(), 2u);
  for (int j = 0; j < 2; ++j) {
    EXPECT_NEAR(update.positive_gradient[j], dp[j], 1e-6) << j;
    EXPECT_NEAR(update.negative_gradient[j], dq[j], 1e-6) << j;
  }
  EXPECT_EQ(update.eqlv2_updates, 1);
  EXPECT_EQ(update.seen_counts, (std::vector<int64_t>{1, 0}));
}

// ---------------------------------------------------------------------------
// The registry over a real store.

// A store that delegates to SQLite and can fail or hold ApplyRunUpdates.
class ControlledStore final : public DatasetStore {
 public:
  explicit ControlledStore(std::unique_ptr<DatasetStore> inner)
      : inner_(std::move(inner)) {}

  std::atomic<bool> fail_updates{false};
  // While true, ApplyRunUpdates waits until Release().
  void Hold() {
    std::lock_guard<std::mutex> lock(mu_);
    held_ = true;
  }
  void Release() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      held_ = false;
    }
    cv_.notify_all();
  }
  // True once an ApplyRunUpdates call is waiting in Hold.
  bool WaitUntilHolding(milliseconds timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, timeout, [this] { return holding_; });
  }

  absl::StatusOr<v1::Dataset> Put(const v1::Dataset& d,
                                  absl::optional<uint64_t> e) override {
    return inner_->Put(d, e);
  }
  absl::StatusOr<v1::Dataset> Get(absl::string_view n) override {
    return inner_->Get(n);
  }
  absl::StatusOr<std::vector<v1::Dataset>> List(absl::string_view a,
                                                int l) override {
    return inner_->List(a, l);
  }
  absl::Status Delete(absl::string_view n,
                      absl::optional<uint64_t> e) override {
    return inner_->Delete(n, e);
  }
  absl::StatusOr<v1::Dataset> AddClassCounts(
      absl::string_view n, absl::Span<const int64_t> d,
      absl::Span<const int32_t> l) override {
    return inner_->AddClassCounts(n, d, l);
  }
  absl::StatusOr<v1::Run> CreateRun(const v1::Run& r) override {
    return inner_->CreateRun(r);
  }
  absl::StatusOr<v1::Run> GetRun(absl::string_view n) override {
    return inner_->GetRun(n);
  }
  absl::StatusOr<std::vector<v1::Run>> ListRuns(absl::string_view a, int l,
                                                absl::string_view d) override {
    return inner_->ListRuns(a, l, d);
  }
  absl::Status DeleteRun(absl::string_view n,
                         absl::optional<uint64_t> e) override {
    return inner_->DeleteRun(n, e);
  }
  absl::StatusOr<std::vector<absl::StatusOr<v1::Run>>> ApplyRunUpdates(
      absl::Span<const RunUpdate> updates) override {
    {
      std::unique_lock<std::mutex> lock(mu_);
      holding_ = held_;
      cv_.notify_all();
      cv_.wait(lock, [this] { return !held_; });
      holding_ = false;
    }
    if (fail_updates) return absl::UnavailableError("injected failure");
    return inner_->ApplyRunUpdates(updates);
  }

 private:
  std::unique_ptr<DatasetStore> inner_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool held_ = false;
  bool holding_ = false;
};

class RunRegistryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("cbloss-run-registry-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    Open();
  }
  void TearDown() override {
    runs_.reset();
    store_.reset();
    std::filesystem::remove_all(dir_);
  }

  void Open(RunRegistry::Options options = {}) {
    absl::StatusOr<std::unique_ptr<DatasetStore>> sqlite =
        OpenSqliteDatasetStore(dir_.string());
    ASSERT_TRUE(sqlite.ok()) << sqlite.status();
    store_ = std::make_unique<ControlledStore>(*std::move(sqlite));
    absl::StatusOr<std::unique_ptr<RunRegistry>> runs =
        RunRegistry::Create(store_.get(), options);
    ASSERT_TRUE(runs.ok()) << runs.status();
    runs_ = *std::move(runs);
  }
  void Reopen(RunRegistry::Options options = {}) {
    runs_.reset();
    store_.reset();
    Open(options);
  }

  v1::Run MakeRun(const std::string& name, int classes) {
    v1::Run run;
    run.set_name(name);
    run.set_num_classes(classes);
    absl::StatusOr<v1::Run> created = runs_->Create(run);
    EXPECT_TRUE(created.ok()) << created.status();
    return created.ok() ? *created : v1::Run();
  }

  static RunUpdate OneLabel(const std::string& name, int classes, int label) {
    RunUpdate u;
    u.name = name;
    u.requests = 1;
    u.seen_counts.assign(classes, 0);
    u.seen_counts[label] = 1;
    return u;
  }

  static std::chrono::system_clock::time_point Soon() {
    return std::chrono::system_clock::now() + std::chrono::seconds(10);
  }

  std::filesystem::path dir_;
  std::unique_ptr<ControlledStore> store_;
  std::unique_ptr<RunRegistry> runs_;
};

TEST_F(RunRegistryTest, CreateStartsAtZeroAndVersionOne) {
  const v1::Run run = MakeRun("r", 3);
  EXPECT_EQ(run.version(), 1u);
  EXPECT_EQ(run.statistics().seen_counts_size(), 3);
  for (int64_t n : run.statistics().seen_counts()) EXPECT_EQ(n, 0);
  absl::StatusOr<RunView> view = runs_->View("r", "run");
  ASSERT_TRUE(view.ok());
  EXPECT_EQ(view->version, 1u);
  EXPECT_EQ(view->num_classes, 3);
}

TEST_F(RunRegistryTest, ConcurrentUpdatesAreAllKeptAndSurviveClose) {
  constexpr int kThreads = 8, kEach = 250, kClasses = 4;
  MakeRun("r", kClasses);
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int k = 0; k < kEach; ++k) {
        if (!runs_->Accumulate(OneLabel("r", kClasses, t % kClasses), Soon())
                 .ok()) {
          ++failures;
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  absl::StatusOr<v1::Run> seen = runs_->Get("r", "name");
  ASSERT_TRUE(seen.ok());
  EXPECT_EQ(seen->version(), 1u + kThreads * kEach);
  Reopen();  // Close writes what is left
  absl::StatusOr<v1::Run> stored = store_->GetRun("r");
  ASSERT_TRUE(stored.ok());
  EXPECT_EQ(stored->version(), 1u + kThreads * kEach);
  for (int j = 0; j < kClasses; ++j) {
    // Threads t and t + 4 add to class t % 4.
    EXPECT_EQ(stored->statistics().seen_counts(j), 2 * kEach) << j;
  }
}

TEST_F(RunRegistryTest, VersionsAreConsecutiveForOneCaller) {
  MakeRun("r", 2);
  for (uint64_t k = 0; k < 20; ++k) {
    absl::StatusOr<uint64_t> v = runs_->Accumulate(OneLabel("r", 2, 1), Soon());
    ASSERT_TRUE(v.ok());
    EXPECT_EQ(*v, 2 + k);
  }
}

TEST_F(RunRegistryTest, AFailedCommitKeepsTheUpdatesForTheNext) {
  RunRegistry::Options slow;
  slow.flush_interval = milliseconds(60000);  // flushes only when asked
  Reopen(slow);
  MakeRun("r", 2);
  store_->fail_updates = true;
  for (int k = 0; k < 3; ++k) {
    ASSERT_TRUE(runs_->Accumulate(OneLabel("r", 2, k % 2), Soon()).ok());
  }
  EXPECT_EQ(runs_->Flush().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(runs_->unflushed_updates(), 3);
  ASSERT_TRUE(runs_->Accumulate(OneLabel("r", 2, 0), Soon()).ok());
  absl::StatusOr<v1::Run> seen = runs_->Get("r", "name");
  ASSERT_TRUE(seen.ok());
  EXPECT_EQ(seen->version(), 5u);
  EXPECT_EQ(store_->GetRun("r")->version(), 1u);  // nothing written yet
  store_->fail_updates = false;
  ASSERT_TRUE(runs_->Flush().ok());
  EXPECT_EQ(runs_->unflushed_updates(), 0);
  absl::StatusOr<v1::Run> stored = store_->GetRun("r");
  ASSERT_TRUE(stored.ok());
  EXPECT_EQ(stored->version(), 5u);
  EXPECT_EQ(stored->statistics().seen_counts(0), 3);
  EXPECT_EQ(stored->statistics().seen_counts(1), 1);
}

// A commit that is late holds new updates back until it is done: what a
// crash can lose stays bounded by the lag, however slow the disk.
TEST_F(RunRegistryTest, ALateCommitMakesNewUpdatesWaitUntilDurable) {
  RunRegistry::Options options;
  options.flush_interval = milliseconds(5);
  options.max_flush_lag = milliseconds(50);
  Reopen(options);
  MakeRun("r", 2);
  store_->Hold();
  ASSERT_TRUE(runs_->Accumulate(OneLabel("r", 2, 0), Soon()).ok());
  ASSERT_TRUE(store_->WaitUntilHolding(milliseconds(5000)));
  std::this_thread::sleep_for(milliseconds(150));  // now the commit is late
  std::atomic<bool> returned{false};
  std::thread late([&] {
    EXPECT_TRUE(runs_->Accumulate(OneLabel("r", 2, 1), Soon()).ok());
    returned = true;
  });
  std::this_thread::sleep_for(milliseconds(200));
  EXPECT_FALSE(returned.load()) << "acknowledged before any commit finished";
  store_->Release();
  late.join();
  // It returned only once durable: the store has both updates.
  absl::StatusOr<v1::Run> stored = store_->GetRun("r");
  ASSERT_TRUE(stored.ok());
  EXPECT_EQ(stored->version(), 3u);
  EXPECT_EQ(stored->statistics().seen_counts(1), 1);
}

TEST_F(RunRegistryTest, DeleteChecksTheVersionCallersSaw) {
  RunRegistry::Options slow;
  slow.flush_interval = milliseconds(60000);
  Reopen(slow);
  MakeRun("r", 2);
  ASSERT_TRUE(runs_->Accumulate(OneLabel("r", 2, 0), Soon()).ok());
  ASSERT_TRUE(runs_->Accumulate(OneLabel("r", 2, 0), Soon()).ok());
  // Version 3 in memory, 1 in the store until the delete writes it.
  EXPECT_EQ(runs_->Delete("r", 1).code(), absl::StatusCode::kAborted);
  EXPECT_TRUE(runs_->Delete("r", 3).ok());
  EXPECT_EQ(runs_->View("r", "run").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(runs_->Accumulate(OneLabel("r", 2, 0), Soon()).status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(RunRegistryTest, NothingIsAppliedAfterClose) {
  MakeRun("r", 2);
  runs_->Close();
  EXPECT_EQ(runs_->Accumulate(OneLabel("r", 2, 0), Soon()).status().code(),
            absl::StatusCode::kUnavailable);
}

TEST_F(RunRegistryTest, ABadNameNamesTheField) {
  absl::StatusOr<RunView> v = runs_->View("Bad Name", "run");
  EXPECT_EQ(v.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(v.status().message().find("run = 'Bad Name'"),
            absl::string_view::npos)
      << v.status();
  EXPECT_EQ(runs_->Get("absent", "name").status().message(),
            "run 'absent' not found");
}

}  // namespace
}  // namespace cbloss::server
