// Copyright 2026 The cbloss Authors.

#include "server/metrics.h"

#include <sys/socket.h>

#include <chrono>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "httplib.h"

namespace cbloss::server {
namespace {

constexpr absl::string_view kServicePrefix = "/cbloss.v1.LossService/";

std::string Number(double v) { return absl::StrFormat("%.9g", v); }

// One LossService call, from its headers to its status.
class MetricsInterceptor final : public grpc::experimental::Interceptor {
 public:
  MetricsInterceptor(ServerMetrics* metrics, std::string method)
      : metrics_(metrics),
        method_(std::move(method)),
        start_(std::chrono::steady_clock::now()) {}

  ~MetricsInterceptor() override {
    // A call that ended without sending a status (cancelled) still counts.
    if (!recorded_) Record(grpc::StatusCode::CANCELLED);
  }

  void Intercept(
      grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::PRE_SEND_STATUS)) {
      Record(methods->GetSendStatus().error_code());
    }
    methods->Proceed();
  }

 private:
  void Record(grpc::StatusCode code) {
    recorded_ = true;
    const std::chrono::duration<double> elapsed =
        std::chrono::steady_clock::now() - start_;
    metrics_->RecordCall(method_, code, elapsed.count());
  }

  ServerMetrics* const metrics_;
  const std::string method_;
  const std::chrono::steady_clock::time_point start_;
  bool recorded_ = false;
};

class MetricsInterceptorFactory final
    : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit MetricsInterceptorFactory(ServerMetrics* metrics)
      : metrics_(metrics) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    const char* method = info->method();
    if (method == nullptr || std::strncmp(method, kServicePrefix.data(),
                                          kServicePrefix.size()) != 0) {
      return nullptr;  // health, reflection: not counted
    }
    return new MetricsInterceptor(metrics_, method + kServicePrefix.size());
  }

 private:
  ServerMetrics* const metrics_;
};

}  // namespace

constexpr std::array<double, 14> ServerMetrics::kBuckets;

void ServerMetrics::RecordCall(absl::string_view method, grpc::StatusCode code,
                               double seconds) {
  const std::string code_name =
      absl::StatusCodeToString(static_cast<absl::StatusCode>(code));
  absl::MutexLock lock(&mu_);
  ++requests_[{std::string(method), code_name}];
  Histogram& h = durations_[std::string(method)];
  for (size_t i = 0; i < kBuckets.size(); ++i) {
    if (seconds <= kBuckets[i]) {
      ++h.buckets[i];
      break;
    }
  }
  ++h.count;
  h.sum += seconds;
}

