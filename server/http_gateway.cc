// Copyright 2026 The cbloss Authors.

#include "server/http_gateway.h"

#include <sys/socket.h>

#include <chrono>
#include <future>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/util/json_util.h"
#include "httplib.h"
#include "spdlog/spdlog.h"

namespace cbloss::server {

extern const char kDashboardHtml[];  // dashboard_html.cc, from dashboard/

namespace {

constexpr char kJson[] = "application/json";

// What one call leaves for the access log.
struct CallInfo {
  int64_t elements = 0;
  std::string dataset;
  std::string run;
};

// `s` cut to a length a log line may carry (names are at most 128).
std::string Short(const std::string& s) {
  return s.size() <= 128 ? s : s.substr(0, 128) + "...";
}

absl::Status ParseJson(const std::string& body, google::protobuf::Message* m) {
  if (body.empty()) return absl::OkStatus();  // {} : every field unset
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = false;
  const auto s = google::protobuf::util::JsonStringToMessage(body, m, options);
  if (s.ok()) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("the request body is not protobuf JSON of ",
                   m->GetDescriptor()->name(), ": ", s.message().as_string()));
}

// Query parameter `name` as an integer into `*out`, if given.
template <typename Int>
absl::Status QueryInt(const httplib::Request& req, const char* name,
                      bool* present, Int* out) {
  *present = req.has_param(name);
  if (!*present) return absl::OkStatus();
  const std::string value = req.get_param_value(name);
  if (!absl::SimpleAtoi(value, out)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "query parameter ", name, "=", Short(value), " is not an integer"));
  }
  return absl::OkStatus();
}

// A context for the typed handlers: no metadata, no deadline, never
// cancelled (the handlers other than ComputeLoss's ignore it; ComputeLoss
// reads its deadline and cancellation only).
class NullContext {
 public:
  grpc::CallbackServerContext* get() { return &context_; }

 private:
  grpc::CallbackServerContext context_;
};

}  // namespace

int HttpStatusFor(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kOk:
      return 200;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kOutOfRange:
      return 400;
    case absl::StatusCode::kUnauthenticated:
      return 401;
    case absl::StatusCode::kPermissionDenied:
      return 403;
    case absl::StatusCode::kNotFound:
      return 404;
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kAborted:
      return 409;
    case absl::StatusCode::kResourceExhausted:
      return 429;
    case absl::StatusCode::kCancelled:
      return 499;
    case absl::StatusCode::kUnimplemented:
      return 501;
    case absl::StatusCode::kUnavailable:
      return 503;
    case absl::StatusCode::kDeadlineExceeded:
      return 504;
    default:
      return 500;
  }
}

std::string ErrorBody(const absl::Status& status) {
  return absl::StrCat("{\"code\":", static_cast<int>(status.code()),
                      ",\"status\":\"", absl::StatusCodeToString(status.code()),
                      "\",\"message\":\"", JsonEscape(status.message()),
                      "\"}\n");
}

