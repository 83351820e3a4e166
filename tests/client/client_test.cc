// Copyright 2026 The cbloss Authors.
//
// cbloss::client::Client (client/include/cbloss/client.h) against the real
// cbloss-server binary, started per test on 127.0.0.1 port 0. Numbers are
// checked against independent float64 references: tests/golden/
// seed_example.json and golden_cases.json (PyTorch float64), at the
// tolerances of LOSS.md section 7.

#include "cbloss/client.h"

#include <sys/wait.h>

#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <iostream>
#include <limits>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "bench/server_process.h"
#include "client/grpc_status.h"
#include "client/service_config.h"
#include "core/half.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace cbloss::client {
namespace {

using ::cbloss::testing::ServerProcess;
using ::testing::HasSubstr;
using json = nlohmann::json;

// ---------------------------------------------------------------------------
// References and tolerances.

const json& LoadJson(const char* path) {
  auto* parsed = new json(json::parse(std::ifstream(path)));
  return *parsed;
}

const json& Seed() {
  static const json& seed = LoadJson(CBLOSS_SEED_EXAMPLE);
  return seed;
}

const json& GoldenCase(const std::string& name) {
  static const json& golden = LoadJson(CBLOSS_GOLDEN_CASES);
  static const json& section10 = LoadJson(CBLOSS_GOLDEN_CASES_SECTION10);
  for (const json* file : {&golden, &section10}) {
    for (const json& c : file->at("cases")) {
      if (c.at("name") == name) return c;
    }
  }
  ADD_FAILURE() << "no golden case " << name;
  static const json empty = json::object();
  return empty;
}

template <typename T>
std::vector<T> Vec(const json& j) {
  return j.get<std::vector<T>>();
}

// The seed example as float32 row-major logits and int32 labels.
struct SeedBatch {
  std::vector<float> logits;
  std::vector<int32_t> labels;
  std::vector<int64_t> counts;
  int64_t rows = 0, cols = 0;
};

SeedBatch LoadSeed() {
  SeedBatch b;
  for (const json& row : Seed().at("logits")) {
    for (const json& v : row) b.logits.push_back(v.get<float>());
    b.cols = static_cast<int64_t>(row.size());
    ++b.rows;
  }
  b.labels = Vec<int32_t>(Seed().at("labels"));
  b.counts = Vec<int64_t>(Seed().at("class_counts"));
  return b;
}

v1::LossConfig SeedConfig() {
  v1::LossConfig c;
  c.set_loss_type(v1::LOSS_TYPE_FOCAL);
  c.set_beta(0.9999);
  c.set_gamma(2.0);
  c.set_reduction(v1::REDUCTION_MEAN);
  return c;
}

constexpr double kSeedLoss = 1.9582863;

// LOSS.md section 7: loss and per-sample losses within 1e-5 * |ref| + 1e-6.
void ExpectLossNear(double got, double ref, const std::string& what) {
  EXPECT_LE(std::abs(got - ref), 1e-5 * std::abs(ref) + 1e-6)
      << what << ": got " << absl::StrFormat("%.10g", got) << ", reference "
      << absl::StrFormat("%.10g", ref);
}

// LOSS.md section 7: each element within 1e-5 * max|G_ref| + 1e-7.
template <typename Got>
void ExpectGradientNear(const Got& got, const std::vector<double>& ref) {
  ASSERT_EQ(got.size(), ref.size());
  double max_ref = 0;
  for (double g : ref) max_ref = std::max(max_ref, std::abs(g));
  const double tolerance = 1e-5 * max_ref + 1e-7;
  int bad = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (!(std::abs(static_cast<double>(got[i]) - ref[i]) <= tolerance) &&
        bad++ < 5) {
      ADD_FAILURE() << "gradient[" << i << "] = " << got[i] << ", reference "
                    << ref[i] << ", tolerance " << tolerance;
    }
  }
}

// ---------------------------------------------------------------------------
// Fixture: one server with the sample datasets, one client.

class ClientTest : public ::testing::Test {
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

  v1::Dataset MakeDataset(const std::string& name,
                          std::vector<int64_t> counts) {
    v1::Dataset d;
    d.set_name(name);
    d.mutable_class_counts()->Assign(counts.begin(), counts.end());
    return d;
  }

  ServerProcess server_;
  std::unique_ptr<Client> client_;
};

// ---------------------------------------------------------------------------
// Creation and pure helpers (no server needed, but cheap to have one).

TEST(ClientCreate, RejectsEmptyTargetAndBadMessageLimit) {
  EXPECT_EQ(Client::Create("").status().code(),
            absl::StatusCode::kInvalidArgument);
  ClientOptions options;
  options.max_message_mb = 0;
  EXPECT_EQ(Client::Create("127.0.0.1:1", options).status().code(),
            absl::StatusCode::kInvalidArgument);
  options.max_message_mb = 4096;
  EXPECT_EQ(Client::Create("127.0.0.1:1", options).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(MakeComputeLossRequest, Float32AndHalfPayloads) {
  const std::vector<float> z = {1.0f, -2.0f, 0.5f, 4.0f, 0.0f, -1.0f};
  const std::vector<int32_t> y = {2, 0};
  LossOptions options;
  options.config.set_loss_type(v1::LOSS_TYPE_SIGMOID);
  options.expected_dataset_version = 7;
  options.epoch = 3;
  absl::StatusOr<v1::ComputeLossRequest> r = MakeComputeLossRequest(
      LossSource::Dataset("ds"), Logits::Float32(z, 2, 3), Labels(y), options);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->dataset(), "ds");
  EXPECT_EQ(r->logits().dtype(), v1::DTYPE_FLOAT32);
  EXPECT_THAT(r->logits().shape(), ::testing::ElementsAre(2, 3));
  ASSERT_EQ(r->logits().data().size(), 24u);
  float first;
  std::memcpy(&first, r->logits().data().data(), 4);
  EXPECT_EQ(first, 1.0f);
  EXPECT_THAT(r->labels(), ::testing::ElementsAre(2, 0));
  EXPECT_EQ(r->config().loss_type(), v1::LOSS_TYPE_SIGMOID);
  EXPECT_EQ(r->expected_dataset_version(), 7u);
  EXPECT_EQ(r->epoch(), 3);
  EXPECT_TRUE(r->want_gradient());

  std::vector<uint16_t> bits(z.size());
  EncodeHalf(DType::kBFloat16, z, absl::MakeSpan(bits));
  r = MakeComputeLossRequest(LossSource::Counts({1, 2, 3}),
                             Logits::Half(v1::DTYPE_BFLOAT16, bits, 2, 3),
                             Labels(y), {});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->logits().dtype(), v1::DTYPE_BFLOAT16);
  EXPECT_EQ(r->logits().data().size(), 12u);
  EXPECT_THAT(r->class_counts().counts(), ::testing::ElementsAre(1, 2, 3));

  // Values that do not fill [rows, cols] are refused before any call.
  absl::StatusOr<v1::ComputeLossRequest> bad = MakeComputeLossRequest(
      LossSource::Counts({1, 2, 3}), Logits::Float32(z, 3, 3), Labels(y), {});
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ReadComputeLossResponse, ErrorFieldsBecomeTheStatus) {
  v1::ComputeLossResponse response;
  response.set_error_code(static_cast<int>(absl::StatusCode::kNotFound));
  response.set_error_message("dataset 'x' not found");
  absl::StatusOr<LossResult> r = ReadComputeLossResponse(response, {});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(r.status().message(), "dataset 'x' not found");
}

