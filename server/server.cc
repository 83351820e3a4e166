// Copyright 2026 The cbloss Authors.

#include "server/server.h"

#include <cctype>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "core/status_macros.h"
#include "google/protobuf/util/json_util.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "server/grpc_tuning.h"
#include "server/store/postgres_dataset_store.h"
#include "server/store/sqlite_dataset_store.h"
#include "spdlog/spdlog.h"

namespace cbloss::server {
namespace {

constexpr char kVersion[] = "0.1.0";
constexpr char kServiceName[] = "cbloss.v1.LossService";

// A start-up failure that is not the flags' fault (exit 1); `message` is
// what is logged.
absl::Status StartError(absl::string_view message) {
  return absl::UnavailableError(message);
}

// A flag's value is wrong (exit 2).
absl::Status FlagError(absl::string_view message) {
  return absl::InvalidArgumentError(message);
}

absl::Status LoadDatasetsFile(const std::string& path,
                              DatasetRegistry* registry) {
  std::ifstream in(path);
  if (!in.good()) {
    return absl::NotFoundError(
        absl::StrCat("cannot read --datasets_file ", path));
  }
  std::stringstream text;
  text << in.rdbuf();
  v1::ListDatasetsResponse file;
  const google::protobuf::util::Status parsed =
      google::protobuf::util::JsonStringToMessage(text.str(), &file);
  if (!parsed.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--datasets_file ", path,
                     " is not protobuf JSON of ListDatasetsResponse: ",
                     parsed.message().as_string()));
  }
  int put = 0, kept = 0;
  for (int i = 0; i < file.datasets_size(); ++i) {
    const v1::Dataset& d = file.datasets(i);
    absl::StatusOr<std::shared_ptr<const v1::Dataset>> existing =
        registry->Get(d.name());
    if (existing.ok() && SameDatasetContent(**existing, d)) {
      ++kept;
      continue;
    }
    absl::StatusOr<v1::Dataset> stored = registry->Put(d, absl::nullopt);
    if (!stored.ok()) {
      return absl::Status(stored.status().code(),
                          absl::StrCat("--datasets_file ", path, ": datasets[",
                                       i, "]: ", stored.status().message()));
    }
    ++put;
  }
  spdlog::info("datasets file {}: {} put, {} already up to date", path, put,
               kept);
  return absl::OkStatus();
}

absl::Status WritePortFile(const std::string& path, int port) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << port << "\n";
    if (!out.good()) {
      return absl::UnavailableError(absl::StrCat("cannot write ", tmp));
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot rename ", tmp, " to ", path));
  }
  return absl::OkStatus();
}

// Opens the store that --store / --store_file select (SQLite in
// `*location` if neither is given). Sets `*location` to what the logs may
// show: the data_dir or the DSN without its password.
absl::StatusOr<std::unique_ptr<DatasetStore>> OpenStoreFromFlags(
    std::string store, const std::string& store_file, std::string* location) {
  if (!store_file.empty()) {
    if (!store.empty()) {
      return absl::InvalidArgumentError(
          "give --store or --store_file, not both");
    }
    std::ifstream in(store_file);
    if (!in.good()) {
      return absl::InvalidArgumentError(
          absl::StrCat("cannot read --store_file ", store_file));
    }
    std::stringstream text;
    text << in.rdbuf();
    store = text.str();
    while (!store.empty() &&
           std::isspace(static_cast<unsigned char>(store.back()))) {
      store.pop_back();
    }
    if (store.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--store_file ", store_file, " is empty"));
    }
  }
  if (store.empty()) return OpenSqliteDatasetStore(*location);
  if (!IsPostgresDsn(store)) {
    return absl::InvalidArgumentError(
        "--store must be empty (SQLite under --data_dir) or a postgresql:// "
        "or postgres:// URI");
  }
  *location = RedactDsn(store);
  return OpenPostgresDatasetStore(store);
}

// The bearer tokens in their files (server/auth.h); empty if not required.
struct Tokens {
  std::string admin;
  std::string compute;
};

