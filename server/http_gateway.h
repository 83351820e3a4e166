// Copyright 2026 The cbloss Authors.
//
// cbloss.v1.LossService as JSON over HTTP/1.1 (docs/spec/API.md section 5.4,
// docs/HTTP.md), served by Debian's cpp-httplib at --http_listen:
//
//   GET    /v1/datasets[?page_size=&page_token=]         ListDatasets
//   GET    /v1/datasets/{name}                           GetDataset
//   PUT    /v1/datasets/{name}[?expected_version=]       PutDataset (body:
//   Dataset) DELETE /v1/datasets/{name}[?expected_version=]       DeleteDataset
//   POST   /v1/datasets/{name}:addClassCounts            AddClassCounts
//   POST   /v1/weights                                   GetClassWeights
//   POST   /v1/loss                                      ComputeLoss
//   GET    /v1/runs[?page_size=&page_token=&dataset=]    ListRuns
//   POST   /v1/runs                                      CreateRun (body: Run)
//   GET    /v1/runs/{name}                               GetRun
//   DELETE /v1/runs/{name}[?expected_version=]           DeleteRun
//   GET    /healthz, /readyz                             live, SERVING
//   GET    /metrics                                      the Prometheus text
//   GET    /                                             the dashboard
//
// Bodies and answers are protobuf's JSON mapping of the RPC's messages; an
// error is {"code": N, "status": "NAME", "message": "..."} with the HTTP
// status of Google's API mapping. Calls go to the same LossServiceImpl
// typed handlers as gRPC's, so validation and its messages are the same;
// the gateway admits them itself with the same TokenAuthorizer (header
// `Authorization: Bearer ...`), counts them in the same metrics and
// in-flight count, and writes the access log.
//
// Thread-safety: the gateway serves on its own threads; Start and Stop are
// called from one thread.

#ifndef CBLOSS_SERVER_HTTP_GATEWAY_H_
#define CBLOSS_SERVER_HTTP_GATEWAY_H_

#include <atomic>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/auth.h"
#include "server/in_flight_calls.h"
#include "server/logging.h"
#include "server/loss_service.h"
#include "server/metrics.h"
#include "server/tls.h"

namespace httplib {
class Server;
}

namespace cbloss::server {

// The HTTP status Google's API mapping gives a gRPC status code.
int HttpStatusFor(absl::StatusCode code);

// The error body: {"code": N, "status": "NAME", "message": "..."}.
std::string ErrorBody(const absl::Status& status);

struct HttpGatewayOptions {
  std::string listen;  // HOST:PORT; port 0 picks one
  size_t max_body_bytes = size_t{64} << 20;
  int threads = 16;    // connections served at once (keep-alive holds one)
  ServerTlsFiles tls;  // empty cert: plaintext
};

// What the gateway calls; everything must outlive it.
struct HttpBackend {
  // Built without an authorizer: the gateway admits calls itself.
  LossServiceImpl* service = nullptr;
  const TokenAuthorizer* authorizer = nullptr;  // may be null
  ServerMetrics* metrics = nullptr;             // may be null
  InFlightCalls* in_flight = nullptr;           // may be null
  AccessLog* access_log = nullptr;              // may be null
  std::function<bool()> serving;                // /readyz
  std::function<std::string()> render_metrics;  // /metrics
};

class HttpGateway {
 public:
  static absl::StatusOr<std::unique_ptr<HttpGateway>> Start(
      const HttpGatewayOptions& options, HttpBackend backend);
  ~HttpGateway();  // Stop()

  int port() const { return port_; }

  // Stops accepting connections and waits for the serving threads.
  void Stop();

 private:
  HttpGateway() = default;
  void AddRoutes();

  HttpBackend backend_;
  std::unique_ptr<httplib::Server> http_;
  std::thread thread_;
  std::atomic<bool> done_{false};
  bool stopped_ = false;
  int port_ = 0;
};

}  // namespace cbloss::server

#endif  // CBLOSS_SERVER_HTTP_GATEWAY_H_
