// Copyright 2026 The cbloss Authors.
//
// cbloss-server: the LossService of API.md, with the flags of its section 3
// (and section 5.3's: several --listen, unix: sockets, shared memory).
// The flags make a ServerConfig; server/server.h does the rest. SIGTERM /
// SIGINT: drain in-flight calls for up to --shutdown_grace_seconds, close the
// store, exit 0. Exit 2 for a bad flag, 1 when the server cannot start.

#include <pthread.h>
#include <signal.h>

#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "server/logging.h"
#include "server/server.h"
#include "spdlog/spdlog.h"

ABSL_FLAG(std::string, listen, "127.0.0.1:50051",
          "Address to serve on: HOST:PORT (port 0 picks a free port) or "
          "unix:PATH (a Unix domain socket, plaintext, mode "
          "--unix_socket_mode). Repeat the flag, or separate addresses with "
          "commas, to serve on several.");
ABSL_FLAG(std::string, port_file, "",
          "After binding, write the first TCP port of --listen to this file "
          "(0 if there is none).");
ABSL_FLAG(std::string, unix_socket_mode, "0660",
          "File mode (octal) of the unix: --listen socket files: who may "
          "connect.");
ABSL_FLAG(bool, allow_shared_memory, false,
          "Serve shared-memory tensors (RegisterSharedMemory, Tensor.shm, "
          "gradient_shm) to callers on a unix: socket, for POSIX "
          "shared-memory objects their uid owns (API.md section 5.3).");
ABSL_FLAG(std::string, shared_memory_prefix, "/cbloss-",
          "Shared-memory object names (keys) must start with this; others "
          "are PERMISSION_DENIED.");
ABSL_FLAG(int, max_shared_memory_regions, 256,
          "Most shared-memory regions registered at once (all callers); more "
          "are RESOURCE_EXHAUSTED.");
ABSL_FLAG(int64_t, max_shared_memory_mb, 4096,
          "Most MiB the registered shared-memory regions may map in total; "
          "more are RESOURCE_EXHAUSTED.");
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
ABSL_FLAG(int, run_flush_interval_ms, 100,
          "How often runs' accumulated statistics are written to the store, "
          "in [1, 500] ms: a crash loses at most about this much of "
          "acknowledged updates (docs/RUNS.md).");
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

ABSL_FLAG(std::string, http_listen, "",
          "HOST:PORT to serve the API as JSON over HTTP/1.1 and the "
          "dashboard at / (docs/HTTP.md; port 0 picks a free port); same "
          "tokens, TLS and limits as --listen. Empty: off.");
ABSL_FLAG(std::string, http_port_file, "",
          "After binding, write the HTTP port number to this file.");
ABSL_FLAG(std::string, log_format, "text",
          "Log lines: text, or json (one object per line: time, level, "
          "message).");
ABSL_FLAG(std::string, access_log, "",
          "One line per call (method, peer, status, duration, elements, "
          "dataset, run; never a token or a payload): stderr, or a file to "
          "append to. Empty: off.");