TEST(FromGrpc, KeepsCodeAndMessage) {
  EXPECT_TRUE(FromGrpc(grpc::Status::OK).ok());
  absl::Status s =
      FromGrpc(grpc::Status(grpc::StatusCode::ABORTED, "version 3"));
  EXPECT_EQ(s.code(), absl::StatusCode::kAborted);
  EXPECT_EQ(s.message(), "version 3");
}

// The channel's service config: the retry policy of
// proto/cbloss/v1/service_config.json plus the balancing policy, the same
// document the client wrote by hand before the file existed.
TEST(ServiceConfig, RetriesIdempotentCallsOnUnavailableRoundRobin) {
  json expected = json::parse(R"({
    "loadBalancingConfig": [{"round_robin": {}}],
    "methodConfig": [{
      "name": [
        {"service": "cbloss.v1.LossService", "method": "GetDataset"},
        {"service": "cbloss.v1.LossService", "method": "ListDatasets"},
        {"service": "cbloss.v1.LossService", "method": "GetClassWeights"},
        {"service": "cbloss.v1.LossService", "method": "ComputeLoss"},
        {"service": "cbloss.v1.LossService", "method": "GetRun"},
        {"service": "cbloss.v1.LossService", "method": "ListRuns"}],
      "retryPolicy": {"maxAttempts": 5, "initialBackoff": "0.05s",
                      "maxBackoff": "1s", "backoffMultiplier": 2,
                      "retryableStatusCodes": ["UNAVAILABLE"]}}]})");
  EXPECT_EQ(json::parse(ServiceConfigJson(ClientOptions())), expected);

  ClientOptions no_retry;
  no_retry.retry_unavailable = false;
  no_retry.load_balancing_policy = "pick_first";
  EXPECT_EQ(json::parse(ServiceConfigJson(no_retry)),
            json::parse(R"({"loadBalancingConfig": [{"pick_first": {}}]})"));
}

// ---------------------------------------------------------------------------
// Datasets.

TEST_F(ClientTest, PutGetDeleteRoundTrip) {
  v1::Dataset d = MakeDataset("pets", {50, 30, 2});
  d.add_class_names("cat");
  d.add_class_names("dog");
  d.add_class_names("axolotl");
  d.mutable_defaults()->set_loss_type(v1::LOSS_TYPE_FOCAL);
  d.mutable_defaults()->set_gamma(0.5);
  absl::StatusOr<v1::Dataset> put = client_->PutDataset(d);
  ASSERT_TRUE(put.ok()) << put.status();
  EXPECT_EQ(put->version(), 1u);
  EXPECT_TRUE(put->has_create_time());
  EXPECT_THAT(put->class_counts(), ::testing::ElementsAre(50, 30, 2));

  absl::StatusOr<v1::Dataset> got = client_->GetDataset("pets");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->name(), "pets");
  EXPECT_THAT(got->class_names(),
              ::testing::ElementsAre("cat", "dog", "axolotl"));
  EXPECT_EQ(got->defaults().loss_type(), v1::LOSS_TYPE_FOCAL);
  EXPECT_DOUBLE_EQ(got->defaults().gamma(), 0.5);
  EXPECT_EQ(got->version(), 1u);

  d.mutable_class_counts()->Set(2, 3);
  absl::StatusOr<v1::Dataset> replaced = client_->PutDataset(d);
  ASSERT_TRUE(replaced.ok()) << replaced.status();
  EXPECT_EQ(replaced->version(), 2u);

  ASSERT_TRUE(client_->DeleteDataset("pets").ok());
  EXPECT_EQ(client_->GetDataset("pets").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(client_->DeleteDataset("pets").code(), absl::StatusCode::kNotFound);
}

TEST_F(ClientTest, ExpectedVersionConflictsAreAborted) {
  const v1::Dataset d = MakeDataset("guarded", {1, 2});
  ASSERT_TRUE(client_->PutDataset(d, /*expected_version=*/0).ok());
  absl::StatusOr<v1::Dataset> again = client_->PutDataset(d, 0);
  EXPECT_EQ(again.status().code(), absl::StatusCode::kAborted)
      << again.status();
  absl::StatusOr<v1::Dataset> v2 = client_->PutDataset(d, 1);
  ASSERT_TRUE(v2.ok()) << v2.status();
  EXPECT_EQ(v2->version(), 2u);
  EXPECT_EQ(client_->PutDataset(d, 1).status().code(),
            absl::StatusCode::kAborted);
  EXPECT_EQ(client_->DeleteDataset("guarded", 5).code(),
            absl::StatusCode::kAborted);
  EXPECT_TRUE(client_->DeleteDataset("guarded", 2).ok());
}

