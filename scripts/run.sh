#!/usr/bin/env bash
# Installs what cbloss needs, builds it, and starts cbloss-server in the
# foreground on 127.0.0.1:50051 with the embedded SQLite store under
# ./cbloss-data and the sample CIFAR-LT datasets loaded. Extra arguments go to
# the server (e.g. --listen=0.0.0.0:50051). Ctrl-C drains and stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build build
exec build/bin/cbloss-server --datasets_file=datasets/sample_datasets.json "$@"
