#!/usr/bin/env bash
# Installs what cbloss needs, builds everything with warnings as errors, and
# runs every test (C++ unit and golden tests, server end-to-end tests).
# Exits non-zero if anything fails, or if any test skipped itself: every
# test must run wherever this is run (root or not, any folder).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/install-deps.sh --test-extras
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DCBLOSS_WERROR=ON
cmake --build build
ctest --test-dir build --output-on-failure -j "$(nproc)"
# unittest's "OK (skipped=N)" / "skipped 'why'", gtest's "[  SKIPPED ]".
if grep -E "skipped=[0-9]|\.\.\. skipped |\[  SKIPPED \]" build/Testing/Temporary/LastTest.log; then
  echo "test.sh: the tests above skipped themselves; every test must run" >&2
  exit 1
fi