TEST_F(ClientTest, BadDatasetNameIsInvalidArgument) {
  absl::StatusOr<v1::Dataset> put =
      client_->PutDataset(MakeDataset("Bad Name", {1}));
  EXPECT_EQ(put.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(put.status().message(), HasSubstr("name"));
}

TEST_F(ClientTest, ListDatasetsFollowsEveryPage) {
  // More than the server's default page of 100, plus the 2 sample datasets.
  constexpr int kPut = 130;
  for (int i = 0; i < kPut; ++i) {
    ASSERT_TRUE(
        client_
            ->PutDataset(MakeDataset(absl::StrFormat("ds-%03d", i), {1, i + 1}))
            .ok());
  }
  absl::StatusOr<std::vector<v1::Dataset>> all = client_->ListDatasets();
  ASSERT_TRUE(all.ok()) << all.status();
  ASSERT_EQ(all->size(), kPut + 2u);
  for (size_t i = 1; i < all->size(); ++i) {
    EXPECT_LT((*all)[i - 1].name(), (*all)[i].name())
        << "not sorted / duplicate at " << i;
  }
  int seen = 0;
  for (const v1::Dataset& d : *all) {
    if (absl::StartsWith(d.name(), "ds-")) {
      EXPECT_EQ(d.class_counts(1), std::stoi(d.name().substr(3)) + 1);
      ++seen;
    }
  }
  EXPECT_EQ(seen, kPut);
}

TEST_F(ClientTest, AddClassCountsWithDeltasAndLabels) {
  ASSERT_TRUE(client_->PutDataset(MakeDataset("grow", {10, 0, 5})).ok());
  const std::vector<int64_t> deltas = {1, 2, -5};
  absl::StatusOr<v1::Dataset> d = client_->AddClassCounts("grow", deltas, {});
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_THAT(d->class_counts(), ::testing::ElementsAre(11, 2, 0));
  EXPECT_EQ(d->version(), 2u);
  const std::vector<int32_t> labels = {2, 2, 1, 0};
  d = client_->AddClassCounts("grow", {}, labels);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_THAT(d->class_counts(), ::testing::ElementsAre(12, 3, 2));
  // Both at once, in one atomic change.
  const std::vector<int64_t> more = {1, 2, -1};
  d = client_->AddClassCounts("grow", more, labels);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_THAT(d->class_counts(), ::testing::ElementsAre(14, 6, 3));
  EXPECT_EQ(d->version(), 4u);
}

TEST_F(ClientTest, AddClassCountsErrors) {
  ASSERT_TRUE(client_->PutDataset(MakeDataset("small", {1, 1})).ok());
  const std::vector<int64_t> too_negative = {-2, 0};
  absl::StatusOr<v1::Dataset> d =
      client_->AddClassCounts("small", too_negative, {});
  ASSERT_FALSE(d.ok());
  EXPECT_THAT(d.status().code(),
              ::testing::AnyOf(absl::StatusCode::kFailedPrecondition,
                               absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(d.status().message(), HasSubstr("class_counts[0]"));
  const std::vector<int32_t> out_of_range = {0, 7};
  d = client_->AddClassCounts("small", {}, out_of_range);
  EXPECT_EQ(d.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(d.status().message(), HasSubstr("labels[1]"));
  const std::vector<int64_t> wrong_length = {1, 1, 1};
  EXPECT_EQ(client_->AddClassCounts("small", wrong_length, {}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(client_->AddClassCounts("nope", {}, out_of_range).status().code(),
            absl::StatusCode::kNotFound);
  // Nothing of the failed calls was applied.
  absl::StatusOr<v1::Dataset> after = client_->GetDataset("small");
  ASSERT_TRUE(after.ok());
  EXPECT_THAT(after->class_counts(), ::testing::ElementsAre(1, 1));
  EXPECT_EQ(after->version(), 1u);
}

// ---------------------------------------------------------------------------
// Class weights.

TEST_F(ClientTest, SeedClassWeightsFromInlineCounts) {
  v1::LossConfig config;
  config.set_beta(0.9999);
  absl::StatusOr<v1::ClassWeights> w =
      client_->GetClassWeights(LossSource::Counts({2, 3, 1, 2, 2}), config);
  ASSERT_TRUE(w.ok()) << w.status();
  const std::vector<double> expected = {0.88236332, 0.58827163, 1.76463841,
                                        0.88236332, 0.88236332};
  ASSERT_EQ(w->weights_size(), 5);
  for (int j = 0; j < 5; ++j)
    EXPECT_NEAR(w->weights(j), expected[j], 1e-8) << j;
  EXPECT_EQ(w->dataset_version(), 0u);
}

TEST_F(ClientTest, ClassWeightsFromDatasetUseItsDefaultsAndVersion) {
  v1::Dataset d = MakeDataset("w", {2, 3, 1, 2, 2});
  d.mutable_defaults()->set_beta(0.9999);
  ASSERT_TRUE(client_->PutDataset(d).ok());
  ASSERT_TRUE(client_->PutDataset(d).ok());  // version 2
  absl::StatusOr<v1::ClassWeights> w =
      client_->GetClassWeights(LossSource::Dataset("w"));
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(w->dataset_version(), 2u);
  EXPECT_NEAR(w->weights(2), 1.76463841, 1e-8);

  // An override of the scheme: inverse frequency, normalised to sum K = 5.
  v1::LossConfig inverse;
  inverse.set_weighting(v1::WEIGHTING_SCHEME_INVERSE_FREQUENCY);
  w = client_->GetClassWeights(LossSource::Dataset("w"), inverse);
  ASSERT_TRUE(w.ok()) << w.status();
  const double sum = 1.0 / 2 + 1.0 / 3 + 1.0 + 1.0 / 2 + 1.0 / 2;
  EXPECT_NEAR(w->weights(0), 5 * 0.5 / sum, 1e-12);
  EXPECT_NEAR(w->weights(2), 5 * 1.0 / sum, 1e-12);
}

TEST_F(ClientTest, ClassWeightsErrors) {
  EXPECT_EQ(
      client_->GetClassWeights(LossSource::Dataset("missing")).status().code(),
      absl::StatusCode::kNotFound);
  EXPECT_EQ(
      client_->GetClassWeights(LossSource::Counts({0, 0})).status().code(),
      absl::StatusCode::kFailedPrecondition);
  v1::LossConfig bad_beta;
  bad_beta.set_beta(1.5);
  absl::StatusOr<v1::ClassWeights> w =
      client_->GetClassWeights(LossSource::Counts({1, 2}), bad_beta);
  EXPECT_EQ(w.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(w.status().message(), HasSubstr("beta"));
}

// ---------------------------------------------------------------------------
// ComputeLoss.

TEST_F(ClientTest, SeedExampleFloat32) {
  const SeedBatch b = LoadSeed();
  LossOptions options;
  options.config = SeedConfig();
  absl::StatusOr<LossResult> r = client_->ComputeLoss(
      LossSource::Counts(b.counts), Logits::Float32(b.logits, b.rows, b.cols),
      Labels(b.labels), options);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_NEAR(r->loss, kSeedLoss, 1e-5);
  EXPECT_EQ(r->num_samples, 10);
  EXPECT_EQ(r->dataset_version, 0u);
  const std::vector<double> w =
      Vec<double>(Seed().at("expected").at("class_weights"));
  ASSERT_EQ(r->class_weights.size(), w.size());
  for (size_t j = 0; j < w.size(); ++j)
    EXPECT_NEAR(r->class_weights[j], w[j], 1e-8);
  // The owned gradient, against the float64 reference of the same case.
  const json& golden = GoldenCase("seed_example");
  ExpectGradientNear(r->gradient,
                     Vec<double>(golden.at("expected").at("gradient")));
  EXPECT_TRUE(r->gradient_half.empty());
  EXPECT_TRUE(r->per_sample_losses.empty()) << "not asked for";
  // resolved_config: every field filled in.
  const v1::LossConfig& c = r->resolved_config;
  EXPECT_EQ(c.loss_type(), v1::LOSS_TYPE_FOCAL);
  EXPECT_EQ(c.weighting(), v1::WEIGHTING_SCHEME_EFFECTIVE_NUMBER);
  EXPECT_EQ(c.reduction(), v1::REDUCTION_MEAN);
  EXPECT_TRUE(c.has_beta() && c.has_gamma() && c.has_ignore_index());
  EXPECT_DOUBLE_EQ(c.beta(), 0.9999);
  EXPECT_DOUBLE_EQ(c.gamma(), 2.0);
  EXPECT_EQ(c.ignore_index(), -100);
}

TEST_F(ClientTest, SeedExampleFromAStoredDataset) {
  const SeedBatch b = LoadSeed();
  v1::Dataset d = MakeDataset("seed", b.counts);
  *d.mutable_defaults() = SeedConfig();
  ASSERT_TRUE(client_->PutDataset(d).ok());
  LossOptions options;  // everything from the dataset's defaults
  options.want_gradient = false;
  options.expected_dataset_version = 1;
  absl::StatusOr<LossResult> r = client_->ComputeLoss(
      LossSource::Dataset("seed"), Logits::Float32(b.logits, b.rows, b.cols),
      Labels(b.labels), options);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_NEAR(r->loss, kSeedLoss, 1e-5);
  EXPECT_EQ(r->dataset_version, 1u);
  EXPECT_TRUE(r->gradient.empty()) << "want_gradient = false";

  options.expected_dataset_version = 2;
  r = client_->ComputeLoss(LossSource::Dataset("seed"),
                           Logits::Float32(b.logits, b.rows, b.cols),
                           Labels(b.labels), options);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kAborted) << r.status();

  // A request override wins over the dataset default: gamma 0 is SIGMOID.
  options.expected_dataset_version.reset();
  options.config.set_gamma(0.0);
  absl::StatusOr<LossResult> focal0 = client_->ComputeLoss(
      LossSource::Dataset("seed"), Logits::Float32(b.logits, b.rows, b.cols),
      Labels(b.labels), options);
  options.config.set_loss_type(v1::LOSS_TYPE_SIGMOID);
  absl::StatusOr<LossResult> sigmoid = client_->ComputeLoss(
      LossSource::Dataset("seed"), Logits::Float32(b.logits, b.rows, b.cols),
      Labels(b.labels), options);
  ASSERT_TRUE(focal0.ok() && sigmoid.ok());
  EXPECT_NEAR(focal0->loss, sigmoid->loss, 1e-6 * std::abs(sigmoid->loss));
  EXPECT_DOUBLE_EQ(focal0->resolved_config.gamma(), 0.0);
}

TEST_F(ClientTest, EpochSelectsDeferredReweighting) {
  const SeedBatch b = LoadSeed();
  v1::Dataset d = MakeDataset("drw", b.counts);
  d.mutable_defaults()->set_loss_type(v1::LOSS_TYPE_SOFTMAX);
  d.mutable_defaults()->set_drw_start_epoch(3);
  ASSERT_TRUE(client_->PutDataset(d).ok());
  const std::vector<double> seed_weights =
      Vec<double>(Seed().at("expected").at("class_weights"));
  for (int epoch : {0, 2, 3, 7}) {
    SCOPED_TRACE(epoch);
    LossOptions options;
    options.epoch = epoch;
    absl::StatusOr<LossResult> r = client_->ComputeLoss(
        LossSource::Dataset("drw"), Logits::Float32(b.logits, b.rows, b.cols),
        Labels(b.labels), options);
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_EQ(r->class_weights.size(), 5u);
    for (size_t j = 0; j < 5; ++j) {
      EXPECT_NEAR(r->class_weights[j], epoch < 3 ? 1.0 : seed_weights[j], 1e-8);
    }
  }
}

TEST_F(ClientTest, GradientIntoACallerBuffer) {
  const SeedBatch b = LoadSeed();
  LossOptions options;
  options.config = SeedConfig();
  std::vector<float> grad(b.rows * b.cols,
                          std::numeric_limits<float>::quiet_NaN());
  options.gradient_out = absl::MakeSpan(grad);
  absl::StatusOr<LossResult> r = client_->ComputeLoss(
      LossSource::Counts(b.counts), Logits::Float32(b.logits, b.rows, b.cols),
      Labels(b.labels), options);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->gradient.empty()) << "written to gradient_out instead";
  ExpectGradientNear(
      grad,
      Vec<double>(GoldenCase("seed_example").at("expected").at("gradient")));

  // A buffer of the wrong size is an error, not an overrun.
  std::vector<float> small(b.rows * b.cols - 1);
  options.gradient_out = absl::MakeSpan(small);
  r = client_->ComputeLoss(LossSource::Counts(b.counts),
                           Logits::Float32(b.logits, b.rows, b.cols),
                           Labels(b.labels), options);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(ClientTest, HalfPrecisionGradientOnRequest) {
  const json& c = GoldenCase("softmax_float16_mean");
  const std::vector<float> z = Vec<float>(c.at("logits"));
  std::vector<uint16_t> bits(z.size());
  EncodeHalf(DType::kFloat16, z, absl::MakeSpan(bits));
  const std::vector<int32_t> labels = Vec<int32_t>(c.at("labels"));
  LossOptions options;
  options.config.set_loss_type(v1::LOSS_TYPE_SOFTMAX);
  options.config.set_beta(c.at("beta").get<double>());
  options.gradient_dtype = v1::DTYPE_FLOAT16;
  absl::StatusOr<LossResult> r = client_->ComputeLoss(
      LossSource::Counts(Vec<int64_t>(c.at("class_counts"))),
      Logits::Half(v1::DTYPE_FLOAT16, bits, c.at("rows"), c.at("cols")),
      Labels(labels), options);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->gradient_half.size(), z.size());
  EXPECT_TRUE(r->gradient.empty());
  const std::vector<double> ref = Vec<double>(c.at("expected").at("gradient"));
  double max_ref = 0;
  for (double g : ref) max_ref = std::max(max_ref, std::abs(g));
  for (size_t i = 0; i < ref.size(); ++i) {
    // One float16 rounding (relative 2^-11) on top of the float32 tolerance.
    EXPECT_NEAR(Float16ToFloat(r->gradient_half[i]), ref[i],
                std::abs(ref[i]) * 0x1p-11 + 1e-5 * max_ref + 1e-7)
        << i;
  }
}

// Golden cases through the whole client path: wire encoding of float32,
// float16 and bfloat16 logits (encoded with the engine's core/half.h),
// targets, sample weights, upstream with NONE, per-sample losses.
class GoldenCaseTest : public ClientTest,
                       public ::testing::WithParamInterface<const char*> {};

TEST_P(GoldenCaseTest, MatchesTheFloat64Reference) {
  const json& c = GoldenCase(GetParam());
  ASSERT_FALSE(c.empty());
  const int64_t rows = c.at("rows"), cols = c.at("cols");
  const std::vector<float> z = Vec<float>(c.at("logits"));
  const std::string dtype = c.at("logits_dtype");
  std::vector<uint16_t> bits(z.size());
  Logits logits = Logits::Float32(z, rows, cols);
  if (dtype != "float32") {
    const bool bf16 = dtype == "bfloat16";
    for (size_t i = 0; i < z.size(); ++i) {
      bits[i] = bf16 ? FloatToBFloat16(z[i]) : FloatToFloat16(z[i]);
    }
    // The golden file's own bits: the engine's encoding agrees with torch.
    EXPECT_EQ(bits, Vec<uint16_t>(c.at("logits_bits")));
    logits = Logits::Half(bf16 ? v1::DTYPE_BFLOAT16 : v1::DTYPE_FLOAT16, bits,
                          rows, cols);
  }
  LossOptions options;
  v1::LossType loss_type = v1::LOSS_TYPE_UNSPECIFIED;
  v1::Reduction reduction = v1::REDUCTION_UNSPECIFIED;
  v1::WeightingScheme scheme = v1::WEIGHTING_SCHEME_UNSPECIFIED;
  ASSERT_TRUE(v1::LossType_Parse(
      "LOSS_TYPE_" + c.at("loss_type").get<std::string>(), &loss_type));
  ASSERT_TRUE(v1::Reduction_Parse(
      "REDUCTION_" + c.at("reduction").get<std::string>(), &reduction));
  ASSERT_TRUE(v1::WeightingScheme_Parse(
      "WEIGHTING_SCHEME_" + c.at("scheme").get<std::string>(), &scheme));
  options.config.set_loss_type(loss_type);
  options.config.set_reduction(reduction);
  options.config.set_weighting(scheme);
  options.config.set_beta(c.at("beta"));
  options.config.set_gamma(c.at("gamma"));
  options.config.set_ignore_index(c.at("ignore_index"));
  // LOSS.md section 10's parameters, where the case sets them.
  const auto* d = v1::LossConfig::descriptor();
  for (const char* name : {"tau", "seesaw_p", "seesaw_q", "seesaw_eps",
                           "eql_lambda", "vs_gamma", "focal_alpha"}) {
    if (c.contains(name) && !c.at(name).is_null()) {
      options.config.GetReflection()->SetDouble(
          &options.config, d->FindFieldByName(name), c.at(name));
    }
  }
  options.want_per_sample_losses = true;
  std::vector<int32_t> labels;
  std::vector<float> targets, sample_weights, upstream;
  if (c.contains("labels")) labels = Vec<int32_t>(c.at("labels"));
  if (c.contains("targets")) targets = Vec<float>(c.at("targets"));
  if (c.contains("sample_weights"))
    sample_weights = Vec<float>(c.at("sample_weights"));
  if (c.contains("upstream")) upstream = Vec<float>(c.at("upstream"));
  options.sample_weights = sample_weights;
  options.upstream = upstream;
  const Target target = targets.empty() ? Labels(labels) : Targets(targets);

  absl::StatusOr<LossResult> r = client_->ComputeLoss(
      LossSource::Counts(Vec<int64_t>(c.at("class_counts"))), logits, target,
      options);
  ASSERT_TRUE(r.ok()) << r.status();
  const json& e = c.at("expected");
  ExpectLossNear(r->loss, e.at("loss"), "loss");
  EXPECT_EQ(r->num_samples, e.at("num_samples").get<int64_t>());
  const std::vector<double> per_sample = Vec<double>(e.at("per_sample_losses"));
  ASSERT_EQ(r->per_sample_losses.size(), per_sample.size());
  for (size_t i = 0; i < per_sample.size(); ++i) {
    ExpectLossNear(r->per_sample_losses[i], per_sample[i],
                   absl::StrCat("per_sample_losses[", i, "]"));
  }
  ExpectGradientNear(r->gradient, Vec<double>(e.at("gradient")));
  // SEESAW and EQL carry their own weighting: every class weight is 1.
  const std::vector<double> w =
      e.contains("class_weights")
          ? Vec<double>(e.at("class_weights"))
          : std::vector<double>(r->class_weights.size(), 1.0);
  ASSERT_EQ(r->class_weights.size(), w.size());
  for (size_t j = 0; j < w.size(); ++j) {
    EXPECT_NEAR(r->class_weights[j], w[j], 1e-12 + 1e-12 * std::abs(w[j])) << j;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Selected, GoldenCaseTest,
    ::testing::Values("seed_softmax_mean", "seed_softmax_bce_element_mean",
                      "softmax_labels_weighted_mean_weighted",
                      "sigmoid_multihot_mean", "focal_soft_none_weighted",
                      "softmax_labels_none_weighted",
                      "focal_labels_none_weighted", "softmax_float16_mean",
                      "focal_bfloat16_mean", "sigmoid_bfloat16_none_weighted",
                      "focal_float16_soft_sum", "focal_extreme_mean",
                      "focal_positive_at_minus_1000_gamma_0p5",
                      "softmax_all_ignored_none",
                      "softmax_scheme_inverse_sqrt_frequency",
                      // LOSS.md section 10
                      "seesaw_mean_background", "seesaw_mean_bfloat16",
                      "eql_mean_background", "vs_mean_effective_number",
                      "vs_mean_bfloat16", "focal_alpha_labels_mean",
                      "focal_alpha_multihot_mean", "sigmoid_alpha_labels_mean"),
    [](const ::testing::TestParamInfo<const char*>& info) {
      return std::string(info.param);
    });

TEST_F(ClientTest, InvalidInputNamesFieldAndIndex) {
  const SeedBatch b = LoadSeed();
  const LossSource source = LossSource::Counts(b.counts);
  const Logits logits = Logits::Float32(b.logits, b.rows, b.cols);

  std::vector<int32_t> labels = b.labels;
  labels[4] = 9;
  absl::StatusOr<LossResult> r =
      client_->ComputeLoss(source, logits, Labels(labels));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr("labels[4]"));

  std::vector<float> z = b.logits;
  z[1 * b.cols + 3] = std::numeric_limits<float>::quiet_NaN();
  r = client_->ComputeLoss(source, Logits::Float32(z, b.rows, b.cols),
                           Labels(b.labels));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr("logits[1][3]"));

  std::vector<float> weights(b.rows, 1.0f);
  weights[6] = -1.0f;
  LossOptions options;
  options.sample_weights = weights;
  r = client_->ComputeLoss(source, logits, Labels(b.labels), options);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr("sample_weights[6]"));

  std::vector<float> short_weights(b.rows - 1, 1.0f);
  options.sample_weights = short_weights;
  r = client_->ComputeLoss(source, logits, Labels(b.labels), options);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr("sample_weights"));

  LossOptions negative_gamma;
  negative_gamma.config.set_loss_type(v1::LOSS_TYPE_FOCAL);
  negative_gamma.config.set_gamma(-1);
  r = client_->ComputeLoss(source, logits, Labels(b.labels), negative_gamma);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr("gamma"));

  // Targets with SOFTMAX.
  std::vector<float> targets(b.rows * b.cols, 0.0f);
  LossOptions softmax;
  softmax.config.set_loss_type(v1::LOSS_TYPE_SOFTMAX);
  r = client_->ComputeLoss(source, logits, Targets(targets), softmax);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);

  // Class count C different from the dataset's.
  ASSERT_TRUE(client_->PutDataset(MakeDataset("three", {1, 2, 3})).ok());
  r = client_->ComputeLoss(LossSource::Dataset("three"), logits,
                           Labels(b.labels));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);

  r = client_->ComputeLoss(LossSource::Dataset("no-such-dataset"), logits,
                           Labels(b.labels));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(r.status().message(), HasSubstr("no-such-dataset"));
}

