// Copyright 2026 The cbloss Authors.
//
// The server's transport credentials from --tls_cert, --tls_key and
// --tls_client_ca: plaintext when no certificate is given, TLS with one, and
// mutual TLS (a client certificate signed by the CA is required and
// verified) when a client CA is given too.

#ifndef CBLOSS_SERVER_TLS_H_
#define CBLOSS_SERVER_TLS_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "grpcpp/security/server_credentials.h"

namespace cbloss::server {

struct ServerTlsFiles {
  std::string cert;       // PEM certificate chain; empty: plaintext
  std::string key;        // PEM private key of `cert`
  std::string client_ca;  // PEM CA bundle; non-empty: mutual TLS
};

// INVALID_ARGUMENT for an inconsistent set (a key without a certificate, a
// client CA without TLS), NOT_FOUND for an unreadable file. PEM contents are
// checked by gRPC when the server starts.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const ServerTlsFiles& files);

}  // namespace cbloss::server

#endif  // CBLOSS_SERVER_TLS_H_