absl::StatusOr<Tokens> ReadTokens(const TokenFiles& files) {
  Tokens tokens;
  const struct {
    const char* flag;
    const std::string& file;
    std::string* token;
  } sources[] = {{"--admin_token_file", files.admin, &tokens.admin},
                 {"--compute_token_file", files.compute, &tokens.compute}};
  for (const auto& source : sources) {
    if (source.file.empty()) continue;
    absl::StatusOr<std::string> token = ReadTokenFile(source.file);
    if (!token.ok()) {
      return FlagError(
          absl::StrCat(source.flag, ": ", token.status().ToString()));
    }
    *source.token = *std::move(token);
  }
  if (!tokens.admin.empty() &&
      ConstantTimeEquals(tokens.admin, tokens.compute)) {
    return FlagError(
        "--admin_token_file and --compute_token_file hold the same token");
  }
  return tokens;
}

// One access-log line per LossService call (docs/spec/API.md section 5.5),
// written when its status is sent: method, peer, code, duration, and the
// dataset, run and logits elements its request names. Only with
// --access_log: the request's bytes are decoded once more here (a
// StreamLoss stream is logged once, without them).
class AccessLogInterceptor final : public grpc::experimental::Interceptor {
 public:
  AccessLogInterceptor(AccessLog* log, std::string method, std::string peer)
      : log_(log),
        method_(std::move(method)),
        peer_(std::move(peer)),
        start_(std::chrono::steady_clock::now()) {}

  void Intercept(
      grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::POST_RECV_MESSAGE) &&
        method_ != "StreamLoss" && methods->GetRecvMessage() != nullptr) {
      Note(*static_cast<const grpc::ByteBuffer*>(methods->GetRecvMessage()));
    }
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::PRE_SEND_STATUS)) {
      AccessRecord record;
      record.protocol = "grpc";
      record.method = method_;
      record.peer = peer_;
      record.code = static_cast<int>(methods->GetSendStatus().error_code());
      record.duration_ms = std::chrono::duration<double, std::milli>(
                               std::chrono::steady_clock::now() - start_)
                               .count();
      record.elements = elements_;
      const auto cut = [](const std::string& s) {
        return s.size() <= 128 ? s : s.substr(0, 128) + "...";
      };
      const std::string dataset = cut(dataset_), run = cut(run_);
      record.dataset = dataset;
      record.run = run;
      log_->Write(record);
    }
    methods->Proceed();
  }

 private:
  // The dataset, run and elements the request names.
  void Note(const grpc::ByteBuffer& buffer) {
    std::vector<grpc::Slice> slices;
    if (!buffer.Dump(&slices).ok()) return;
    std::string bytes;
    for (const grpc::Slice& slice : slices) {
      bytes.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
    }
    if (method_ == "ComputeLoss") {
      v1::ComputeLossRequest r;
      if (!r.ParseFromString(bytes)) return;
      dataset_ = r.dataset();
      run_ = r.run();
      int64_t elements = r.logits().shape_size() > 0 ? 1 : 0;
      for (const int64_t d : r.logits().shape()) {
        elements = d > 0 && elements <= (int64_t{1} << 40) ? elements * d : 0;
      }
      elements_ = elements;
    } else if (method_ == "PutDataset") {
      v1::PutDatasetRequest r;
      if (r.ParseFromString(bytes)) dataset_ = r.dataset().name();
    } else if (method_ == "GetClassWeights") {
      v1::GetClassWeightsRequest r;
      if (r.ParseFromString(bytes)) dataset_ = r.dataset();
    } else if (method_ == "CreateRun") {
      v1::CreateRunRequest r;
      if (r.ParseFromString(bytes)) {
        run_ = r.run().name();
        dataset_ = r.run().dataset();
      }
    } else if (method_ == "ListRuns") {
      v1::ListRunsRequest r;
      if (r.ParseFromString(bytes)) dataset_ = r.dataset();
    } else if (method_ == "GetRun" || method_ == "DeleteRun") {
      v1::GetRunRequest r;  // `name` is field 1 of both
      if (r.ParseFromString(bytes)) run_ = r.name();
    } else if (method_ != "ListDatasets" &&
               !absl::StrContains(method_, "SharedMemory")) {
      v1::GetDatasetRequest r;  // Get/Delete/AddClassCounts: `name` is field 1
      if (r.ParseFromString(bytes)) dataset_ = r.name();
    }
  }

  AccessLog* const log_;
  const std::string method_;
  const std::string peer_;
  const std::chrono::steady_clock::time_point start_;
  std::string dataset_;
  std::string run_;
  int64_t elements_ = 0;
};

