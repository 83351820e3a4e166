// Copyright 2026 The cbloss Authors.
//
// Prometheus metrics of cbloss-server (docs/DEPLOY.md, "Observe"), served as
// text at http://--metrics_listen/metrics:
//
//   cbloss_requests_total{method,code}            counter, LossService calls
//   cbloss_request_duration_seconds{method}       histogram
//   (_bucket/_sum/_count) cbloss_elements_computed_total counter, logits
//   elements
//                                                 (B * C) of successful
//                                                 ComputeLoss / StreamLoss
//                                                 requests
//   cbloss_in_flight_calls                        gauge (InFlightCalls)
//   cbloss_datasets                               gauge
//   cbloss_runs                                   gauge
//   cbloss_run_updates_unflushed                  gauge
//   cbloss_shared_memory_regions                  gauge, registered regions
//   cbloss_shared_memory_mapped_bytes             gauge, bytes they map
//   cbloss_unix_connections                       gauge, open Unix socket
//                                                 connections
//   cbloss_build_info{version}                    gauge, always 1
//
// Calls are counted by a server interceptor when their status is sent (so a
// client that saw the status can scrape and find its call counted); `method`
// is the LossService method's name ("ComputeLoss"), `code` the gRPC status
// code's name ("OK", "UNAUTHENTICATED"). Health and reflection calls are not
// counted. A StreamLoss stream counts once, when it ends; its requests count
// in cbloss_elements_computed_total as they are computed.
//
// Thread-safety: every method may be called concurrently.

#ifndef CBLOSS_SERVER_METRICS_H_
#define CBLOSS_SERVER_METRICS_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "grpcpp/support/server_interceptor.h"
#include "grpcpp/support/status.h"

namespace httplib {
class Server;
}

namespace cbloss::server {

class ServerMetrics {
 public:
  // Upper bounds (seconds) of the latency histogram's buckets; +Inf follows.
  static constexpr std::array<double, 14> kBuckets = {
      0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
      0.1,    0.25,  0.5,    1,     2.5,  5,     10};

  struct Gauges {
    int64_t in_flight_calls = 0;
    int64_t datasets = 0;
    int64_t runs = 0;
    // Accumulated run updates acknowledged and not yet written (docs/RUNS.md).
    int64_t run_updates_unflushed = 0;
    // Shared memory and Unix sockets (API.md section 5.3).
    int64_t shared_memory_regions = 0;
    int64_t shared_memory_mapped_bytes = 0;
    int64_t unix_connections = 0;
  };

  explicit ServerMetrics(std::string version) : version_(std::move(version)) {}

  void RecordCall(absl::string_view method, grpc::StatusCode code,
                  double seconds);
  // Give this to LossServiceOptions::elements_computed.
  std::atomic<int64_t>* elements_computed() { return &elements_computed_; }

  // The Prometheus text exposition (format 0.0.4) of everything.
  std::string Render(const Gauges& gauges) const;

  // Counts LossService calls; must not outlive this object.
  std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
  MakeInterceptorFactory();

 private:
  struct Histogram {
    std::array<int64_t, kBuckets.size()> buckets{};  // not cumulative
    int64_t count = 0;
    double sum = 0;
  };

  const std::string version_;
  std::atomic<int64_t> elements_computed_{0};
  mutable absl::Mutex mu_;
  // (method, code name) -> calls
  std::map<std::pair<std::string, std::string>, int64_t> requests_
      ABSL_GUARDED_BY(mu_);
  std::map<std::string, Histogram> durations_ ABSL_GUARDED_BY(mu_);
};

// The HTTP endpoint: GET /metrics answers `render()`. Two worker threads.
class MetricsHttpServer {
 public:
  // Binds `listen` (HOST:PORT, [IPv6]:PORT; port 0 picks one) and serves in
  // a thread of its own.
  static absl::StatusOr<std::unique_ptr<MetricsHttpServer>> Start(
      const std::string& listen, std::function<std::string()> render);
  ~MetricsHttpServer();  // stops serving

  int port() const { return port_; }

 private:
  MetricsHttpServer() = default;

  std::unique_ptr<httplib::Server> http_;
  std::thread thread_;
  std::atomic<bool> done_{false};  // the serving loop returned
  int port_ = 0;
};

}  // namespace cbloss::server

#endif  // CBLOSS_SERVER_METRICS_H_
