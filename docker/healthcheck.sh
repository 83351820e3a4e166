#!/usr/bin/env bash
# Docker HEALTHCHECK of cbloss-server: `cbloss health` against this container.
#
# Environment (all optional):
#   CBLOSS_HEALTH_TARGET  default 127.0.0.1:50051
#   CBLOSS_TLS_CA         PEM CA of the server's certificate: check over TLS
#   CBLOSS_TLS_CERT       client certificate and key, for a server with
#   CBLOSS_TLS_KEY        --tls_client_ca (mutual TLS)
#   CBLOSS_TLS_SERVER_NAME  name in the server certificate (default: localhost)
# Health is never behind a token, so no token is needed.
set -euo pipefail

args=(--target "${CBLOSS_HEALTH_TARGET:-127.0.0.1:50051}" --timeout 3)
if [[ -n "${CBLOSS_TLS_CA:-}" ]]; then
  args+=(--tls_ca "$CBLOSS_TLS_CA" --tls_server_name "${CBLOSS_TLS_SERVER_NAME:-localhost}")
  if [[ -n "${CBLOSS_TLS_CERT:-}" ]]; then
    args+=(--tls_cert "$CBLOSS_TLS_CERT" --tls_key "${CBLOSS_TLS_KEY:?CBLOSS_TLS_KEY goes with CBLOSS_TLS_CERT}")
  fi
fi
exec cbloss "${args[@]}" health
