// Copyright 2026 The cbloss Authors.
//
// Runs (LOSS.md section 11) through cbloss::client::Client: the run calls and
// accumulating losses against the real cbloss-server binary (started per test
// on 127.0.0.1 port 0), with seen counts computed here from the labels sent
// and EQL_V2's P and Q from a float64 reference of LOSS.md section 10; and the
// rule that accumulating calls are never retried, against an in-process
// LossService that answers UNAVAILABLE and counts the attempts.

#include <atomic>
#include <cmath>
#include <cstdint>
#include <iostream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "bench/server_process.h"
#include "cbloss/client.h"
#include "cbloss/v1/cbloss.grpc.pb.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"

namespace cbloss::client {
namespace {

using ::cbloss::testing::ServerProcess;
using ::testing::ElementsAreArray;

// ---------------------------------------------------------------------------
// No retries for accumulating calls: a LossService whose every call counts
// and fails with UNAVAILABLE.

class UnavailableService final : public v1::LossService::Service {
 public:
  grpc::Status ComputeLoss(grpc::ServerContext*, const v1::ComputeLossRequest*,
                           v1::ComputeLossResponse*) override {
    ++compute_calls;
    return Unavailable();
  }
  grpc::Status StreamLoss(
      grpc::ServerContext*,
      grpc::ServerReaderWriter<v1::ComputeLossResponse,
                               v1::ComputeLossRequest>*) override {
    ++stream_calls;
    return Unavailable();
  }
  grpc::Status CreateRun(grpc::ServerContext*, const v1::CreateRunRequest*,
                         v1::Run*) override {
    ++create_calls;
    return Unavailable();
  }
  grpc::Status GetRun(grpc::ServerContext*, const v1::GetRunRequest*,
                      v1::Run*) override {
    ++get_calls;
    return Unavailable();
  }
  grpc::Status ListRuns(grpc::ServerContext*, const v1::ListRunsRequest*,
                        v1::ListRunsResponse*) override {
    ++list_calls;
    return Unavailable();
  }
  grpc::Status DeleteRun(grpc::ServerContext*, const v1::DeleteRunRequest*,
                         v1::DeleteRunResponse*) override {
    ++delete_calls;
    return Unavailable();
  }

  std::atomic<int> compute_calls{0}, stream_calls{0}, create_calls{0},
      get_calls{0}, list_calls{0}, delete_calls{0};

 private:
  static grpc::Status Unavailable() {
    return grpc::Status(grpc::StatusCode::UNAVAILABLE, "try again");
  }
};

class NoRetryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                             &port);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    ASSERT_GT(port, 0);
    absl::StatusOr<std::unique_ptr<Client>> c =
        Client::Create(absl::StrCat("127.0.0.1:", port));
    ASSERT_TRUE(c.ok()) << c.status();
    client_ = *std::move(c);
  }

  void TearDown() override { server_->Shutdown(); }

  UnavailableService service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<Client> client_;
};

// proto/cbloss/v1/service_config.json: maxAttempts 5 for retried methods.
constexpr int kRetryAttempts = 5;

TEST_F(NoRetryTest, PlainComputeLossIsRetriedAnAccumulatingOneIsNot) {
  const std::vector<float> z = {0.5f, -1.0f, 2.0f, 0.0f};
  const std::vector<int32_t> y = {0, 1};
  LossOptions plain;
  plain.run = "r";
  absl::StatusOr<LossResult> r = client_->ComputeLoss(
      LossSource(), Logits::Float32(z, 2, 2), Labels(y), plain);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(service_.compute_calls.load(), kRetryAttempts);

  service_.compute_calls = 0;
  LossOptions accumulate = plain;
  accumulate.accumulate = true;
  r = client_->ComputeLoss(LossSource(), Logits::Float32(z, 2, 2), Labels(y),
                           accumulate);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(r.status().message(), "try again");
  EXPECT_EQ(service_.compute_calls.load(), 1);

  // And again after the plain channel was used: still one attempt.
  service_.compute_calls = 0;
  r = client_->ComputeLoss(LossSource::Counts({3, 1}), Logits::Float32(z, 2, 2),
                           Labels(y), accumulate);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(service_.compute_calls.load(), 1);
}

