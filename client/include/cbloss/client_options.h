// Copyright 2026 The cbloss Authors.
//
// How a cbloss::client::Client connects: deadlines, message limits, retries,
// load balancing, TLS and the bearer token. Plain data; copy it freely.
//
// Example:
//   cbloss::client::ClientOptions options;
//   options.default_deadline = absl::Seconds(5);
//   absl::Status s = cbloss::client::LoadTlsFiles("ca.pem", "", "", &options);
//   absl::StatusOr<std::string> token =
//       cbloss::client::ReadTokenFile("compute-token");
//   if (s.ok() && token.ok()) options.token = *token;

#ifndef CBLOSS_CLIENT_INCLUDE_CBLOSS_CLIENT_OPTIONS_H_
#define CBLOSS_CLIENT_INCLUDE_CBLOSS_CLIENT_OPTIONS_H_

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace grpc {
class ChannelCredentials;
}  // namespace grpc

namespace cbloss::client {

struct ClientOptions {
  // Deadline of each call unless the call says otherwise.
  absl::Duration default_deadline = absl::Seconds(30);
  // Send and receive limit, MiB (match the server's --max_message_mb).
  int max_message_mb = 64;
  // Retry idempotent calls on UNAVAILABLE, with the retry policy of
  // proto/cbloss/v1/service_config.json (up to 5 attempts, backoff).
  bool retry_unavailable = true;
  // gRPC load-balancing policy over the target's addresses.
  std::string load_balancing_policy = "round_robin";
  // Channel credentials (include grpcpp/security/credentials.h to make
  // them); null means plaintext, unless `tls` is set.
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  // TLS from PEM text (used when `credentials` is null and `tls` is true):
  // the roots that sign the server's certificate (empty: the system's), and
  // for mutual TLS this client's certificate chain and private key.
  bool tls = false;
  std::string tls_root_certs_pem;
  std::string tls_client_cert_pem;
  std::string tls_client_key_pem;
  // The name to check the server's certificate against, if not the target's
  // host (e.g. "cbloss" when the target is an IP address).
  std::string tls_server_name;
  // Bearer token sent on every call as `authorization: Bearer <token>`
  // (servers started with --admin_token_file / --compute_token_file). Use
  // with TLS: on a plaintext channel the token crosses the network in clear.
  std::string token;
};

// ClientOptions::tls and its PEM fields from files (empty path: not used;
// cert and key come together), for tools that take file flags.
absl::Status LoadTlsFiles(const std::string& root_ca_path,
                          const std::string& cert_path,
                          const std::string& key_path, ClientOptions* options);

// A token file's text without trailing whitespace; an error if empty.
absl::StatusOr<std::string> ReadTokenFile(const std::string& path);

}  // namespace cbloss::client

#endif  // CBLOSS_CLIENT_INCLUDE_CBLOSS_CLIENT_OPTIONS_H_
