#!/usr/bin/env bash
# Lints what no compiler checks: shell scripts (shellcheck) and the
# deployment YAML (yamllint). Registered as the ctest test `lint`.
#
#   scripts/lint.sh
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in shellcheck yamllint; do
  if ! command -v "$tool" >/dev/null; then
    echo "lint: $tool is missing (scripts/install-deps.sh installs it)" >&2
    exit 1
  fi
done

status=0

shopt -s nullglob
for script in .ci/run scripts/*.sh docker/*.sh tests/deploy/*.sh; do
  if ! shellcheck "$script"; then
    status=1
  fi
done

if ! yamllint --strict -c deploy/.yamllint.yaml deploy/ docker/compose.yaml; then
  status=1
fi

if ((status == 0)); then
  echo "lint: OK"
fi
exit "$status"