TEST_F(NoRetryTest, ReadsOfRunsAreRetriedWritesAreNot) {
  EXPECT_EQ(client_->GetRun("r").status().code(),
            absl::StatusCode::kUnavailable);
  EXPECT_EQ(service_.get_calls.load(), kRetryAttempts);
  EXPECT_EQ(client_->ListRuns().status().code(),
            absl::StatusCode::kUnavailable);
  EXPECT_EQ(service_.list_calls.load(), kRetryAttempts);

  v1::Run run;
  run.set_name("r");
  run.set_num_classes(3);
  EXPECT_EQ(client_->CreateRun(run).status().code(),
            absl::StatusCode::kUnavailable);
  EXPECT_EQ(service_.create_calls.load(), 1);
  EXPECT_EQ(client_->DeleteRun("r", 1).code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(service_.delete_calls.load(), 1);
}

TEST_F(NoRetryTest, AnAccumulatingStreamRequestIsSentOnce) {
  const std::vector<float> z = {0.5f, -1.0f};
  const std::vector<int32_t> y = {1};
  LossOptions options;
  options.run = "r";
  options.accumulate = true;
  std::unique_ptr<LossStream> stream = client_->OpenLossStream();
  absl::StatusOr<LossResult> r = stream->Compute(
      LossSource(), Logits::Float32(z, 1, 2), Labels(y), options);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(service_.stream_calls.load(), 1);
}

TEST(MakeComputeLossRequest, RunAndAccumulate) {
  const std::vector<float> z = {0.5f, -1.0f};
  const std::vector<int32_t> y = {1};
  LossOptions options;
  absl::StatusOr<v1::ComputeLossRequest> plain = MakeComputeLossRequest(
      LossSource(), Logits::Float32(z, 1, 2), Labels(y), options);
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_EQ(plain->run(), "");
  EXPECT_FALSE(plain->accumulate());
  EXPECT_TRUE(plain->has_class_counts());  // as before runs

  options.run = "r1";
  options.accumulate = true;
  absl::StatusOr<v1::ComputeLossRequest> with_run = MakeComputeLossRequest(
      LossSource(), Logits::Float32(z, 1, 2), Labels(y), options);
  ASSERT_TRUE(with_run.ok()) << with_run.status();
  EXPECT_EQ(with_run->run(), "r1");
  EXPECT_TRUE(with_run->accumulate());
  EXPECT_FALSE(with_run->has_class_counts());  // the run's dataset
  EXPECT_EQ(with_run->dataset(), "");

  absl::StatusOr<v1::ComputeLossRequest> counts = MakeComputeLossRequest(
      LossSource::Counts({4, 2}), Logits::Float32(z, 1, 2), Labels(y), options);
  ASSERT_TRUE(counts.ok()) << counts.status();
  EXPECT_THAT(counts->class_counts().counts(), ElementsAreArray({4, 2}));

  v1::ComputeLossResponse response;
  response.set_run_version(7);
  absl::StatusOr<LossResult> read = ReadComputeLossResponse(response, options);
  ASSERT_TRUE(read.ok());
  EXPECT_EQ(read->run_version, 7u);
}

// ---------------------------------------------------------------------------
// Against the real server.

class RunsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(
        server_
            .Start({absl::StrCat("--datasets_file=", CBLOSS_SAMPLE_DATASETS)})
            .ok());
    absl::StatusOr<std::unique_ptr<Client>> c =
        Client::Create(server_.target());
    ASSERT_TRUE(c.ok()) << c.status();
    client_ = *std::move(c);
  }

  void TearDown() override {
    if (HasFailure()) std::cerr << "---- server log ----\n" << server_.Log();
  }

  static v1::Run MakeRun(const std::string& name, const std::string& dataset,
                         int32_t num_classes) {
    v1::Run run;
    run.set_name(name);
    run.set_dataset(dataset);
    run.set_num_classes(num_classes);
    return run;
  }

  ServerProcess server_;
  std::unique_ptr<Client> client_;
};

