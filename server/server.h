// Copyright 2026 The cbloss Authors.
//
// The cbloss server as an object: a ServerConfig (what cbloss-server's flags
// say, API.md section 3) in, a running gRPC server out, drained on request.
//
//   Start: open the store (--store / --store_file, else SQLite under
//     --data_dir), load --datasets_file, build the LossService (with its
//     access table, bearer tokens and shared-memory registry), TLS or
//     plaintext, interceptors (in-flight calls, metrics), listen (TCP
//     through gRPC, unix: through server/unix_listener.h), serve metrics,
//     write the port files, and report SERVING on health once everything
//     is loaded.
//   Drain: health NOT_SERVING, wait for in-flight calls up to
//     shutdown_grace_seconds, stop accepting on the Unix sockets (their
//     files are removed), then stop at once, cancelling what is left.
//   Wait: until the gRPC server has stopped.
//
// Example (server/main.cc):
//   absl::StatusOr<std::unique_ptr<Server>> server = Server::Start(config);
//   if (!server.ok()) return ExitCode(server.status());
//   WaitForSignal();
//   (*server)->Drain();
//   (*server)->Wait();
//
// Thread-safety: Start, Drain and Wait are called from one thread; the
// server itself serves calls on gRPC's and its pools' threads.

#ifndef CBLOSS_SERVER_SERVER_H_
#define CBLOSS_SERVER_SERVER_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "grpcpp/grpcpp.h"
#include "server/auth.h"
#include "server/dataset_registry.h"
#include "server/http_gateway.h"
#include "server/in_flight_calls.h"
#include "server/logging.h"
#include "server/loss_service.h"
#include "server/metrics.h"
#include "server/shared_memory.h"
#include "server/tls.h"
#include "server/unix_listener.h"

namespace cbloss::server {

// The files holding the bearer tokens (server/auth.h); empty: not required.
struct TokenFiles {
  std::string admin;    // --admin_token_file
  std::string compute;  // --compute_token_file
};

// Everything cbloss-server's flags configure; defaults are the flags'.
struct ServerConfig {
  // Addresses to serve on (--listen, API.md section 5.3): HOST:PORT, or
  // unix:PATH (server/unix_listener.h); each value may also hold several,
  // separated by commas.
  std::vector<std::string> listen = {"127.0.0.1:50051"};
  // Gets the first TCP port of `listen` (0 if there is none).
  std::string port_file;
  // File mode of the Unix socket files, in octal.
  std::string unix_socket_mode = "0660";
  // Shared-memory tensors (API.md section 5.3, server/shared_memory.h).
  bool allow_shared_memory = false;
  std::string shared_memory_prefix = "/cbloss-";
  int max_shared_memory_regions = 256;
  int64_t max_shared_memory_mb = 4096;
  std::string data_dir = "./cbloss-data";
  std::string store;       // PostgreSQL URI; empty: SQLite under data_dir
  std::string store_file;  // file holding `store`
  std::string datasets_file;
  int compute_threads = 1;
  int max_message_mb = 64;
  int64_t max_request_elements = int64_t{1} << 24;
  int max_concurrent_computations = 64;
  // Runs (LOSS.md section 11): how often accumulated statistics are written
  // to the store (docs/RUNS.md).
  int run_flush_interval_ms = 100;
  double shutdown_grace_seconds = 10.0;
  ServerTlsFiles tls;
  TokenFiles tokens;
  std::string metrics_listen;  // empty: no metrics endpoint
  std::string metrics_port_file;
  int64_t max_connection_age_ms = 0;
  int64_t max_connection_age_grace_ms = 60000;
  // HTTP/JSON and the dashboard (docs/HTTP.md); empty: off.
  std::string http_listen;
  std::string http_port_file;
  // Logs (docs/spec/API.md section 5.5): the access log's destination
  // ("stderr" or a file; empty: off) and format.
  std::string access_log;
  LogFormat log_format = LogFormat::kText;
};

// Start's errors: INVALID_ARGUMENT when a flag is wrong (cbloss-server exits
// 2), anything else when the server cannot start (exit 1). The message is
// what cbloss-server logs.
int ExitCode(const absl::Status& start_error);

class Server {
 public:
  static absl::StatusOr<std::unique_ptr<Server>> Start(
      const ServerConfig& config);
  ~Server();

  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // The first bound TCP port of --listen; 0 if it has none.
  int port() const { return port_; }
  // The bound HTTP port; 0 without --http_listen.
  int http_port() const { return http_ == nullptr ? 0 : http_->port(); }

  void Drain();
  void Wait();

 private:
  explicit Server(const ServerConfig& config);

  absl::Status OpenDatasets();
  absl::Status MakePools();
  absl::Status OpenSharedMemory();
  absl::Status Listen(
      const std::shared_ptr<grpc::ServerCredentials>& credentials);
  absl::Status ServeMetrics();
  absl::Status ServeHttp();
  absl::Status Announce();
  std::string RenderMetrics() const;

  const ServerConfig config_;
  std::string store_location_;  // data_dir, or the DSN without password
  std::unique_ptr<DatasetRegistry> registry_;
  std::unique_ptr<RunRegistry> runs_;  // over registry_'s store
  std::unique_ptr<ThreadPool> compute_pool_;
  std::unique_ptr<ThreadPool> io_pool_;
  std::unique_ptr<ServerMetrics> metrics_;
  std::unique_ptr<SharedMemoryRegistry> shared_memory_;
  LossServiceOptions service_options_;
  std::unique_ptr<TokenAuthorizer> authorizer_;
  std::unique_ptr<LossServiceImpl> service_;
  InFlightCalls in_flight_;
  std::unique_ptr<grpc::Server> grpc_server_;
  // --listen split: gRPC's TCP addresses and their bound ports, and the
  // unix: ones this server accepts on itself (null without any).
  std::vector<std::string> tcp_addresses_;
  std::vector<int> tcp_ports_;
  std::vector<std::string> unix_addresses_;
  std::unique_ptr<UnixListener> unix_;
  std::unique_ptr<MetricsHttpServer> metrics_http_;
  std::unique_ptr<AccessLog> access_log_;  // null: no access log
  std::unique_ptr<HttpGateway> http_;
  std::atomic<bool> serving_{false};
  int port_ = 0;
  bool stopped_ = false;
};

}  // namespace cbloss::server

#endif  // CBLOSS_SERVER_SERVER_H_
