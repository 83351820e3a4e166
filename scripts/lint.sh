#!/usr/bin/env bash
# Lints what no compiler checks: shell scripts (shellcheck), the
# deployment YAML (yamllint) and the C++ layout (clang-format, the root's
# .clang-format). Registered as the ctest test `lint`.
#
#   scripts/lint.sh
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in shellcheck yamllint clang-format; do
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

# Every tracked C++ file (so no build dir and nothing generated) is
# clang-formatted; the offenders are listed.
unformatted=()
while IFS= read -r -d '' file; do
  if ! clang-format --dry-run --Werror "$file" >/dev/null 2>&1; then
    unformatted+=("$file")
  fi
done < <(git ls-files -z -- 'core/*.cc' 'core/*.h' 'server/*.cc' 'server/*.h' \
  'client/*.cc' 'client/*.h' 'bench/*.cc' 'bench/*.h' 'fuzz/*.cc' 'fuzz/*.h' \
  'tests/*.cc' 'tests/*.h')
if ((${#unformatted[@]} > 0)); then
  echo "lint: not clang-formatted (clang-format -i FILE fixes it):" >&2
  printf '  %s\n' "${unformatted[@]}" >&2
  status=1
fi

if ((status == 0)); then
  echo "lint: OK"
fi
exit "$status"