void ExpectZeroStatistics(const v1::Run& run, int c) {
  const v1::RunStatistics& s = run.statistics();
  EXPECT_THAT(s.seen_counts(), ElementsAreArray(std::vector<int64_t>(c, 0)));
  EXPECT_THAT(s.positive_gradient(),
              ElementsAreArray(std::vector<double>(c, 0.0)));
  EXPECT_THAT(s.negative_gradient(),
              ElementsAreArray(std::vector<double>(c, 0.0)));
  EXPECT_EQ(s.background_seen(), 0);
  EXPECT_EQ(s.eqlv2_updates(), 0);
}

TEST_F(RunsTest, CreateGetListDelete) {
  absl::StatusOr<v1::Run> a = client_->CreateRun(MakeRun("a", "cifar10-lt", 0));
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->name(), "a");
  EXPECT_EQ(a->dataset(), "cifar10-lt");
  EXPECT_EQ(a->num_classes(), 10);
  EXPECT_EQ(a->version(), 1u);
  ExpectZeroStatistics(*a, 10);

  v1::Run b_in = MakeRun("b", "", 4);
  b_in.mutable_defaults()->set_loss_type(v1::LOSS_TYPE_SEESAW);
  absl::StatusOr<v1::Run> b = client_->CreateRun(b_in);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(b->num_classes(), 4);
  EXPECT_EQ(b->defaults().loss_type(), v1::LOSS_TYPE_SEESAW);
  ExpectZeroStatistics(*b, 4);
  ASSERT_TRUE(client_->CreateRun(MakeRun("c", "cifar100-lt", 100)).ok());

  absl::StatusOr<v1::Run> got = client_->GetRun("b");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->name(), "b");
  EXPECT_EQ(got->version(), 1u);

  absl::StatusOr<std::vector<v1::Run>> all = client_->ListRuns();
  ASSERT_TRUE(all.ok()) << all.status();
  std::vector<std::string> names;
  for (const v1::Run& r : *all) names.push_back(r.name());
  EXPECT_THAT(names, ElementsAreArray({"a", "b", "c"}));
  absl::StatusOr<std::vector<v1::Run>> of_cifar10 =
      client_->ListRuns("cifar10-lt");
  ASSERT_TRUE(of_cifar10.ok()) << of_cifar10.status();
  ASSERT_EQ(of_cifar10->size(), 1u);
  EXPECT_EQ((*of_cifar10)[0].name(), "a");
  absl::StatusOr<std::vector<v1::Run>> of_none = client_->ListRuns("no-such");
  ASSERT_TRUE(of_none.ok()) << of_none.status();
  EXPECT_TRUE(of_none->empty());

  // One page at a time.
  v1::ListRunsRequest request;
  request.set_page_size(2);
  absl::StatusOr<v1::ListRunsResponse> page = client_->ListRunsPage(request);
  ASSERT_TRUE(page.ok()) << page.status();
  ASSERT_EQ(page->runs_size(), 2);
  EXPECT_EQ(page->runs(0).name(), "a");
  EXPECT_EQ(page->runs(1).name(), "b");
  ASSERT_FALSE(page->next_page_token().empty());
  request.set_page_token(page->next_page_token());
  page = client_->ListRunsPage(request);
  ASSERT_TRUE(page.ok()) << page.status();
  ASSERT_EQ(page->runs_size(), 1);
  EXPECT_EQ(page->runs(0).name(), "c");
  EXPECT_TRUE(page->next_page_token().empty());

  absl::Status aborted = client_->DeleteRun("a", 3);
  EXPECT_EQ(aborted.code(), absl::StatusCode::kAborted);
  EXPECT_EQ(aborted.message(),
            "run 'a' is at version 1, not expected_version 3");
  EXPECT_TRUE(client_->DeleteRun("a", 1).ok());
  EXPECT_TRUE(client_->DeleteRun("b").ok());
  absl::Status gone = client_->DeleteRun("a");
  EXPECT_EQ(gone.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(gone.message(), "run 'a' not found");
  absl::StatusOr<v1::Run> missing = client_->GetRun("a");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(missing.status().message(), "run 'a' not found");
}