TEST_F(ClientTest, DeadlineExceededOnAHugeBatch) {
  constexpr int64_t kRows = 4096, kCols = 1000;
  std::vector<float> z(kRows * kCols, 0.25f);
  std::vector<int32_t> labels(kRows, 3);
  LossOptions options;
  options.deadline = absl::Microseconds(1);
  const absl::Time start = absl::Now();
  absl::StatusOr<LossResult> r = client_->ComputeLoss(
      LossSource::Counts(std::vector<int64_t>(kCols, 10)),
      Logits::Float32(z, kRows, kCols), Labels(labels), options);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDeadlineExceeded)
      << r.status();
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  // The channel is still fine afterwards.
  EXPECT_TRUE(client_->CheckHealth().ok());
}

TEST_F(ClientTest, MessageLimitOfTheClient) {
  ClientOptions small;
  small.max_message_mb = 1;
  absl::StatusOr<std::unique_ptr<Client>> c =
      Client::Create(server_.target(), small);
  ASSERT_TRUE(c.ok());
  std::vector<float> z(size_t{512} * 1000, 0.0f);  // 2 MB of logits
  std::vector<int32_t> labels(512, 0);
  absl::StatusOr<LossResult> r =
      (*c)->ComputeLoss(LossSource::Counts(std::vector<int64_t>(1000, 1)),
                        Logits::Float32(z, 512, 1000), Labels(labels));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted)
      << r.status();
}

