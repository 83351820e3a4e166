// Copyright 2026 The cbloss Authors.
//
// cbloss-server: the LossService of API.md, with the flags of its section 3.
// Startup: open the store, load --datasets_file, start serving (health
// SERVING once everything is loaded). SIGTERM / SIGINT: health NOT_SERVING,
// stop accepting, drain in-flight calls for up to --shutdown_grace_seconds,
// close the store, exit 0.

#include <pthread.h>
#include <signal.h>

#include <cctype>
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "google/protobuf/util/json_util.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "server/auth.h"
#include "server/dataset_registry.h"
#include "server/in_flight_calls.h"
#include "server/loss_service.h"
#include "server/metrics.h"
#include "server/store/postgres_dataset_store.h"
#include "server/store/sqlite_dataset_store.h"
#include "server/tls.h"
#include "spdlog/sinks/stdout_color_sinks.h"
#include "spdlog/spdlog.h"

ABSL_FLAG(std::string, listen, "127.0.0.1:50051",
          "Address to serve on (HOST:PORT); port 0 picks a free port.");
ABSL_FLAG(std::string, port_file, "",
          "After binding, write the bound port number to this file.");
ABSL_FLAG(std::string, data_dir, "./cbloss-data",
          "Directory of the embedded dataset store (SQLite).");
ABSL_FLAG(std::string, store, "",
          "Dataset store: empty for the embedded SQLite store under "
          "--data_dir, or a PostgreSQL URI (postgresql://USER@HOST:PORT/DB) "
          "shared by every replica. Prefer --store_file for a DSN with a "
          "password: command lines are visible to other users.");
ABSL_FLAG(std::string, store_file, "",
          "File holding the --store value (e.g. a mounted Kubernetes "
          "Secret); trailing whitespace is ignored.");
ABSL_FLAG(std::string, datasets_file, "",
          "JSON file of datasets (protobuf JSON of ListDatasetsResponse) "
          "loaded at start; each is put unless an equal one exists.");
ABSL_FLAG(int, compute_threads,
          static_cast<int>(std::thread::hardware_concurrency()),
          "Size of the compute thread pool.");
ABSL_FLAG(int, max_message_mb, 64, "Receive and send message size limit, MiB.");
ABSL_FLAG(std::string, log_level, "info",
          "spdlog level: trace, debug, info, warn, error, critical, off.");
ABSL_FLAG(int64_t, max_request_elements, int64_t{1} << 24,
          "Largest batch (logits elements B * C) one request may carry; "
          "larger ones get RESOURCE_EXHAUSTED.");
ABSL_FLAG(int, max_concurrent_computations, 64,
          "Computations admitted at once (ComputeLoss calls and StreamLoss "
          "requests); more get RESOURCE_EXHAUSTED instead of queueing.");
ABSL_FLAG(double, shutdown_grace_seconds, 10.0,
          "On SIGTERM/SIGINT, how long in-flight calls may take to finish "
          "before they are cancelled.");
ABSL_FLAG(std::string, tls_cert, "",
          "PEM certificate chain: serve TLS instead of plaintext (with "
          "--tls_key).");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert.");
ABSL_FLAG(std::string, tls_client_ca, "",
          "PEM CA bundle: require client certificates it signed (mutual "
          "TLS). Needs --tls_cert.");
ABSL_FLAG(std::string, admin_token_file, "",
          "File holding the bearer token that PutDataset, DeleteDataset and "
          "AddClassCounts then require (authorization: Bearer <token>).");
ABSL_FLAG(std::string, compute_token_file, "",
          "File holding the bearer token that every other LossService method "
          "then requires (the admin token is accepted too).");
ABSL_FLAG(std::string, metrics_listen, "",
          "HOST:PORT to serve Prometheus metrics on at /metrics (port 0 "
          "picks a free port); empty: no metrics endpoint.");
ABSL_FLAG(std::string, metrics_port_file, "",
          "After binding, write the metrics port number to this file.");
ABSL_FLAG(int64_t, max_connection_age_ms, 0,
          "Close each client connection (GOAWAY) after this many ms so "
          "clients reconnect and rebalance over replicas; 0: never.");
ABSL_FLAG(int64_t, max_connection_age_grace_ms, 60000,
          "After --max_connection_age_ms, how long calls on the old "
          "connection (e.g. StreamLoss streams) may go on before they are "
          "cancelled.");