TEST_F(RunsTest, ListRunsFollowsEveryPage) {
  // More than the server's default page of 100; half of them of a dataset.
  constexpr int kRuns = 130;
  for (int i = 0; i < kRuns; ++i) {
    ASSERT_TRUE(client_
                    ->CreateRun(MakeRun(absl::StrFormat("run-%03d", i),
                                        i % 2 == 0 ? "cifar10-lt" : "",
                                        i % 2 == 0 ? 0 : i + 1))
                    .ok());
  }
  absl::StatusOr<std::vector<v1::Run>> all = client_->ListRuns();
  ASSERT_TRUE(all.ok()) << all.status();
  ASSERT_EQ(all->size(), static_cast<size_t>(kRuns));
  for (int i = 0; i < kRuns; ++i) {
    const v1::Run& r = (*all)[i];
    EXPECT_EQ(r.name(), absl::StrFormat("run-%03d", i));
    EXPECT_EQ(r.num_classes(), i % 2 == 0 ? 10 : i + 1);
  }
  absl::StatusOr<std::vector<v1::Run>> of_cifar10 =
      client_->ListRuns("cifar10-lt");
  ASSERT_TRUE(of_cifar10.ok()) << of_cifar10.status();
  ASSERT_EQ(of_cifar10->size(), static_cast<size_t>(kRuns / 2));
  for (int k = 0; k < kRuns / 2; ++k) {
    EXPECT_EQ((*of_cifar10)[k].name(), absl::StrFormat("run-%03d", 2 * k));
  }
}