// ---------------------------------------------------------------------------
// Health.

TEST_F(ClientTest, HealthOkWhileServingAndAnErrorAfterStop) {
  ClientOptions options;
  options.default_deadline = absl::Seconds(1);
  absl::StatusOr<std::unique_ptr<Client>> c =
      Client::Create(server_.target(), options);
  ASSERT_TRUE(c.ok());
  EXPECT_TRUE((*c)->CheckHealth().ok());
  const int status = server_.Stop();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
      << "SIGTERM should drain and exit 0; status " << status;
  const absl::Time start = absl::Now();
  EXPECT_FALSE((*c)->CheckHealth().ok());
  EXPECT_LT(absl::Now() - start, absl::Seconds(3));
  // Other calls fail too, within their deadline (retries included).
  const absl::Time start2 = absl::Now();
  EXPECT_FALSE((*c)->GetDataset("cifar10-lt").ok());
  EXPECT_LT(absl::Now() - start2, absl::Seconds(3));
}

// A server that accepts connections but never answers (SIGSTOP): every call
// ends at ClientOptions::default_deadline, CheckHealth included.
TEST_F(ClientTest, CallsToAHungServerEndAtTheDefaultDeadline) {
  ClientOptions options;
  options.default_deadline = absl::Milliseconds(500);
  absl::StatusOr<std::unique_ptr<Client>> c =
      Client::Create(server_.target(), options);
  ASSERT_TRUE(c.ok());
  ASSERT_TRUE((*c)->CheckHealth().ok());
  server_.Pause();
  absl::Time start = absl::Now();
  absl::StatusOr<v1::Dataset> d = (*c)->GetDataset("cifar10-lt");
  EXPECT_EQ(d.status().code(), absl::StatusCode::kDeadlineExceeded)
      << d.status();
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
  start = absl::Now();
  absl::Status health = (*c)->CheckHealth();
  EXPECT_FALSE(health.ok());
  EXPECT_LT(absl::Now() - start, absl::Seconds(2))
      << "CheckHealth ignores ClientOptions::default_deadline: " << health;
  server_.Resume();
}