class AccessLogInterceptorFactory final
    : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit AccessLogInterceptorFactory(AccessLog* log) : log_(log) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    constexpr absl::string_view kPrefix = "/cbloss.v1.LossService/";
    const absl::string_view method = info->method();
    if (!absl::StartsWith(method, kPrefix)) return nullptr;
    return new AccessLogInterceptor(log_,
                                    std::string(method.substr(kPrefix.size())),
                                    info->server_context()->peer());
  }

 private:
  AccessLog* const log_;
};

}  // namespace

int ExitCode(const absl::Status& start_error) {
  if (start_error.ok()) return 0;
  return start_error.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
}

Server::Server(const ServerConfig& config)
    : config_(config), store_location_(config.data_dir) {}

Server::~Server() {
  // No connection is handed to a gRPC server that is stopping; the socket
  // files go. (Calls may still look peers up until gRPC has stopped.)
  if (unix_ != nullptr) unix_->Stop();
  if (grpc_server_ != nullptr && !stopped_) {
    grpc_server_->Shutdown(std::chrono::system_clock::now());
    grpc_server_->Wait();
  }
  http_.reset();
  grpc_server_.reset();
  unix_.reset();
  metrics_http_.reset();
  if (registry_ != nullptr) registry_->FollowRuns(nullptr);
  runs_.reset();      // writes what runs have accumulated
  registry_.reset();  // closes the store
}

absl::StatusOr<std::unique_ptr<Server>> Server::Start(
    const ServerConfig& config) {
  if (config.compute_threads < 1 || config.max_message_mb < 1 ||
      config.max_message_mb > 2047) {
    return FlagError(
        "--compute_threads must be >= 1 and --max_message_mb in [1, 2047]");
  }
  std::unique_ptr<Server> server(new Server(config));
  if (!config.access_log.empty()) {
    absl::StatusOr<std::unique_ptr<AccessLog>> log =
        AccessLog::Open(config.access_log, config.log_format);
    if (!log.ok()) return FlagError(log.status().message());
    server->access_log_ = *std::move(log);
  }
  CBLOSS_RETURN_IF_ERROR(server->OpenDatasets());
  CBLOSS_RETURN_IF_ERROR(server->MakePools());
  CBLOSS_RETURN_IF_ERROR(server->OpenSharedMemory());
  // Security (docs/DEPLOY.md): transport from the TLS flags, tokens from
  // their files. Token values are never logged.
  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> credentials =
      MakeServerCredentials(config.tls);
  if (!credentials.ok()) return FlagError(credentials.status().ToString());
  absl::StatusOr<Tokens> tokens = ReadTokens(config.tokens);
  if (!tokens.ok()) return tokens.status();
  server->authorizer_ =
      std::make_unique<TokenAuthorizer>(tokens->admin, tokens->compute);
  if (server->authorizer_->enabled() && config.tls.cert.empty()) {
    spdlog::warn(
        "bearer tokens are required but TLS is off: tokens cross the network "
        "in the clear (give --tls_cert and --tls_key)");
  }
  server->service_options_.authorizer = server->authorizer_.get();
  server->service_ = std::make_unique<LossServiceImpl>(
      server->registry_.get(), server->runs_.get(), server->compute_pool_.get(),
      server->io_pool_.get(), server->service_options_);
  CBLOSS_RETURN_IF_ERROR(server->Listen(*credentials));
  CBLOSS_RETURN_IF_ERROR(server->ServeMetrics());
  CBLOSS_RETURN_IF_ERROR(server->ServeHttp());
  CBLOSS_RETURN_IF_ERROR(server->Announce());
  return server;
}