namespace cbloss::server {
namespace {

// absl keeps only the last occurrence of a flag, and --listen may be
// repeated (API.md section 5.3): every value of --listen=X, --listen X (one
// or two dashes) before a "--", from argv before absl parses it. A --listen
// inside a --flagfile is absl's (the last one wins), used only when the
// command line has none.
std::vector<std::string> ListenValues(int argc, char** argv) {
  std::vector<std::string> values;
  for (int i = 1; i < argc; ++i) {
    absl::string_view arg = argv[i];
    if (arg == "--") break;
    if (!absl::ConsumePrefix(&arg, "--") && !absl::ConsumePrefix(&arg, "-")) {
      continue;
    }
    if (arg == "listen") {
      if (i + 1 < argc) values.emplace_back(argv[++i]);
    } else if (absl::ConsumePrefix(&arg, "listen=")) {
      values.emplace_back(arg);
    }
  }
  return values;
}

ServerConfig ConfigFromFlags(std::vector<std::string> listen) {
  ServerConfig c;
  c.listen = listen.empty()
                 ? std::vector<std::string>{absl::GetFlag(FLAGS_listen)}
                 : std::move(listen);
  c.port_file = absl::GetFlag(FLAGS_port_file);
  c.unix_socket_mode = absl::GetFlag(FLAGS_unix_socket_mode);
  c.allow_shared_memory = absl::GetFlag(FLAGS_allow_shared_memory);
  c.shared_memory_prefix = absl::GetFlag(FLAGS_shared_memory_prefix);
  c.max_shared_memory_regions = absl::GetFlag(FLAGS_max_shared_memory_regions);
  c.max_shared_memory_mb = absl::GetFlag(FLAGS_max_shared_memory_mb);
  c.data_dir = absl::GetFlag(FLAGS_data_dir);
  c.store = absl::GetFlag(FLAGS_store);
  c.store_file = absl::GetFlag(FLAGS_store_file);
  c.datasets_file = absl::GetFlag(FLAGS_datasets_file);
  c.compute_threads = absl::GetFlag(FLAGS_compute_threads);
  c.max_message_mb = absl::GetFlag(FLAGS_max_message_mb);
  c.max_request_elements = absl::GetFlag(FLAGS_max_request_elements);
  c.max_concurrent_computations =
      absl::GetFlag(FLAGS_max_concurrent_computations);
  c.run_flush_interval_ms = absl::GetFlag(FLAGS_run_flush_interval_ms);
  c.shutdown_grace_seconds = absl::GetFlag(FLAGS_shutdown_grace_seconds);
  c.tls = {absl::GetFlag(FLAGS_tls_cert), absl::GetFlag(FLAGS_tls_key),
           absl::GetFlag(FLAGS_tls_client_ca)};
  c.tokens = {absl::GetFlag(FLAGS_admin_token_file),
              absl::GetFlag(FLAGS_compute_token_file)};
  c.metrics_listen = absl::GetFlag(FLAGS_metrics_listen);
  c.metrics_port_file = absl::GetFlag(FLAGS_metrics_port_file);
  c.max_connection_age_ms = absl::GetFlag(FLAGS_max_connection_age_ms);
  c.max_connection_age_grace_ms =
      absl::GetFlag(FLAGS_max_connection_age_grace_ms);
  c.http_listen = absl::GetFlag(FLAGS_http_listen);
  c.http_port_file = absl::GetFlag(FLAGS_http_port_file);
  c.access_log = absl::GetFlag(FLAGS_access_log);
  return c;
}

// Logs go to stderr, as a service's should; stdout stays free
// (server/logging.h).
bool SetUpLogs(LogFormat* format) {
  if (absl::Status s = ParseLogFormat(absl::GetFlag(FLAGS_log_format), format);
      !s.ok()) {
    std::fprintf(stderr, "%s\n", std::string(s.message()).c_str());
    return false;
  }
  if (absl::Status s = SetUpLogging(absl::GetFlag(FLAGS_log_level), *format);
      !s.ok()) {
    std::fprintf(stderr, "%s\n", std::string(s.message()).c_str());
    return false;
  }
  return true;
}

int Run(std::vector<std::string> listen) {
  LogFormat log_format = LogFormat::kText;
  if (!SetUpLogs(&log_format)) return 2;
  // Signals are taken by sigwait below, never by a handler on a random
  // thread: blocked before any thread starts, so every thread inherits it.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  ServerConfig config = ConfigFromFlags(std::move(listen));
  config.log_format = log_format;
  absl::StatusOr<std::unique_ptr<Server>> server = Server::Start(config);
  if (!server.ok()) {
    spdlog::critical("{}", std::string(server.status().message()));
    return ExitCode(server.status());
  }
  int signal_number = 0;
  sigwait(&signals, &signal_number);
  spdlog::info("signal {} received: draining in-flight calls (up to {} s)",
               signal_number, absl::GetFlag(FLAGS_shutdown_grace_seconds));
  (*server)->Drain();
  (*server)->Wait();
  server->reset();  // closes the store
  spdlog::info("cbloss-server stopped");
  return 0;
}

}  // namespace
}  // namespace cbloss::server

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "cbloss-server: class-balanced losses and their gradients over gRPC.\n"
      "Usage: cbloss-server [--listen=127.0.0.1:50051] [--data_dir=DIR] "
      "[--datasets_file=FILE] ...");
  std::vector<std::string> listen = cbloss::server::ListenValues(argc, argv);
  absl::ParseCommandLine(argc, argv);
  return cbloss::server::Run(std::move(listen));
}