// ---------------------------------------------------------------------------
// LossStream.

TEST_F(ClientTest, LossStreamToAHungServerEndsAtTheDeadline) {
  const SeedBatch b = LoadSeed();
  std::unique_ptr<LossStream> stream = client_->OpenLossStream();
  LossOptions options;
  options.config = SeedConfig();
  options.deadline = absl::Milliseconds(300);
  const Logits logits = Logits::Float32(b.logits, b.rows, b.cols);
  ASSERT_TRUE(stream
                  ->Compute(LossSource::Counts(b.counts), logits,
                            Labels(b.labels), options)
                  .ok());
  server_.Pause();
  const absl::Time start = absl::Now();
  absl::StatusOr<LossResult> r = stream->Compute(
      LossSource::Counts(b.counts), logits, Labels(b.labels), options);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDeadlineExceeded)
      << r.status();
  EXPECT_LT(absl::Now() - start, absl::Seconds(3));
  server_.Resume();
  // The cancelled stream is closed; a new one works.
  EXPECT_EQ(stream
                ->Compute(LossSource::Counts(b.counts), logits,
                          Labels(b.labels), options)
                .status()
                .code(),
            absl::StatusCode::kFailedPrecondition);
  std::unique_ptr<LossStream> fresh = client_->OpenLossStream();
  EXPECT_TRUE(fresh
                  ->Compute(LossSource::Counts(b.counts), logits,
                            Labels(b.labels), options)
                  .ok());
}