// The store, the registry over it, and --datasets_file.
absl::Status Server::OpenDatasets() {
  absl::StatusOr<std::unique_ptr<DatasetStore>> store =
      OpenStoreFromFlags(config_.store, config_.store_file, &store_location_);
  if (!store.ok()) {
    const std::string message =
        absl::StrCat("cannot open the dataset store ", store_location_, ": ",
                     store.status().ToString());
    return store.status().code() == absl::StatusCode::kInvalidArgument
               ? FlagError(message)
               : StartError(message);
  }
  absl::StatusOr<std::unique_ptr<DatasetRegistry>> registry =
      DatasetRegistry::Create(*std::move(store));
  if (!registry.ok()) {
    return StartError(absl::StrCat("cannot load datasets from ",
                                   store_location_, ": ",
                                   registry.status().ToString()));
  }
  registry_ = *std::move(registry);
  if (config_.run_flush_interval_ms < 1 ||
      config_.run_flush_interval_ms > 500) {
    return FlagError("--run_flush_interval_ms must be in [1, 500]");
  }
  RunRegistry::Options run_options;
  run_options.flush_interval =
      std::chrono::milliseconds(config_.run_flush_interval_ms);
  absl::StatusOr<std::unique_ptr<RunRegistry>> runs =
      RunRegistry::Create(registry_->store(), run_options);
  if (!runs.ok()) {
    return StartError(absl::StrCat("cannot load runs from ", store_location_,
                                   ": ", runs.status().ToString()));
  }
  runs_ = *std::move(runs);
  registry_->FollowRuns(runs_.get());
  if (registry_->store()->IsShared()) {
    // A run changed by another replica between the load and FollowRuns was
    // notified to nobody: load again now that notifications arrive.
    if (absl::Status s = runs_->OnResync(); !s.ok()) {
      return StartError(absl::StrCat("cannot load runs from ", store_location_,
                                     ": ", s.ToString()));
    }
  }
  if (!config_.datasets_file.empty()) {
    if (absl::Status s =
            LoadDatasetsFile(config_.datasets_file, registry_.get());
        !s.ok()) {
      return StartError(s.ToString());
    }
  }
  return absl::OkStatus();
}

// The pools, the metrics, and the service's options but its authorizer.
absl::Status Server::MakePools() {
  compute_pool_ = std::make_unique<ThreadPool>(config_.compute_threads);
  io_pool_ = std::make_unique<ThreadPool>(2);
  LossServiceOptions& options = service_options_;
  options.max_request_elements = config_.max_request_elements;
  options.max_concurrent_computations = config_.max_concurrent_computations;
  if (options.max_request_elements < 1 ||
      options.max_concurrent_computations < 1) {
    return FlagError(
        "--max_request_elements and --max_concurrent_computations must be "
        ">= 1");
  }
  metrics_ = std::make_unique<ServerMetrics>(kVersion);
  options.elements_computed = metrics_->elements_computed();
  return absl::OkStatus();
}

// The shared-memory registry (off unless --allow_shared_memory) and how the
// service learns a caller's memory rights: from the Unix socket listener.
absl::Status Server::OpenSharedMemory() {
  const std::string& prefix = config_.shared_memory_prefix;
  if (prefix.empty() || prefix[0] != '/' ||
      prefix.find('/', 1) != std::string::npos || prefix.size() > 255) {
    return FlagError(absl::StrCat(
        "--shared_memory_prefix=", prefix,
        " must start with '/', hold no other '/' and have at most 255 "
        "characters"));
  }
  if (config_.max_shared_memory_regions < 1 ||
      config_.max_shared_memory_mb < 1 ||
      config_.max_shared_memory_mb > (int64_t{1} << 30)) {
    return FlagError(
        "--max_shared_memory_regions must be >= 1 and --max_shared_memory_mb "
        "in [1, 2^30]");
  }
  SharedMemoryOptions options;
  options.allow = config_.allow_shared_memory;
  options.prefix = prefix;
  options.max_regions = config_.max_shared_memory_regions;
  options.max_bytes = static_cast<uint64_t>(config_.max_shared_memory_mb) << 20;
  shared_memory_ = std::make_unique<SharedMemoryRegistry>(options);
  service_options_.shared_memory = shared_memory_.get();
  // unix_ is set in Listen, before any call can arrive.
  service_options_.identify_peer = [this](absl::string_view peer) {
    return unix_ == nullptr ? PeerIdentity() : unix_->Identify(peer);
  };
  return absl::OkStatus();
}

