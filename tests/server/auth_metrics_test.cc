// Copyright 2026 The cbloss Authors.
//
// Unit tests of server/auth.h and server/metrics.h; the end-to-end behaviour
// (real server, real calls) is in test_security.py and test_metrics.py.

#include <cstdio>
#include <fstream>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "cbloss/v1/cbloss.pb.h"
#include "google/protobuf/descriptor.h"
#include "gtest/gtest.h"
#include "server/auth.h"
#include "server/metrics.h"

namespace cbloss::server {
namespace {

using Access = TokenAuthorizer::Access;

std::string WriteTemp(const std::string& name, const std::string& text) {
  const std::string path =
      absl::StrCat(::testing::TempDir(), "/cbloss_auth_test_", name);
  std::ofstream(path, std::ios::binary | std::ios::trunc) << text;
  return path;
}

TEST(ConstantTimeEquals, ComparesWholeStrings) {
  EXPECT_TRUE(ConstantTimeEquals("", ""));
  EXPECT_TRUE(ConstantTimeEquals("secret-1", "secret-1"));
  EXPECT_FALSE(ConstantTimeEquals("secret-1", "secret-2"));
  EXPECT_FALSE(ConstantTimeEquals("secret-1", "Secret-1"));
  EXPECT_FALSE(ConstantTimeEquals("secret", "secret-1"));
  EXPECT_FALSE(ConstantTimeEquals("secret-1", "secret"));
  EXPECT_FALSE(ConstantTimeEquals("", "x"));
  // A NUL byte is data, not an end.
  EXPECT_FALSE(ConstantTimeEquals(absl::string_view("ab\0c", 4),
                                  absl::string_view("ab\0d", 4)));
}

TEST(ReadTokenFile, DropsTrailingNewlines) {
  EXPECT_EQ(*ReadTokenFile(WriteTemp("lf", "tok-123\n")), "tok-123");
  EXPECT_EQ(*ReadTokenFile(WriteTemp("crlf", "tok-123\r\n\n")), "tok-123");
  EXPECT_EQ(*ReadTokenFile(WriteTemp("bare", "tok-123")), "tok-123");
}

TEST(ReadTokenFile, RefusesEmptyMissingAndSpacedTokensWithoutQuotingThem) {
  EXPECT_EQ(ReadTokenFile(WriteTemp("empty", " \n")).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ReadTokenFile("/nonexistent/cbloss-token").status().code(),
            absl::StatusCode::kNotFound);
  absl::Status spaced =
      ReadTokenFile(WriteTemp("spaced", "hidden part\n")).status();
  EXPECT_EQ(spaced.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(absl::StrContains(spaced.message(), "hidden"));
}

TEST(TokenAuthorizer, NoTokensMeansOpen) {
  TokenAuthorizer auth("", "");
  EXPECT_FALSE(auth.enabled());
  for (Access a : {Access::kRead, Access::kCompute, Access::kAdmin}) {
    EXPECT_TRUE(auth.Check(a, nullptr).ok());
  }
}

TEST(TokenAuthorizer, AdminTokenGuardsWritesOnly) {
  TokenAuthorizer auth("adm", "");
  const std::string good = "Bearer adm", lower = "bearer adm",
                    wrong = "Bearer adx", basic = "Basic adm", bare = "adm",
                    empty = "Bearer ";
  EXPECT_TRUE(auth.Check(Access::kAdmin, &good).ok());
  EXPECT_TRUE(auth.Check(Access::kAdmin, &lower).ok());
  for (const std::string* bad : {&wrong, &basic, &bare, &empty}) {
    EXPECT_EQ(auth.Check(Access::kAdmin, bad).code(),
              absl::StatusCode::kUnauthenticated)
        << *bad;
  }
  EXPECT_EQ(auth.Check(Access::kAdmin, nullptr).code(),
            absl::StatusCode::kUnauthenticated);
  EXPECT_TRUE(auth.Check(Access::kCompute, nullptr).ok());
  EXPECT_TRUE(auth.Check(Access::kRead, &wrong).ok());
}

TEST(TokenAuthorizer, ComputeTokenGuardsTheRestAndCannotWrite) {
  TokenAuthorizer auth("adm", "cmp");
  const std::string admin = "Bearer adm", compute = "Bearer cmp",
                    wrong = "Bearer zzz";
  for (Access a : {Access::kRead, Access::kCompute}) {
    EXPECT_TRUE(auth.Check(a, &admin).ok());
    EXPECT_TRUE(auth.Check(a, &compute).ok());
    EXPECT_EQ(auth.Check(a, &wrong).code(), absl::StatusCode::kUnauthenticated);
    EXPECT_EQ(auth.Check(a, nullptr).code(),
              absl::StatusCode::kUnauthenticated);
  }
  EXPECT_EQ(auth.Check(Access::kAdmin, &compute).code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_TRUE(auth.Check(Access::kAdmin, &admin).ok());
}

TEST(MethodAccess, EveryLossServiceMethodHasItsLevel) {
  const google::protobuf::ServiceDescriptor* service =
      v1::PutDatasetRequest::descriptor()->file()->FindServiceByName(
          "LossService");
  ASSERT_NE(service, nullptr);
  EXPECT_EQ(static_cast<int>(LossServiceAccess().size()),
            service->method_count());
  for (int i = 0; i < service->method_count(); ++i) {
    const std::string& name = service->method(i)->name();
    bool found = false;
    for (const MethodAccess& m : LossServiceAccess()) found |= m.method == name;
    EXPECT_TRUE(found) << name << " has no row in the access table";
  }
  // Dataset writes are admin; reads and computations are not.
  for (const char* m : {"PutDataset", "DeleteDataset", "AddClassCounts"}) {
    EXPECT_EQ(AccessFor(m), Access::kAdmin) << m;
  }
  for (const char* m : {"GetDataset", "ListDatasets"}) {
    EXPECT_EQ(AccessFor(m), Access::kRead) << m;
  }
  for (const char* m : {"GetClassWeights", "ComputeLoss", "StreamLoss"}) {
    EXPECT_EQ(AccessFor(m), Access::kCompute) << m;
  }
  EXPECT_EQ(AccessFor("NotAMethod"), Access::kAdmin);  // closed by default
}

TEST(ServerMetrics, RendersCountersAndCumulativeBuckets) {
  ServerMetrics metrics("9.9.9");
  metrics.RecordCall("ComputeLoss", grpc::StatusCode::OK, 0.003);
  metrics.RecordCall("ComputeLoss", grpc::StatusCode::OK, 0.005);  // le is <=
  metrics.RecordCall("ComputeLoss", grpc::StatusCode::INVALID_ARGUMENT, 20.0);
  metrics.elements_computed()->fetch_add(96);
  ServerMetrics::Gauges gauges;
  gauges.in_flight_calls = 2;
  gauges.datasets = 5;
  const std::string text = metrics.Render(gauges);
  for (const char* line : {
           "cbloss_build_info{version=\"9.9.9\"} 1\n",
           "cbloss_in_flight_calls 2\n",
           "cbloss_datasets 5\n",
           "cbloss_elements_computed_total 96\n",
           "cbloss_requests_total{method=\"ComputeLoss\",code=\"OK\"} 2\n",
           "cbloss_requests_total{method=\"ComputeLoss\",code=\"INVALID_"
           "ARGUMENT\"} 1\n",
           "_bucket{method=\"ComputeLoss\",le=\"0.0025\"} 0\n",
           "_bucket{method=\"ComputeLoss\",le=\"0.005\"} 2\n",
           "_bucket{method=\"ComputeLoss\",le=\"10\"} 2\n",
           "_bucket{method=\"ComputeLoss\",le=\"+Inf\"} 3\n",
           "cbloss_request_duration_seconds_sum{method=\"ComputeLoss\"} "
           "20.008\n",
           "cbloss_request_duration_seconds_count{method=\"ComputeLoss\"} 3\n",
           "# TYPE cbloss_request_duration_seconds histogram\n",
       }) {
    EXPECT_TRUE(absl::StrContains(text, line)) << line << "\nin:\n" << text;
  }
}

TEST(MetricsHttpServer, RefusesBadAddresses) {
  for (const char* listen :
       {"", "9090", ":9090", "127.0.0.1:", "127.0.0.1:65536", "127.0.0.1:-1",
        "127.0.0.1:http"}) {
    EXPECT_EQ(MetricsHttpServer::Start(listen, [] { return std::string(); })
                  .status()
                  .code(),
              absl::StatusCode::kInvalidArgument)
        << listen;
  }
}

}  // namespace
}  // namespace cbloss::server