// Batch `step` of a deterministic little training run: the seed batch
// shifted a little per step.
std::vector<float> StepLogits(const SeedBatch& b, int step) {
  std::vector<float> z = b.logits;
  for (size_t i = 0; i < z.size(); ++i)
    z[i] +=
        0.03f * static_cast<float>((static_cast<size_t>(step) * 7 + i) % 11);
  return z;
}

TEST_F(ClientTest, LossStreamMatchesUnaryCalls) {
  const SeedBatch b = LoadSeed();
  LossOptions options;
  options.config = SeedConfig();
  options.want_per_sample_losses = true;
  std::unique_ptr<LossStream> stream = client_->OpenLossStream();
  for (int step = 0; step < 10; ++step) {
    SCOPED_TRACE(step);
    const std::vector<float> z = StepLogits(b, step);
    std::vector<float> streamed_grad(z.size());
    LossOptions with_buffer = options;
    with_buffer.gradient_out = absl::MakeSpan(streamed_grad);
    absl::StatusOr<LossResult> streamed = stream->Compute(
        LossSource::Counts(b.counts), Logits::Float32(z, b.rows, b.cols),
        Labels(b.labels), with_buffer);
    absl::StatusOr<LossResult> unary = client_->ComputeLoss(
        LossSource::Counts(b.counts), Logits::Float32(z, b.rows, b.cols),
        Labels(b.labels), options);
    ASSERT_TRUE(streamed.ok()) << streamed.status();
    ASSERT_TRUE(unary.ok()) << unary.status();
    EXPECT_EQ(streamed->loss, unary->loss);
    EXPECT_EQ(streamed->per_sample_losses, unary->per_sample_losses);
    EXPECT_EQ(streamed_grad, unary->gradient);
    EXPECT_EQ(streamed->num_samples, 10);
  }
  EXPECT_TRUE(stream->Close().ok());
  EXPECT_EQ(stream
                ->Compute(LossSource::Counts(b.counts),
                          Logits::Float32(b.logits, b.rows, b.cols),
                          Labels(b.labels), options)
                .status()
                .code(),
            absl::StatusCode::kFailedPrecondition)
      << "a closed stream refuses work";
}

TEST_F(ClientTest, LossStreamReportsABadRequestAndGoesOn) {
  const SeedBatch b = LoadSeed();
  LossOptions options;
  options.config = SeedConfig();
  std::unique_ptr<LossStream> stream = client_->OpenLossStream();
  std::vector<int32_t> bad_labels = b.labels;
  bad_labels[7] = 5;
  for (int step = 0; step < 10; ++step) {
    SCOPED_TRACE(step);
    absl::StatusOr<LossResult> r;
    if (step == 4) {
      r = stream->Compute(LossSource::Counts(b.counts),
                          Logits::Float32(b.logits, b.rows, b.cols),
                          Labels(bad_labels), options);
      EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument)
          << r.status();
      EXPECT_THAT(r.status().message(), HasSubstr("labels[7]"));
      continue;
    }
    if (step == 6) {  // refused by the client before sending
      r = stream->Compute(LossSource::Counts(b.counts),
                          Logits::Float32(b.logits, b.rows + 1, b.cols),
                          Labels(b.labels), options);
      EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
      continue;
    }
    if (step == 8) {
      r = stream->Compute(LossSource::Dataset("not-there"),
                          Logits::Float32(b.logits, b.rows, b.cols),
                          Labels(b.labels), options);
      EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound) << r.status();
      continue;
    }
    r = stream->Compute(LossSource::Counts(b.counts),
                        Logits::Float32(b.logits, b.rows, b.cols),
                        Labels(b.labels), options);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_NEAR(r->loss, kSeedLoss, 1e-5);
  }
  EXPECT_TRUE(stream->Close().ok());
}