absl::Status Server::Listen(
    const std::shared_ptr<grpc::ServerCredentials>& credentials) {
  const int64_t max_age_ms = config_.max_connection_age_ms;
  const int64_t max_age_grace_ms = config_.max_connection_age_grace_ms;
  if (max_age_ms < 0 || max_age_ms > INT32_MAX || max_age_grace_ms < 0 ||
      max_age_grace_ms > INT32_MAX) {
    return FlagError(
        "--max_connection_age_ms and --max_connection_age_grace_ms must be in "
        "[0, 2^31)");
  }
  // API.md section 5.3: --listen repeated and comma-separated; unix:
  // addresses are accepted here, the others by gRPC.
  std::vector<std::string> unix_paths;
  for (const std::string& value : config_.listen) {
    for (absl::string_view address : absl::StrSplit(value, ',')) {
      if (address.empty()) continue;
      if (absl::StartsWith(address, "unix:")) {
        absl::StatusOr<std::string> path = UnixSocketPath(address);
        if (!path.ok()) return FlagError(path.status().message());
        unix_paths.push_back(*std::move(path));
        unix_addresses_.emplace_back(address);
      } else {
        tcp_addresses_.emplace_back(address);
      }
    }
  }
  if (tcp_addresses_.empty() && unix_paths.empty()) {
    return FlagError("--listen names no address");
  }
  if (!unix_paths.empty()) {
    absl::StatusOr<mode_t> mode = ParseSocketMode(config_.unix_socket_mode);
    if (!mode.ok()) return FlagError(mode.status().message());
    absl::StatusOr<std::unique_ptr<UnixListener>> listener =
        UnixListener::Bind(unix_paths, *mode);
    if (!listener.ok()) {
      return listener.status().code() == absl::StatusCode::kInvalidArgument
                 ? FlagError(listener.status().message())
                 : StartError(listener.status().message());
    }
    unix_ = *std::move(listener);
  } else if (config_.allow_shared_memory) {
    spdlog::warn(
        "--allow_shared_memory without a unix: --listen address: no caller "
        "can use shared memory");
  }
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  ApplyServerTuning(&builder);  // server/grpc_tuning.h
  // The builder keeps pointers into tcp_ports_: it is not resized after.
  tcp_ports_.assign(tcp_addresses_.size(), 0);
  for (size_t i = 0; i < tcp_addresses_.size(); ++i) {
    builder.AddListeningPort(tcp_addresses_[i], credentials, &tcp_ports_[i]);
  }
  builder.SetMaxReceiveMessageSize(config_.max_message_mb * 1024 * 1024);
  builder.SetMaxSendMessageSize(config_.max_message_mb * 1024 * 1024);
  if (max_age_ms > 0) {
    // Clients reconnect (and re-resolve) after a GOAWAY, so new replicas get
    // their share of long-lived channels after a scale-up.
    builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_MS,
                               static_cast<int>(max_age_ms));
    builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_GRACE_MS,
                               static_cast<int>(max_age_grace_ms));
  }
  builder.RegisterService(service_.get());
  std::vector<
      std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>>
      interceptors;
  interceptors.push_back(in_flight_.MakeInterceptorFactory());
  interceptors.push_back(metrics_->MakeInterceptorFactory());
  if (access_log_ != nullptr) {
    interceptors.push_back(
        std::make_unique<AccessLogInterceptorFactory>(access_log_.get()));
  }
  builder.experimental().SetInterceptorCreators(std::move(interceptors));
  grpc_server_ = builder.BuildAndStart();
  // gRPC binds the ports in order and stops at the first that fails.
  std::string failed;
  for (size_t i = 0; i < tcp_addresses_.size() && failed.empty(); ++i) {
    if (tcp_ports_[i] == 0) failed = tcp_addresses_[i];
  }
  if (grpc_server_ == nullptr || !failed.empty()) {
    return StartError(absl::StrCat(
        "cannot listen on ",
        failed.empty() ? absl::StrJoin(tcp_addresses_, ", ") : failed,
        config_.tls.cert.empty()
            ? ""
            : " (or the TLS certificate/key are not valid PEM)"));
  }
  port_ = tcp_ports_.empty() ? 0 : tcp_ports_[0];
  // API.md section 1: NOT_SERVING while starting (gRPC's default health
  // service would report "" SERVING at once), until Announce.
  grpc::HealthCheckServiceInterface* health =
      grpc_server_->GetHealthCheckService();
  health->SetServingStatus(kServiceName, false);
  health->SetServingStatus(false);
  if (unix_ != nullptr) {
    // Unix sockets are plaintext (local, protected by their mode); tokens
    // still apply. A closed connection's regions are released.
    absl::Status s = unix_->Serve(grpc_server_.get(), [this](uint64_t id) {
      shared_memory_->ReleaseConnection(id);
    });
    if (!s.ok()) return StartError(s.message());
  }
  return absl::OkStatus();
}