namespace cbloss {
namespace {

constexpr char kVersion[] = "0.1.0";
constexpr char kServiceName[] = "cbloss.v1.LossService";

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
    while (!store.empty() && std::isspace(static_cast<unsigned char>(
                                 store.back()))) {
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

int Run() {
  // Logs go to stderr, as a service's should; stdout stays free.
  spdlog::set_default_logger(spdlog::stderr_color_mt("cbloss"));
  auto level = spdlog::level::from_str(absl::GetFlag(FLAGS_log_level));
  if (level == spdlog::level::off && absl::GetFlag(FLAGS_log_level) != "off") {
    std::fprintf(stderr, "--log_level=%s is not a spdlog level\n",
                 absl::GetFlag(FLAGS_log_level).c_str());
    return 2;
  }
  spdlog::set_level(level);
  const int compute_threads = absl::GetFlag(FLAGS_compute_threads);
  const int max_message_mb = absl::GetFlag(FLAGS_max_message_mb);
  if (compute_threads < 1 || max_message_mb < 1 || max_message_mb > 2047) {
    spdlog::critical(
        "--compute_threads must be >= 1 and --max_message_mb in [1, 2047]");
    return 2;
  }

  // Signals are taken by sigwait below, never by a handler on a random thread.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  std::string data_dir = absl::GetFlag(FLAGS_data_dir);
  absl::StatusOr<std::unique_ptr<DatasetStore>> store = OpenStoreFromFlags(
      absl::GetFlag(FLAGS_store), absl::GetFlag(FLAGS_store_file), &data_dir);
  if (!store.ok()) {
    spdlog::critical("cannot open the dataset store {}: {}", data_dir,
                     store.status().ToString());
    return store.status().code() == absl::StatusCode::kInvalidArgument ? 2
                                                                       : 1;
  }
  absl::StatusOr<std::unique_ptr<DatasetRegistry>> registry =
      DatasetRegistry::Create(*std::move(store));
  if (!registry.ok()) {
    spdlog::critical("cannot load datasets from {}: {}", data_dir,
                     registry.status().ToString());
    return 1;
  }
  if (const std::string file = absl::GetFlag(FLAGS_datasets_file);
      !file.empty()) {
    if (absl::Status s = LoadDatasetsFile(file, registry->get()); !s.ok()) {
      spdlog::critical("{}", s.ToString());
      return 1;
    }
  }

  ThreadPool compute_pool(compute_threads);
  ThreadPool io_pool(2);
  LossServiceOptions service_options;
  service_options.max_request_elements = absl::GetFlag(FLAGS_max_request_elements);
  service_options.max_concurrent_computations =
      absl::GetFlag(FLAGS_max_concurrent_computations);
  if (service_options.max_request_elements < 1 ||
      service_options.max_concurrent_computations < 1) {
    spdlog::critical(
        "--max_request_elements and --max_concurrent_computations must be >= 1");
    return 2;
  }
  ServerMetrics metrics(kVersion);
  service_options.elements_computed = metrics.elements_computed();
  LossServiceImpl service(registry->get(), &compute_pool, &io_pool,
                          service_options);

  // Security (docs/DEPLOY.md): transport from the TLS flags, tokens from
  // their files. Token values are never logged.
  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> credentials =
      MakeServerCredentials({absl::GetFlag(FLAGS_tls_cert),
                             absl::GetFlag(FLAGS_tls_key),
                             absl::GetFlag(FLAGS_tls_client_ca)});
  if (!credentials.ok()) {
    spdlog::critical("{}", credentials.status().ToString());
    return 2;
  }
  std::string tokens[2];
  const char* const token_flags[2] = {"--admin_token_file",
                                      "--compute_token_file"};
  const std::string token_files[2] = {absl::GetFlag(FLAGS_admin_token_file),
                                      absl::GetFlag(FLAGS_compute_token_file)};
  for (int i = 0; i < 2; ++i) {
    if (token_files[i].empty()) continue;
    absl::StatusOr<std::string> token = ReadTokenFile(token_files[i]);
    if (!token.ok()) {
      spdlog::critical("{}: {}", token_flags[i], token.status().ToString());
      return 2;
    }
    tokens[i] = *std::move(token);
  }
  if (!tokens[0].empty() && ConstantTimeEquals(tokens[0], tokens[1])) {
    spdlog::critical(
        "--admin_token_file and --compute_token_file hold the same token");
    return 2;
  }
  const bool tls = !absl::GetFlag(FLAGS_tls_cert).empty();
  const TokenAuthorizer authorizer(tokens[0], tokens[1]);
  if (authorizer.enabled() && !tls) {
    spdlog::warn(
        "bearer tokens are required but TLS is off: tokens cross the network "
        "in the clear (give --tls_cert and --tls_key)");
  }
  AuthorizedLossService authorized_service(&service, &authorizer);

  const int64_t max_age_ms = absl::GetFlag(FLAGS_max_connection_age_ms);
  const int64_t max_age_grace_ms =
      absl::GetFlag(FLAGS_max_connection_age_grace_ms);
  if (max_age_ms < 0 || max_age_ms > INT32_MAX || max_age_grace_ms < 0 ||
      max_age_grace_ms > INT32_MAX) {
    spdlog::critical(
        "--max_connection_age_ms and --max_connection_age_grace_ms must be in "
        "[0, 2^31)");
    return 2;
  }

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  ApplyServerTuning(&builder);  // server/grpc_tuning.h
  int port = 0;
  const std::string listen = absl::GetFlag(FLAGS_listen);
  builder.AddListeningPort(listen, *credentials, &port);
  builder.SetMaxReceiveMessageSize(max_message_mb * 1024 * 1024);
  builder.SetMaxSendMessageSize(max_message_mb * 1024 * 1024);
  if (max_age_ms > 0) {
    // Clients reconnect (and re-resolve) after a GOAWAY, so new replicas get
    // their share of long-lived channels after a scale-up.
    builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_MS,
                               static_cast<int>(max_age_ms));
    builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_GRACE_MS,
                               static_cast<int>(max_age_grace_ms));
  }
  if (authorizer.enabled()) {
    builder.RegisterService(&authorized_service);
  } else {
    builder.RegisterService(&service);
  }
  InFlightCalls in_flight;
  std::vector<
      std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>>
      interceptors;
  interceptors.push_back(in_flight.MakeInterceptorFactory());
  interceptors.push_back(metrics.MakeInterceptorFactory());
  builder.experimental().SetInterceptorCreators(std::move(interceptors));
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    spdlog::critical(
        "cannot listen on {}{}", listen,
        tls ? " (or the TLS certificate/key are not valid PEM)" : "");
    return 1;
  }