std::string ServerMetrics::Render(const Gauges& gauges) const {
  std::string out;
  absl::StrAppend(&out,
                  "# HELP cbloss_build_info Build of this cbloss-server.\n"
                  "# TYPE cbloss_build_info gauge\n"
                  "cbloss_build_info{version=\"",
                  version_, "\"} 1\n");
  absl::StrAppend(
      &out,
      "# HELP cbloss_in_flight_calls Calls started and not finished "
      "(health watches and reflection excluded).\n"
      "# TYPE cbloss_in_flight_calls gauge\n"
      "cbloss_in_flight_calls ",
      gauges.in_flight_calls, "\n",
      "# HELP cbloss_datasets Datasets in this replica's store.\n"
      "# TYPE cbloss_datasets gauge\n"
      "cbloss_datasets ",
      gauges.datasets, "\n",
      "# HELP cbloss_runs Runs this replica knows (LOSS.md section 11).\n"
      "# TYPE cbloss_runs gauge\n"
      "cbloss_runs ",
      gauges.runs, "\n",
      "# HELP cbloss_run_updates_unflushed Accumulated run updates "
      "acknowledged and not yet written to the store.\n"
      "# TYPE cbloss_run_updates_unflushed gauge\n"
      "cbloss_run_updates_unflushed ",
      gauges.run_updates_unflushed, "\n",
      "# HELP cbloss_shared_memory_regions Shared-memory regions registered "
      "(API.md section 5.3).\n"
      "# TYPE cbloss_shared_memory_regions gauge\n"
      "cbloss_shared_memory_regions ",
      gauges.shared_memory_regions, "\n",
      "# HELP cbloss_shared_memory_mapped_bytes Bytes the registered "
      "shared-memory regions map.\n"
      "# TYPE cbloss_shared_memory_mapped_bytes gauge\n"
      "cbloss_shared_memory_mapped_bytes ",
      gauges.shared_memory_mapped_bytes, "\n",
      "# HELP cbloss_unix_connections Open connections on the Unix domain "
      "sockets of --listen.\n"
      "# TYPE cbloss_unix_connections gauge\n"
      "cbloss_unix_connections ",
      gauges.unix_connections, "\n",
      "# HELP cbloss_elements_computed_total Logits elements (rows * "
      "classes) of successful ComputeLoss and StreamLoss requests.\n"
      "# TYPE cbloss_elements_computed_total counter\n"
      "cbloss_elements_computed_total ",
      elements_computed_.load(), "\n");
  absl::MutexLock lock(&mu_);
  absl::StrAppend(&out,
                  "# HELP cbloss_requests_total LossService calls by method "
                  "and status code.\n"
                  "# TYPE cbloss_requests_total counter\n");
  for (const auto& [key, n] : requests_) {
    absl::StrAppend(&out, "cbloss_requests_total{method=\"", key.first,
                    "\",code=\"", key.second, "\"} ", n, "\n");
  }
  absl::StrAppend(&out,
                  "# HELP cbloss_request_duration_seconds LossService call "
                  "latency, from its headers to its status.\n"
                  "# TYPE cbloss_request_duration_seconds histogram\n");
  for (const auto& [method, h] : durations_) {
    int64_t cumulative = 0;
    for (size_t i = 0; i < kBuckets.size(); ++i) {
      cumulative += h.buckets[i];
      absl::StrAppend(&out, "cbloss_request_duration_seconds_bucket{method=\"",
                      method, "\",le=\"", Number(kBuckets[i]), "\"} ",
                      cumulative, "\n");
    }
    absl::StrAppend(&out, "cbloss_request_duration_seconds_bucket{method=\"",
                    method, "\",le=\"+Inf\"} ", h.count, "\n",
                    "cbloss_request_duration_seconds_sum{method=\"", method,
                    "\"} ", Number(h.sum), "\n",
                    "cbloss_request_duration_seconds_count{method=\"", method,
                    "\"} ", h.count, "\n");
  }
  return out;
}

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
ServerMetrics::MakeInterceptorFactory() {
  return std::make_unique<MetricsInterceptorFactory>(this);
}

absl::StatusOr<std::unique_ptr<MetricsHttpServer>> MetricsHttpServer::Start(
    const std::string& listen, std::function<std::string()> render) {
  const size_t colon = listen.rfind(':');
  int port = -1;
  if (colon == std::string::npos || colon == 0 ||
      !absl::SimpleAtoi(listen.substr(colon + 1), &port) || port < 0 ||
      port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--metrics_listen=", listen, " is not HOST:PORT (port in [0, 65535])"));
  }
  std::string host = listen.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  std::unique_ptr<MetricsHttpServer> server(new MetricsHttpServer());
  server->http_ = std::make_unique<httplib::Server>();
  httplib::Server& http = *server->http_;
  http.new_task_queue = [] { return new httplib::ThreadPool(2); };
  // httplib's default also sets SO_REUSEPORT, which would let a second
  // server share a busy port silently; SO_REUSEADDR alone still allows a
  // quick restart.
  http.set_socket_options([](socket_t sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
  http.Get("/metrics", [render = std::move(render)](const httplib::Request&,
                                                    httplib::Response& res) {
    res.set_content(render(), "text/plain; version=0.0.4; charset=utf-8");
  });
  if (port == 0) {
    port = http.bind_to_any_port(host);
  } else if (!http.bind_to_port(host, port)) {
    port = -1;
  }
  if (port <= 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on --metrics_listen=", listen));
  }
  server->port_ = port;
  MetricsHttpServer* raw = server.get();
  server->thread_ = std::thread([raw] {
    raw->http_->listen_after_bind();
    raw->done_ = true;
  });
  return server;
}

MetricsHttpServer::~MetricsHttpServer() {
  // stop() before the loop runs would be lost: let it start first (bounded).
  for (int i = 0; i < 5000 && !done_ && !http_->is_running(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  http_->stop();
  if (thread_.joinable()) thread_.join();
}

}  // namespace cbloss::server