// The Prometheus endpoint, if --metrics_listen asks for one.
absl::Status Server::ServeMetrics() {
  if (config_.metrics_listen.empty()) return absl::OkStatus();
  absl::StatusOr<std::unique_ptr<MetricsHttpServer>> started =
      MetricsHttpServer::Start(config_.metrics_listen,
                               [this] { return RenderMetrics(); });
  if (!started.ok()) return StartError(started.status().ToString());
  metrics_http_ = *std::move(started);
  if (!config_.metrics_port_file.empty()) {
    if (absl::Status s =
            WritePortFile(config_.metrics_port_file, metrics_http_->port());
        !s.ok()) {
      return StartError(s.ToString());
    }
  }
  spdlog::info("metrics on http://{}/metrics (port {})", config_.metrics_listen,
               metrics_http_->port());
  return absl::OkStatus();
}

std::string Server::RenderMetrics() const {
  ServerMetrics::Gauges gauges;
  gauges.in_flight_calls = in_flight_.count();
  gauges.datasets = static_cast<int64_t>(registry_->size());
  gauges.runs = static_cast<int64_t>(runs_->size());
  gauges.run_updates_unflushed = runs_->unflushed_updates();
  gauges.shared_memory_regions = shared_memory_->regions();
  gauges.shared_memory_mapped_bytes =
      static_cast<int64_t>(shared_memory_->mapped_bytes());
  gauges.unix_connections = unix_ == nullptr ? 0 : unix_->open_connections();
  return metrics_->Render(gauges);
}

// The HTTP/JSON gateway and dashboard, if --http_listen asks for them: the
// same registries, pools, limits, tokens, TLS files, metrics and in-flight
// count as the gRPC port.
absl::Status Server::ServeHttp() {
  if (config_.http_listen.empty()) return absl::OkStatus();
  HttpGatewayOptions http_options;
  http_options.listen = config_.http_listen;
  http_options.max_body_bytes =
      static_cast<size_t>(config_.max_message_mb) * 1024 * 1024;
  http_options.tls = config_.tls;
  HttpBackend backend;
  // The gRPC port's service: one budget of concurrent computations for
  // both ports. The gateway admits calls itself (its contexts carry no
  // metadata) and tells HandleComputeLoss so.
  backend.service = service_.get();
  backend.authorizer = authorizer_.get();
  backend.metrics = metrics_.get();
  backend.in_flight = &in_flight_;
  backend.access_log = access_log_.get();
  backend.serving = [this] { return serving_.load(); };
  backend.render_metrics = [this] { return RenderMetrics(); };
  absl::StatusOr<std::unique_ptr<HttpGateway>> started =
      HttpGateway::Start(http_options, std::move(backend));
  if (!started.ok()) {
    return started.status().code() == absl::StatusCode::kInvalidArgument
               ? FlagError(started.status().message())
               : StartError(started.status().message());
  }
  http_ = *std::move(started);
  if (!config_.http_port_file.empty()) {
    if (absl::Status s = WritePortFile(config_.http_port_file, http_->port());
        !s.ok()) {
      return StartError(s.ToString());
    }
  }
  spdlog::info("HTTP/JSON and the dashboard on {}://{}/ (port {})",
               config_.tls.cert.empty() ? "http" : "https", config_.http_listen,
               http_->port());
  return absl::OkStatus();
}