  std::unique_ptr<MetricsHttpServer> metrics_http;
  if (const std::string metrics_listen = absl::GetFlag(FLAGS_metrics_listen);
      !metrics_listen.empty()) {
    DatasetRegistry* const datasets = registry->get();
    absl::StatusOr<std::unique_ptr<MetricsHttpServer>> started =
        MetricsHttpServer::Start(
            metrics_listen, [&metrics, &in_flight, datasets] {
              ServerMetrics::Gauges gauges;
              gauges.in_flight_calls = in_flight.count();
              gauges.datasets = static_cast<int64_t>(datasets->size());
              return metrics.Render(gauges);
            });
    if (!started.ok()) {
      spdlog::critical("{}", started.status().ToString());
      server->Shutdown(std::chrono::system_clock::now());
      return 1;
    }
    metrics_http = *std::move(started);
    if (const std::string path = absl::GetFlag(FLAGS_metrics_port_file);
        !path.empty()) {
      if (absl::Status s = WritePortFile(path, metrics_http->port()); !s.ok()) {
        spdlog::critical("{}", s.ToString());
        server->Shutdown(std::chrono::system_clock::now());
        return 1;
      }
    }
    spdlog::info("metrics on http://{}/metrics (port {})", metrics_listen,
                 metrics_http->port());
  }
  grpc::HealthCheckServiceInterface* health = server->GetHealthCheckService();
  health->SetServingStatus(kServiceName, true);
  health->SetServingStatus(true);

  if (const std::string path = absl::GetFlag(FLAGS_port_file); !path.empty()) {
    if (absl::Status s = WritePortFile(path, port); !s.ok()) {
      spdlog::critical("{}", s.ToString());
      server->Shutdown();
      return 1;
    }
  }
  spdlog::info(
      "cbloss-server {} serving on {} (port {}); store={} datasets={} "
      "compute_threads={} max_message_mb={} max_request_elements={} "
      "max_concurrent_computations={} tls={} admin_token={} "
      "compute_token={} max_connection_age_ms={}",
      kVersion, listen, port, data_dir, (*registry)->size(), compute_threads,
      max_message_mb, service_options.max_request_elements,
      service_options.max_concurrent_computations,
      !tls ? "off"
           : (absl::GetFlag(FLAGS_tls_client_ca).empty() ? "on" : "mutual"),
      tokens[0].empty() ? "off" : "required",
      tokens[1].empty() ? "off" : "required", max_age_ms);

  int signal_number = 0;
  sigwait(&signals, &signal_number);
  const double grace = absl::GetFlag(FLAGS_shutdown_grace_seconds);
  spdlog::info("signal {} received: draining in-flight calls (up to {} s)",
               signal_number, grace);
  // Drain: NOT_SERVING tells clients and load balancers to stop sending;
  // in-flight calls (and open streams) get up to the grace period; then the
  // server stops at once, cancelling whatever is left (in_flight_calls.h).
  health->Shutdown();
  const absl::Time drain_start = absl::Now();
  const int left = in_flight.AwaitIdle(absl::Seconds(grace));
  if (left > 0) {
    spdlog::warn("grace period over with {} calls in flight: cancelling them",
                 left);
  } else {
    spdlog::info("in-flight calls drained in {:.3f} s",
                 absl::ToDoubleSeconds(absl::Now() - drain_start));
  }
  server->Shutdown(std::chrono::system_clock::now());
  spdlog::debug("server shut down; waiting for its threads");
  server->Wait();
  spdlog::debug("server threads done");
  server.reset();
  metrics_http.reset();
  registry->reset();  // closes the store
  spdlog::info("cbloss-server stopped");
  return 0;
}

}  // namespace
}  // namespace cbloss

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "cbloss-server: class-balanced losses and their gradients over gRPC.\n"
      "Usage: cbloss-server [--listen=127.0.0.1:50051] [--data_dir=DIR] "
      "[--datasets_file=FILE] ...");
  absl::ParseCommandLine(argc, argv);
  return cbloss::Run();
}