namespace {

// One HTTP call of `method`: admit, parse the body into `request` (unless
// `body` is false), let `prepare` fill in the path's and query's fields,
// run `handler` and wait for it, answer JSON, count, log.
template <typename Request, typename Response, typename Prepare,
          typename Handler>
void Serve(const HttpBackend& backend, const httplib::Request& req,
           httplib::Response& res, const char* method, bool body,
           Prepare&& prepare, Handler&& handler) {
  const auto start = std::chrono::steady_clock::now();
  if (backend.in_flight != nullptr) backend.in_flight->Started();
  Request request;
  Response response;
  CallInfo info;
  absl::Status status = [&]() -> absl::Status {
    const TokenAuthorizer* auth = backend.authorizer;
    const bool check = auth != nullptr && auth->enabled();
    std::string authorization;
    const bool has_authorization = req.has_header("Authorization");
    if (has_authorization)
      authorization = req.get_header_value("Authorization");
    const std::string* header = has_authorization ? &authorization : nullptr;
    if (check) {
      if (absl::Status s = auth->Check(AccessFor(method), header); !s.ok()) {
        return s;
      }
    }
    if (body) {
      if (absl::Status s = ParseJson(req.body, &request); !s.ok()) return s;
    }
    if (absl::Status s = prepare(&request, &info); !s.ok()) return s;
    std::promise<absl::Status> finished;
    NullContext context;
    handler(context.get(), &request, &response, header, &finished);
    return finished.get_future().get();
  }();
  if (status.ok()) {
    std::string json;
    google::protobuf::util::JsonPrintOptions options;
    const auto printed =
        google::protobuf::util::MessageToJsonString(response, &json, options);
    if (printed.ok()) {
      res.status = 200;
      json += '\n';  // a line, as curl users expect
      res.set_content(json, kJson);
    } else {
      status = absl::InternalError(
          absl::StrCat("cannot print the response as JSON: ",
                       printed.message().as_string()));
    }
  }
  if (!status.ok()) {
    res.status = HttpStatusFor(status.code());
    res.set_content(ErrorBody(status), kJson);
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
  if (backend.metrics != nullptr) {
    backend.metrics->RecordCall(
        method, static_cast<grpc::StatusCode>(status.code()), seconds);
  }
  if (backend.access_log != nullptr) {
    AccessRecord record;
    record.protocol = "http";
    record.method = method;
    // As gRPC writes peers: ipv4:1.2.3.4:5 or ipv6:[::1]:5.
    const bool v6 = req.remote_addr.find(':') != std::string::npos;
    const std::string peer =
        v6 ? absl::StrCat("ipv6:[", req.remote_addr, "]:", req.remote_port)
           : absl::StrCat("ipv4:", req.remote_addr, ":", req.remote_port);
    record.peer = peer;
    record.code = static_cast<int>(status.code());
    record.http_status = res.status;
    record.duration_ms = seconds * 1e3;
    record.elements = info.elements;
    const std::string dataset = Short(info.dataset), run = Short(info.run);
    record.dataset = dataset;
    record.run = run;
    backend.access_log->Write(record);
  }
  if (backend.in_flight != nullptr) backend.in_flight->Finished();
}

// A handler that waits for nothing more than the typed handler.
template <typename Request, typename Response>
using TypedHandler = void (LossServiceImpl::*)(grpc::CallbackServerContext*,
                                               const Request*, Response*, Done);

template <typename Request, typename Response>
auto Call(LossServiceImpl* service, TypedHandler<Request, Response> handler) {
  return [service, handler](grpc::CallbackServerContext* context,
                            const Request* request, Response* response,
                            const std::string* /*authorization*/,
                            std::promise<absl::Status>* finished) {
    (service->*handler)(context, request, response,
                        Done([finished](absl::Status s) {
                          finished->set_value(std::move(s));
                        }));
  };
}

std::string NameIn(const httplib::Request& req) {
  return req.matches.size() > 1 ? req.matches[1].str() : std::string();
}

}  // namespace

absl::StatusOr<std::unique_ptr<HttpGateway>> HttpGateway::Start(
    const HttpGatewayOptions& options, HttpBackend backend) {
  const std::string& listen = options.listen;
  const size_t colon = listen.rfind(':');
  int port = -1;
  if (colon == std::string::npos || colon == 0 ||
      !absl::SimpleAtoi(listen.substr(colon + 1), &port) || port < 0 ||
      port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--http_listen=", listen, " is not HOST:PORT (port in [0, 65535])"));
  }
  std::string host = listen.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  std::unique_ptr<HttpGateway> gateway(new HttpGateway());
  gateway->backend_ = std::move(backend);
  if (options.tls.cert.empty()) {
    gateway->http_ = std::make_unique<httplib::Server>();
  } else {
    auto ssl = std::make_unique<httplib::SSLServer>(
        options.tls.cert.c_str(), options.tls.key.c_str(),
        options.tls.client_ca.empty() ? nullptr
                                      : options.tls.client_ca.c_str());
    if (!ssl->is_valid()) {
      return absl::InvalidArgumentError(
          "--http_listen: the TLS certificate/key (or client CA) are not "
          "valid PEM");
    }
    gateway->http_ = std::move(ssl);
  }
  httplib::Server& http = *gateway->http_;
  const int threads = options.threads;
  http.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  http.set_socket_options([](socket_t sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
  http.set_payload_max_length(options.max_body_bytes);
  http.set_keep_alive_timeout(2);
  http.set_keep_alive_max_count(1000);
  http.set_tcp_nodelay(true);  // no Nagle delay on small answers
  const size_t limit = options.max_body_bytes;
  http.set_error_handler([limit](const httplib::Request& req,
                                 httplib::Response& res) {
    if (!res.body.empty()) return;
    absl::Status s;
    if (res.status == 413) {
      s = absl::ResourceExhaustedError(
          absl::StrCat("the request body is larger than ", limit,
                       " bytes (--max_message_mb)"));
    } else if (res.status == 404) {
      s = absl::NotFoundError(
          absl::StrCat("no route for ", req.method, " ", req.path));
    } else {
      s = absl::InvalidArgumentError(absl::StrCat("HTTP status ", res.status));
    }
    res.set_content(ErrorBody(s), kJson);
  });
  gateway->AddRoutes();
  if (port == 0) {
    port = http.bind_to_any_port(host);
  } else if (!http.bind_to_port(host, port)) {
    port = -1;
  }
  if (port <= 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on --http_listen=", listen));
  }
  gateway->port_ = port;
  HttpGateway* raw = gateway.get();
  gateway->thread_ = std::thread([raw] {
    raw->http_->listen_after_bind();
    raw->done_ = true;
  });
  return gateway;
}

void HttpGateway::AddRoutes() {
  httplib::Server& http = *http_;
  const HttpBackend* b = &backend_;
  LossServiceImpl* s = backend_.service;
  using Info = CallInfo;

  http.Get("/healthz", [](const httplib::Request&, httplib::Response& res) {
    res.set_content("{\"status\":\"live\"}\n", kJson);
  });
  http.Get("/readyz", [b](const httplib::Request&, httplib::Response& res) {
    const bool serving = !b->serving || b->serving();
    res.status = serving ? 200 : 503;
    res.set_content(serving ? "{\"status\":\"SERVING\"}\n"
                            : "{\"status\":\"NOT_SERVING\"}\n",
                    kJson);
  });
  http.Get("/metrics", [b](const httplib::Request&, httplib::Response& res) {
    res.set_content(b->render_metrics ? b->render_metrics() : "",
                    "text/plain; version=0.0.4; charset=utf-8");
  });
  http.Get("/", [](const httplib::Request&, httplib::Response& res) {
    res.set_content(kDashboardHtml, "text/html; charset=utf-8");
  });

  // Datasets.
  http.Get("/v1/datasets", [b, s](const httplib::Request& req,
                                  httplib::Response& res) {
    Serve<v1::ListDatasetsRequest, v1::ListDatasetsResponse>(
        *b, req, res, "ListDatasets", false,
        [&req](v1::ListDatasetsRequest* r, Info*) {
          bool present = false;
          int32_t size = 0;
          if (absl::Status st = QueryInt(req, "page_size", &present, &size);
              !st.ok()) {
            return st;
          }
          r->set_page_size(size);
          r->set_page_token(req.get_param_value("page_token"));
          return absl::OkStatus();
        },
        Call(s, &LossServiceImpl::HandleListDatasets));
  });
  http.Post(R"(/v1/datasets/([^/]+):addClassCounts)",
            [b, s](const httplib::Request& req, httplib::Response& res) {
              Serve<v1::AddClassCountsRequest, v1::Dataset>(
                  *b, req, res, "AddClassCounts", true,
                  [&req](v1::AddClassCountsRequest* r, Info* info) {
                    r->set_name(NameIn(req));
                    info->dataset = r->name();
                    return absl::OkStatus();
                  },
                  Call(s, &LossServiceImpl::HandleAddClassCounts));
            });
  http.Get(R"(/v1/datasets/([^/:]+))",
           [b, s](const httplib::Request& req, httplib::Response& res) {
             Serve<v1::GetDatasetRequest, v1::Dataset>(
                 *b, req, res, "GetDataset", false,
                 [&req](v1::GetDatasetRequest* r, Info* info) {
                   r->set_name(NameIn(req));
                   info->dataset = r->name();
                   return absl::OkStatus();
                 },
                 Call(s, &LossServiceImpl::HandleGetDataset));
           });
  http.Put(R"(/v1/datasets/([^/:]+))", [b, s](const httplib::Request& req,
                                              httplib::Response& res) {
    Serve<v1::PutDatasetRequest, v1::Dataset>(
        *b, req, res, "PutDataset", false,
        [&req](v1::PutDatasetRequest* r, Info* info) {
          if (absl::Status st = ParseJson(req.body, r->mutable_dataset());
              !st.ok()) {
            return st;
          }
          const std::string name = NameIn(req);
          info->dataset = name;
          if (r->dataset().name().empty()) {
            r->mutable_dataset()->set_name(name);
          } else if (r->dataset().name() != name) {
            return absl::InvalidArgumentError(absl::StrCat(
                "the body names dataset \"", Short(r->dataset().name()),
                "\" but the path names \"", Short(name), "\""));
          }
          bool present = false;
          uint64_t version = 0;
          if (absl::Status st =
                  QueryInt(req, "expected_version", &present, &version);
              !st.ok()) {
            return st;
          }
          if (present) r->set_expected_version(version);
          return absl::OkStatus();
        },
        Call(s, &LossServiceImpl::HandlePutDataset));
  });
  http.Delete(R"(/v1/datasets/([^/:]+))",
              [b, s](const httplib::Request& req, httplib::Response& res) {
                Serve<v1::DeleteDatasetRequest, v1::DeleteDatasetResponse>(
                    *b, req, res, "DeleteDataset", false,
                    [&req](v1::DeleteDatasetRequest* r, Info* info) {
                      r->set_name(NameIn(req));
                      info->dataset = r->name();
                      bool present = false;
                      uint64_t version = 0;
                      if (absl::Status st = QueryInt(req, "expected_version",
                                                     &present, &version);
                          !st.ok()) {
                        return st;
                      }
                      if (present) r->set_expected_version(version);
                      return absl::OkStatus();
                    },
                    Call(s, &LossServiceImpl::HandleDeleteDataset));
              });

  // Weights and losses.
  http.Post("/v1/weights",
            [b, s](const httplib::Request& req, httplib::Response& res) {
              Serve<v1::GetClassWeightsRequest, v1::ClassWeights>(
                  *b, req, res, "GetClassWeights", true,
                  [](v1::GetClassWeightsRequest* r, Info* info) {
                    info->dataset = r->dataset();
                    return absl::OkStatus();
                  },
                  Call(s, &LossServiceImpl::HandleGetClassWeights));
            });
  http.Post(
      "/v1/loss", [b, s](const httplib::Request& req, httplib::Response& res) {
        Serve<v1::ComputeLossRequest, v1::ComputeLossResponse>(
            *b, req, res, "ComputeLoss", true,
            [](v1::ComputeLossRequest* r, Info* info) {
              info->dataset = r->dataset();
              info->run = r->run();
              int64_t elements = r->logits().shape_size() > 0 ? 1 : 0;
              for (const int64_t d : r->logits().shape()) {
                elements =
                    d > 0 && elements <= (int64_t{1} << 40) ? elements * d : 0;
              }
              info->elements = elements;
              return absl::OkStatus();
            },
            [b, s](grpc::CallbackServerContext* context,
                   const v1::ComputeLossRequest* request,
                   v1::ComputeLossResponse* response,
                   const std::string* authorization,
                   std::promise<absl::Status>* finished) {
              // Changes a run: a token whenever tokens are configured
              // (server/auth.h), as LossServiceImpl checks it for gRPC.
              const TokenAuthorizer* auth = b->authorizer;
              if (request->accumulate() && auth != nullptr && auth->enabled()) {
                absl::Status st = auth->Check(
                    TokenAuthorizer::Access::kAccumulate, authorization);
                if (!st.ok()) return finished->set_value(st);
              }
              s->HandleComputeLoss(context, request, response,
                                   Done([finished](absl::Status st) {
                                     finished->set_value(std::move(st));
                                   }),
                                   /*detached=*/nullptr, /*admitted=*/true);
            });
      });

  // Runs.
  http.Get(
      "/v1/runs", [b, s](const httplib::Request& req, httplib::Response& res) {
        Serve<v1::ListRunsRequest, v1::ListRunsResponse>(
            *b, req, res, "ListRuns", false,
            [&req](v1::ListRunsRequest* r, Info* info) {
              bool present = false;
              int32_t size = 0;
              if (absl::Status st = QueryInt(req, "page_size", &present, &size);
                  !st.ok()) {
                return st;
              }
              r->set_page_size(size);
              r->set_page_token(req.get_param_value("page_token"));
              r->set_dataset(req.get_param_value("dataset"));
              info->dataset = r->dataset();
              return absl::OkStatus();
            },
            Call(s, &LossServiceImpl::HandleListRuns));
      });
  http.Post("/v1/runs",
            [b, s](const httplib::Request& req, httplib::Response& res) {
              Serve<v1::CreateRunRequest, v1::Run>(
                  *b, req, res, "CreateRun", false,
                  [&req](v1::CreateRunRequest* r, Info* info) {
                    if (absl::Status st = ParseJson(req.body, r->mutable_run());
                        !st.ok()) {
                      return st;
                    }
                    info->run = r->run().name();
                    info->dataset = r->run().dataset();
                    return absl::OkStatus();
                  },
                  Call(s, &LossServiceImpl::HandleCreateRun));
            });
  http.Get(R"(/v1/runs/([^/:]+))",
           [b, s](const httplib::Request& req, httplib::Response& res) {
             Serve<v1::GetRunRequest, v1::Run>(
                 *b, req, res, "GetRun", false,
                 [&req](v1::GetRunRequest* r, Info* info) {
                   r->set_name(NameIn(req));
                   info->run = r->name();
                   return absl::OkStatus();
                 },
                 Call(s, &LossServiceImpl::HandleGetRun));
           });
  http.Delete(R"(/v1/runs/([^/:]+))",
              [b, s](const httplib::Request& req, httplib::Response& res) {
                Serve<v1::DeleteRunRequest, v1::DeleteRunResponse>(
                    *b, req, res, "DeleteRun", false,
                    [&req](v1::DeleteRunRequest* r, Info* info) {
                      r->set_name(NameIn(req));
                      info->run = r->name();
                      bool present = false;
                      uint64_t version = 0;
                      if (absl::Status st = QueryInt(req, "expected_version",
                                                     &present, &version);
                          !st.ok()) {
                        return st;
                      }
                      if (present) r->set_expected_version(version);
                      return absl::OkStatus();
                    },
                    Call(s, &LossServiceImpl::HandleDeleteRun));
              });
}

void HttpGateway::Stop() {
  if (stopped_) return;
  stopped_ = true;
  // stop() before the loop runs would be lost: let it start first (bounded).
  for (int i = 0; i < 5000 && !done_ && !http_->is_running(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  http_->stop();
  if (thread_.joinable()) thread_.join();
}

HttpGateway::~HttpGateway() { Stop(); }

}  // namespace cbloss::server
