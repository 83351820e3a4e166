#!/usr/bin/env bash
# Installs what cbloss needs, builds it, and starts cbloss-server in the
# foreground on 127.0.0.1:50051 (gRPC) and 127.0.0.1:8080 (HTTP/JSON and the
# dashboard, docs/HTTP.md) with the embedded SQLite store under ./cbloss-data
# and the sample CIFAR-LT datasets loaded. Extra arguments go to the server
# (e.g. --listen=0.0.0.0:50051, --http_listen=0.0.0.0:8080). Ctrl-C drains
# and stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build build
http_listen=127.0.0.1:8080
for arg in "$@"; do
  case "$arg" in --http_listen=*) http_listen="${arg#--http_listen=}" ;; esac
done
echo "cbloss dashboard: http://${http_listen}/  (gRPC on 127.0.0.1:50051 unless --listen says otherwise)"
exec build/bin/cbloss-server --datasets_file=datasets/sample_datasets.json \
  --http_listen=127.0.0.1:8080 "$@"
