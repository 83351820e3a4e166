#!/usr/bin/env bash
# Validates every Kubernetes object of deploy/k8s and of its kustomize
# overlays (deploy/k8s/tls) against the Kubernetes API schemas, with npm's
# kubernetes-models: JSON-schema validation of each object, then a strict
# TypeScript type check of the same objects, which also rejects fields the
# API does not have (tests/deploy/k8s/validate_manifests.mjs). Run by CI
# (.ci/run) after scripts/test.sh.
#
# Needs Node.js and npm (scripts/install-deps.sh --container-tests). The npm
# packages, pinned by tests/deploy/k8s/package-lock.json, go to build-k8s/
# (`npm ci` once; later runs reuse them and need no network).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=$ROOT/build-k8s
SRC=$ROOT/tests/deploy/k8s

for tool in node npm; do
  command -v "$tool" >/dev/null ||
    { echo "test-k8s: $tool is missing (scripts/install-deps.sh --container-tests)" >&2; exit 2; }
done

mkdir -p "$WORK"
if ! cmp -s "$SRC/package-lock.json" "$WORK/package-lock.json" ||
  [[ ! -d $WORK/node_modules ]]; then
  cp "$SRC/package.json" "$SRC/package-lock.json" "$WORK/"
  (cd "$WORK" && npm ci --no-audit --no-fund --loglevel=error)
fi
# Beside its node_modules, so that its imports resolve there.
cp "$SRC/validate_manifests.mjs" "$WORK/"

node "$WORK/validate_manifests.mjs" "$ROOT/deploy" "$WORK/out"

tsc=("$WORK/node_modules/.bin/tsc" --strict --noEmit --skipLibCheck
  --module nodenext --moduleResolution nodenext --target es2020)
if "${tsc[@]}" "$WORK/out/selftest-unknown-field.ts" >"$WORK/out/selftest.log" 2>&1; then
  echo "test-k8s: self-test failed: tsc accepted a misspelt field" >&2
  exit 1
fi
grep -q "readinesProbe" "$WORK/out/selftest.log" ||
  { cat "$WORK/out/selftest.log" >&2; echo "test-k8s: self-test: unexpected tsc error" >&2; exit 1; }
"${tsc[@]}" "$WORK/out/manifests.ts"
echo "test-k8s: every object of deploy/k8s and its overlays matches the Kubernetes API types"