// Health SERVING, the port file, and the start-up line.
absl::Status Server::Announce() {
  serving_ = true;
  grpc::HealthCheckServiceInterface* health =
      grpc_server_->GetHealthCheckService();
  health->SetServingStatus(kServiceName, true);
  health->SetServingStatus(true);
  if (!config_.port_file.empty()) {
    if (absl::Status s = WritePortFile(config_.port_file, port_); !s.ok()) {
      return StartError(s.ToString());
    }
  }
  const char* tls = config_.tls.cert.empty()        ? "off"
                    : config_.tls.client_ca.empty() ? "on"
                                                    : "mutual";
  // Every address: unix: ones as given, TCP ones with their bound port.
  std::vector<std::string> addresses = unix_addresses_;
  for (size_t i = 0; i < tcp_addresses_.size(); ++i) {
    addresses.push_back(
        absl::StrCat(tcp_addresses_[i], " (port ", tcp_ports_[i], ")"));
  }
  spdlog::info(
      "cbloss-server {} serving on {}; store={} datasets={} "
      "compute_threads={} max_message_mb={} max_request_elements={} "
      "max_concurrent_computations={} tls={} admin_token={} "
      "compute_token={} max_connection_age_ms={} shared_memory={}",
      kVersion, absl::StrJoin(addresses, ", "), store_location_,
      registry_->size(), config_.compute_threads, config_.max_message_mb,
      config_.max_request_elements, config_.max_concurrent_computations, tls,
      config_.tokens.admin.empty() ? "off" : "required",
      config_.tokens.compute.empty() ? "off" : "required",
      config_.max_connection_age_ms,
      config_.allow_shared_memory ? "on" : "off");
  return absl::OkStatus();
}

void Server::Drain() {
  const double grace = config_.shutdown_grace_seconds;
  // NOT_SERVING tells clients and load balancers to stop sending; in-flight
  // calls (and open streams) get up to the grace period; then the server
  // stops at once, cancelling whatever is left (in_flight_calls.h).
  grpc_server_->GetHealthCheckService()->Shutdown();
  serving_ = false;  // /readyz: NOT_SERVING
  const absl::Time drain_start = absl::Now();
  const int left = in_flight_.AwaitIdle(absl::Seconds(grace));
  if (left > 0) {
    spdlog::warn("grace period over with {} calls in flight: cancelling them",
                 left);
  } else {
    spdlog::info("in-flight calls drained in {:.3f} s",
                 absl::ToDoubleSeconds(absl::Now() - drain_start));
  }
  // Before gRPC stops: no connection is handed to a stopped server.
  if (unix_ != nullptr) unix_->Stop();
  grpc_server_->Shutdown(std::chrono::system_clock::now());
  if (http_ != nullptr) http_->Stop();
  stopped_ = true;
}

void Server::Wait() {
  spdlog::debug("server shut down; waiting for its threads");
  grpc_server_->Wait();
  spdlog::debug("server threads done");
  // No call is left: write what runs have accumulated (LOSS.md section 11:
  // a graceful stop loses nothing).
  if (runs_ != nullptr) runs_->Close();
}

}  // namespace cbloss::server
