#!/usr/bin/env bash
# Installs what cbloss needs, builds everything with warnings as errors, and
# runs every test (C++ unit and golden tests, server end-to-end tests).
# Exits non-zero if anything fails.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DCBLOSS_WERROR=ON
cmake --build build
ctest --test-dir build --output-on-failure -j "$(nproc)"