TEST_F(RunsTest, CreateErrors) {
  ASSERT_TRUE(client_->CreateRun(MakeRun("a", "", 3)).ok());
  absl::StatusOr<v1::Run> taken = client_->CreateRun(MakeRun("a", "", 3));
  EXPECT_EQ(taken.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(taken.status().message(), "run 'a' already exists");
  absl::StatusOr<v1::Run> no_dataset =
      client_->CreateRun(MakeRun("b", "no-such", 0));
  EXPECT_EQ(no_dataset.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(no_dataset.status().message(), "dataset 'no-such' not found");
  absl::StatusOr<v1::Run> no_classes = client_->CreateRun(MakeRun("b", "", 0));
  EXPECT_EQ(no_classes.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(no_classes.status().message(),
            "run.num_classes = 0: give run.dataset or run.num_classes >= 1");
  absl::StatusOr<v1::Run> mismatch =
      client_->CreateRun(MakeRun("b", "cifar10-lt", 5));
  EXPECT_EQ(mismatch.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(mismatch.status().message(),
            "run.num_classes = 5 but dataset 'cifar10-lt' has 10 classes");
}

// Random logits and labels in [0, c] (c: background) and the ignore index.
struct Batch {
  std::vector<float> logits;
  std::vector<int32_t> labels;
  int64_t rows = 0, cols = 0;
};

Batch RandomBatch(std::mt19937* rng, int64_t rows, int64_t cols,
                  bool background) {
  std::normal_distribution<float> normal(0.0f, 2.0f);
  std::uniform_int_distribution<int32_t> label(0, background ? cols : cols - 1);
  std::bernoulli_distribution ignored(0.15);
  Batch b;
  b.rows = rows;
  b.cols = cols;
  for (int64_t i = 0; i < rows * cols; ++i) b.logits.push_back(normal(*rng));
  for (int64_t i = 0; i < rows; ++i) {
    b.labels.push_back(ignored(*rng) ? -100 : label(*rng));
  }
  return b;
}

TEST_F(RunsTest, AccumulatingCallsCountTheirLabelsExactly) {
  ASSERT_TRUE(client_->CreateRun(MakeRun("counts", "cifar10-lt", 0)).ok());
  std::mt19937 rng(17);
  std::vector<int64_t> seen(10, 0);
  uint64_t version = 1;
  for (int step = 0; step < 4; ++step) {
    const Batch b = RandomBatch(&rng, 32, 10, false);
    LossOptions options;
    options.run = "counts";
    options.accumulate = step != 2;  // one plain call: changes nothing
    absl::StatusOr<LossResult> r =
        client_->ComputeLoss(LossSource(), Logits::Float32(b.logits, 32, 10),
                             Labels(b.labels), options);
    ASSERT_TRUE(r.ok()) << r.status();
    if (options.accumulate) {
      ++version;
      for (int32_t y : b.labels) {
        if (y >= 0) ++seen[y];
      }
    }
    EXPECT_EQ(r->run_version, version) << "step " << step;
  }
  absl::StatusOr<v1::Run> run = client_->GetRun("counts");
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->version(), version);
  EXPECT_THAT(run->statistics().seen_counts(), ElementsAreArray(seen));
  EXPECT_EQ(run->statistics().background_seen(), 0);
  EXPECT_EQ(run->statistics().eqlv2_updates(), 0);

  // A stream's accumulating requests count the same way.
  std::unique_ptr<LossStream> stream = client_->OpenLossStream();
  for (int step = 0; step < 3; ++step) {
    const Batch b = RandomBatch(&rng, 16, 10, false);
    LossOptions options;
    options.run = "counts";
    options.accumulate = true;
    absl::StatusOr<LossResult> r = stream->Compute(
        LossSource::Dataset("cifar10-lt"), Logits::Float32(b.logits, 16, 10),
        Labels(b.labels), options);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->run_version, ++version);
    for (int32_t y : b.labels) {
      if (y >= 0) ++seen[y];
    }
  }
  EXPECT_TRUE(stream->Close().ok());
  run = client_->GetRun("counts");
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->version(), version);
  EXPECT_THAT(run->statistics().seen_counts(), ElementsAreArray(seen));
}

TEST_F(RunsTest, AFailedAccumulatingCallChangesNothing) {
  ASSERT_TRUE(client_->CreateRun(MakeRun("r", "cifar10-lt", 0)).ok());
  const std::vector<float> z(2 * 5, 0.0f);
  const std::vector<int32_t> y = {0, 1};
  LossOptions options;
  options.run = "r";
  options.accumulate = true;
  absl::StatusOr<LossResult> r = client_->ComputeLoss(
      LossSource(), Logits::Float32(z, 2, 5), Labels(y), options);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(r.status().message(),
            "logits.shape[1] = 5 but run 'r' has 10 classes");
  LossOptions no_run;
  no_run.accumulate = true;
  r = client_->ComputeLoss(LossSource::Dataset("cifar10-lt"),
                           Logits::Float32(z, 1, 10), Labels({0}), no_run);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(r.status().message(),
            "accumulate needs run: name the run whose statistics this request "
            "updates");
  absl::StatusOr<v1::Run> run = client_->GetRun("r");
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->version(), 1u);
  ExpectZeroStatistics(*run, 10);
}

// LOSS.md section 10, EQL_V2, float64: the weights from P, Q and the number
// of updates before the batch, then the batch's loss (MEAN) and its P, Q
// increments (rows not ignored, background label C included).
struct EqlV2Reference {
  explicit EqlV2Reference(int c) : p(c, 0.0), q(c, 0.0) {}

