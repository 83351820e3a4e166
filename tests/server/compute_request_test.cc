// Copyright 2026 The cbloss Authors.
//
// The request path without gRPC: ResolveComputation's checks, the gradient
// sink's three destinations, and the detached gradient's wire prefix (which
// protobuf must read back as the same message).

#include "server/compute_request.h"

#include <cstring>
#include <memory>
#include <string>

#include "gtest/gtest.h"

namespace cbloss::server {
namespace {

v1::ComputeLossRequest SmallRequest() {
  v1::ComputeLossRequest r;
  for (int64_t n : {3, 1}) r.mutable_class_counts()->add_counts(n);
  r.mutable_logits()->add_shape(2);
  r.mutable_logits()->add_shape(2);
  for (float z : {0.5f, -1.0f, 2.0f, 0.0f})
    r.mutable_logits()->add_float_data(z);
  r.add_labels(0);
  r.add_labels(1);
  r.set_want_gradient(true);
  return r;
}

TEST(DetachedGradientPrefix, ProtobufReadsTheBytesBackAsTheGradient) {
  for (size_t size : {size_t{0}, size_t{1}, size_t{127}, size_t{128},
                      size_t{300}, size_t{70000}}) {
    v1::ComputeLossResponse head;
    head.set_loss(1.5);
    head.mutable_gradient()->set_dtype(v1::DTYPE_BFLOAT16);
    head.mutable_gradient()->add_shape(7);
    std::string bytes(size, '\0');
    for (size_t i = 0; i < size; ++i) bytes[i] = static_cast<char>(i * 31);
    const std::string wire =
        head.SerializeAsString() + DetachedGradientPrefix(size) + bytes;
    v1::ComputeLossResponse parsed;
    ASSERT_TRUE(parsed.ParseFromString(wire)) << size;
    EXPECT_EQ(parsed.loss(), 1.5);
    EXPECT_EQ(parsed.gradient().dtype(), v1::DTYPE_BFLOAT16);
    EXPECT_EQ(parsed.gradient().shape_size(), 1);
    EXPECT_EQ(parsed.gradient().data(), bytes) << size;
  }
}

TEST(ResolveComputation, NeedsASource) {
  v1::ComputeLossRequest r = SmallRequest();
  r.clear_class_counts();
  absl::StatusOr<Computation> c = ResolveComputation(r, nullptr);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(c.status().message(),
            "give either dataset (a stored dataset's name) or class_counts");
}

TEST(ResolveComputation, ChecksTheExpectedDatasetVersion) {
  auto dataset = std::make_shared<v1::Dataset>();
  dataset->set_name("d");
  dataset->set_version(4);
  for (int64_t n : {3, 1}) dataset->add_class_counts(n);
  v1::ComputeLossRequest r = SmallRequest();
  r.set_dataset("d");
  r.set_expected_dataset_version(3);
  absl::StatusOr<Computation> c = ResolveComputation(r, dataset);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kAborted);
  EXPECT_EQ(c.status().message(),
            "dataset 'd' is at version 4, not expected_dataset_version 3");
}

TEST(ResolveComputation, DecidesDeferredReweightingFromTheEpoch) {
  v1::ComputeLossRequest r = SmallRequest();
  r.mutable_config()->set_drw_start_epoch(5);
  r.set_epoch(4);
  absl::StatusOr<Computation> before = ResolveComputation(r, nullptr);
  ASSERT_TRUE(before.ok()) << before.status();
  EXPECT_EQ(before->terms.weights, (std::vector<double>{1.0, 1.0}));
  r.set_epoch(5);
  absl::StatusOr<Computation> after = ResolveComputation(r, nullptr);
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_NE(after->terms.weights, before->terms.weights);
}

TEST(GradientSink, FloatDataLogitsGetAFloatDataGradient) {
  const v1::ComputeLossRequest r = SmallRequest();
  absl::StatusOr<Computation> c = ResolveComputation(r, nullptr);
  ASSERT_TRUE(c.ok()) << c.status();
  v1::ComputeLossResponse response;
  ASSERT_TRUE(RunComputation(*c, {}, &response).ok());
  EXPECT_EQ(response.gradient().float_data_size(), 4);
  EXPECT_TRUE(response.gradient().data().empty());
}

TEST(GradientSink, BytesGoToTheResponseOrTheDetachedBuffer) {
  v1::ComputeLossRequest r = SmallRequest();
  std::string bytes(16, '\0');
  const float z[] = {0.5f, -1.0f, 2.0f, 0.0f};
  std::memcpy(bytes.data(), z, sizeof(z));
  r.mutable_logits()->clear_float_data();
  r.mutable_logits()->set_data(bytes);
  absl::StatusOr<Computation> c = ResolveComputation(r, nullptr);
  ASSERT_TRUE(c.ok()) << c.status();

  v1::ComputeLossResponse inline_response;
  ASSERT_TRUE(RunComputation(*c, {}, &inline_response).ok());
  EXPECT_EQ(inline_response.gradient().data().size(), 16u);

  v1::ComputeLossResponse head;
  DetachedGradient detached;
  ASSERT_TRUE(RunComputation(*c, {}, &head, &detached).ok());
  EXPECT_TRUE(head.gradient().data().empty());
  ASSERT_EQ(detached.size(), 16u);
  EXPECT_EQ(std::string(detached.data(), detached.size()),
            inline_response.gradient().data());
  EXPECT_EQ(head.loss(), inline_response.loss());
}

}  // namespace
}  // namespace cbloss::server