TEST_F(ClientTest, LossStreamEndsWithAnErrorWhenTheServerDies) {
  const SeedBatch b = LoadSeed();
  LossOptions options;
  options.config = SeedConfig();
  std::unique_ptr<LossStream> stream = client_->OpenLossStream();
  ASSERT_TRUE(stream
                  ->Compute(LossSource::Counts(b.counts),
                            Logits::Float32(b.logits, b.rows, b.cols),
                            Labels(b.labels), options)
                  .ok());
  server_.Kill();
  const absl::Time start = absl::Now();
  absl::StatusOr<LossResult> r = stream->Compute(
      LossSource::Counts(b.counts), Logits::Float32(b.logits, b.rows, b.cols),
      Labels(b.labels), options);
  EXPECT_FALSE(r.ok());
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  // Destroying the stream afterwards must not hang either.
  stream.reset();
}

// ---------------------------------------------------------------------------
// Concurrency and load balancing.

TEST_F(ClientTest, OneClientFromEightThreads) {
  const SeedBatch b = LoadSeed();
  ASSERT_TRUE(client_->PutDataset(MakeDataset("shared", {0, 0, 0, 0, 0})).ok());
  constexpr int kThreads = 8, kIterations = 15;
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      LossOptions options;
      options.config = SeedConfig();
      std::vector<float> grad(b.rows * b.cols);
      options.gradient_out = absl::MakeSpan(grad);
      for (int i = 0; i < kIterations; ++i) {
        absl::StatusOr<LossResult> r =
            client_->ComputeLoss(LossSource::Counts(b.counts),
                                 Logits::Float32(b.logits, b.rows, b.cols),
                                 Labels(b.labels), options);
        if (!r.ok() || std::abs(r->loss - kSeedLoss) > 1e-5) ++failures;
        const std::vector<int32_t> one = {t % 5};
        if (!client_->AddClassCounts("shared", {}, one).ok()) ++failures;
        if (!client_->GetClassWeights(LossSource::Counts(b.counts)).ok())
          ++failures;
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  // No lost update: 8 threads x 15 labels, threads t and t+5 on class t % 5.
  absl::StatusOr<v1::Dataset> d = client_->GetDataset("shared");
  ASSERT_TRUE(d.ok());
  EXPECT_THAT(d->class_counts(), ::testing::ElementsAre(30, 30, 30, 15, 15));
  EXPECT_EQ(d->version(), 1u + kThreads * kIterations);
}

TEST(RoundRobin, BothServersServeAndAKilledOneCostsNoFailures) {
  ServerProcess a, b;
  ASSERT_TRUE(a.Start().ok());
  ASSERT_TRUE(b.Start().ok());
  // A dataset that exists on server a only tells the servers apart.
  absl::StatusOr<std::unique_ptr<Client>> only_a = Client::Create(a.target());
  ASSERT_TRUE(only_a.ok());
  v1::Dataset d;
  d.set_name("only-on-a");
  d.add_class_counts(1);
  d.add_class_counts(2);
  ASSERT_TRUE((*only_a)->PutDataset(d).ok());

  const std::string target =
      absl::StrCat("ipv4:127.0.0.1:", a.port(), ",127.0.0.1:", b.port());
  absl::StatusOr<std::unique_ptr<Client>> rr = Client::Create(target);
  ASSERT_TRUE(rr.ok()) << rr.status();
  Client& client = **rr;
  ASSERT_TRUE(client.CheckHealth().ok());
  absl::SleepFor(absl::Milliseconds(200));  // both subchannels connect
  int on_a = 0, on_b = 0;
  for (int i = 0; i < 40; ++i) {
    absl::StatusOr<v1::Dataset> got = client.GetDataset("only-on-a");
    if (got.ok()) {
      ++on_a;
    } else if (got.status().code() == absl::StatusCode::kNotFound) {
      ++on_b;
    } else {
      ADD_FAILURE() << got.status();
    }
  }
  EXPECT_GT(on_a, 5) << "server a got " << on_a << " of 40 calls";
  EXPECT_GT(on_b, 5) << "server b got " << on_b << " of 40 calls";

  // Idempotent ComputeLoss with inline counts from 2 threads while b is
  // SIGKILLed: retries on UNAVAILABLE move every call to a.
  const SeedBatch batch = LoadSeed();
  std::atomic<bool> stop{false}, killed{false};
  std::atomic<int> ok_before{0}, ok_after{0}, failed{0};
  std::vector<std::string> errors;
  std::mutex errors_mu;
  std::vector<std::thread> threads;
  for (int t = 0; t < 2; ++t) {
    threads.emplace_back([&] {
      LossOptions options;
      options.config = SeedConfig();
      while (!stop.load()) {
        const bool after = killed.load();
        absl::StatusOr<LossResult> r = client.ComputeLoss(
            LossSource::Counts(batch.counts),
            Logits::Float32(batch.logits, batch.rows, batch.cols),
            Labels(batch.labels), options);
        if (r.ok()) {
          ++(after ? ok_after : ok_before);
        } else {
          ++failed;
          std::lock_guard<std::mutex> lock(errors_mu);
          if (errors.size() < 5) errors.push_back(r.status().ToString());
        }
      }
    });
  }
  absl::SleepFor(absl::Milliseconds(700));
  b.Kill();
  killed = true;
  absl::SleepFor(absl::Milliseconds(1500));
  stop = true;
  for (std::thread& t : threads) t.join();
  EXPECT_GT(ok_before.load(), 0);
  EXPECT_GT(ok_after.load(), 0);
  EXPECT_EQ(failed.load(), 0)
      << "first errors: " << (errors.empty() ? "" : errors.front());
}

}  // namespace
}  // namespace cbloss::client