  double Step(const Batch& b, double gamma = 12, double mu = 0.8,
              double alpha = 4) {
    const int c = static_cast<int>(p.size());
    std::vector<double> pos_w(c), neg_w(c);
    for (int j = 0; j < c; ++j) {
      const double r = updates == 0 ? 100.0 : p[j] / (q[j] + 1e-10);
      neg_w[j] = 1 / (1 + std::exp(-gamma * (r - mu)));
      pos_w[j] = 1 + alpha * (1 - neg_w[j]);
    }
    std::vector<double> dp(c, 0.0), dq(c, 0.0);
    double total = 0;
    int n = 0;
    for (int64_t i = 0; i < b.rows; ++i) {
      const int32_t y = b.labels[i];
      if (y == -100) continue;
      ++n;
      for (int j = 0; j < c; ++j) {
        const double z = b.logits[i * c + j];
        const double t = y == j ? 1.0 : 0.0;
        const double e = pos_w[j] * t + neg_w[j] * (1 - t);
        const double sp = std::max(z, 0.0) + std::log1p(std::exp(-std::abs(z)));
        total += e * (sp - t * z);
        const double g = std::abs(1 / (1 + std::exp(-z)) - t);
        dp[j] += e * g * t;
        dq[j] += e * g * (1 - t);
      }
    }
    for (int j = 0; j < c; ++j) {
      p[j] += dp[j];
      q[j] += dq[j];
    }
    ++updates;
    return n > 0 ? total / n : 0.0;
  }

  std::vector<double> p, q;
  int64_t updates = 0;
};

TEST_F(RunsTest, EqlV2AccumulatesPAndQAsTheFloat64Reference) {
  constexpr int kC = 6;
  ASSERT_TRUE(client_->CreateRun(MakeRun("eqlv2", "", kC)).ok());
  std::mt19937 rng(5);
  EqlV2Reference reference(kC);
  std::vector<int64_t> seen(kC, 0);
  int64_t background = 0;
  for (int step = 0; step < 5; ++step) {
    const Batch b = RandomBatch(&rng, 24, kC, true);
    LossOptions options;
    options.config.set_loss_type(v1::LOSS_TYPE_EQL_V2);
    options.run = "eqlv2";
    options.accumulate = true;
    absl::StatusOr<LossResult> r =
        client_->ComputeLoss(LossSource(), Logits::Float32(b.logits, 24, kC),
                             Labels(b.labels), options);
    ASSERT_TRUE(r.ok()) << r.status();
    const double want = reference.Step(b);
    EXPECT_LE(std::abs(r->loss - want), 1e-5 * std::abs(want) + 1e-6)
        << "step " << step << ": " << r->loss << " vs " << want;
    EXPECT_EQ(r->run_version, static_cast<uint64_t>(step + 2));
    for (int32_t y : b.labels) {
      if (y == kC) {
        ++background;
      } else if (y >= 0) {
        ++seen[y];
      }
    }
  }
  absl::StatusOr<v1::Run> run = client_->GetRun("eqlv2");
  ASSERT_TRUE(run.ok()) << run.status();
  const v1::RunStatistics& s = run->statistics();
  EXPECT_EQ(s.eqlv2_updates(), reference.updates);
  EXPECT_THAT(s.seen_counts(), ElementsAreArray(seen));
  EXPECT_EQ(s.background_seen(), background);
  ASSERT_EQ(s.positive_gradient_size(), kC);
  ASSERT_EQ(s.negative_gradient_size(), kC);
  for (int j = 0; j < kC; ++j) {
    EXPECT_NEAR(s.positive_gradient(j), reference.p[j],
                1e-5 * std::abs(reference.p[j]) + 1e-9)
        << "P[" << j << "]";
    EXPECT_NEAR(s.negative_gradient(j), reference.q[j],
                1e-5 * std::abs(reference.q[j]) + 1e-9)
        << "Q[" << j << "]";
  }
}

}  // namespace
}  // namespace cbloss::client
