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

# Known findings in scripts this change does not own, excluded by code and
# by file only (fix them, then drop the line):
#   fuzz.sh, sanitize.sh: SC2164 (cd without || exit; they run without set -e)
#   sanitize.sh: SC2317 (functions called indirectly)
declare -A excluded=(
  [scripts/fuzz.sh]="SC2164"
  [scripts/sanitize.sh]="SC2164,SC2317"
)
shopt -s nullglob
for script in scripts/*.sh docker/*.sh tests/deploy/*.sh; do
  flags=()
  if [[ -n "${excluded[$script]:-}" ]]; then
    flags=(--exclude "${excluded[$script]}")
  fi
  if ! shellcheck "${flags[@]}" "$script"; then
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
