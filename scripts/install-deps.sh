#!/usr/bin/env bash
# Installs every Debian 12 package cbloss needs to build, test and run.
# The one list of dependencies: README, .ci/run and docker/Dockerfile all call
# this script. Idempotent; run as root (or with sudo available).
#
#   scripts/install-deps.sh            # build + test dependencies (default)
#   scripts/install-deps.sh --build    # only what compiles the two binaries
#   scripts/install-deps.sh --runtime  # only what the server binaries need at run time
#   scripts/install-deps.sh --container-tests  # opt-in: what CI's image, manifest
#                                      # and ordinary-user tests need besides
#                                      # (scripts/test-docker.sh, test-k8s.sh,
#                                      # test-as-user.sh)
#   scripts/install-deps.sh [--build|--runtime|--container-tests] --print
#                                      # print the list, install nothing
#
# When every package is installed it only asks dpkg (no apt, no network), so
# a second scripts/test.sh or scripts/run.sh starts in seconds, offline.
set -euo pipefail

# What compiles cbloss-server and the cbloss CLI (docker/Dockerfile's build
# stage: `install-deps.sh --build`).
BUILD_PACKAGES=(
  build-essential cmake ninja-build pkg-config git ca-certificates
  protobuf-compiler protobuf-compiler-grpc libprotobuf-dev libgrpc++-dev
  libabsl-dev libspdlog-dev libfmt-dev nlohmann-json3-dev
  libsqlite3-dev libhwy-dev libcli11-dev libcpp-httplib-dev libpq-dev
)

# Besides, for the tests, the benchmarks and the fuzzers (the default list is
# both).
TEST_PACKAGES=(
  sqlite3 libgtest-dev libgmock-dev googletest libbenchmark-dev
  # Golden files, Python client and tests: PyTorch float64 is the oracle.
  python3 python3-numpy python3-torch python3-grpcio python3-protobuf python3-sklearn
  python3-matplotlib python3-pip python3-setuptools python3-venv openssl
  # Fuzzing (scripts/fuzz.sh): clang and its libFuzzer runtime.
  clang libclang-rt-14-dev
  # Style: the lint test checks clang-format, CI runs clang-tidy (scripts/tidy.sh).
  clang-format clang-tidy
  # Lint of the scripts and the deployment files.
  shellcheck yamllint
  # The PostgreSQL server the shared-store tests start.
  postgresql
)

# What cbloss-server and cbloss link against (tests/deploy checks this list
# against `ldd` of the built binaries), as docker/Dockerfile's runtime stage
# installs it.
RUNTIME_PACKAGES=(
  libgrpc++1.51 libprotobuf32 libabsl20220623 libspdlog1.10 libfmt9
  libsqlite3-0 libcpp-httplib0.11 libhwy1 libpq5 ca-certificates
)

# Only for CI's tests of the image, the Kubernetes manifests and the
# ordinary-user run: a daemonless container engine (podman with runc), a
# Debian root for the image's base (debootstrap), sudo, and Node.js with npm
# for the Kubernetes API schemas (npm's kubernetes-models). Neither the
# default install nor the image gets them.
CONTAINER_TEST_PACKAGES=(
  podman runc debootstrap sudo nodejs npm
)

# Only for tests and examples that need large data or a browser
# (scripts/test.sh installs them; scripts/run.sh and the image do not): the
# Fashion-MNIST files of examples/long_tail_fashion.py, and the headless
# Chromium of the dashboard's test.
TEST_EXTRA_PACKAGES=(
  dataset-fashion-mnist chromium
)

packages=("${BUILD_PACKAGES[@]}" "${TEST_PACKAGES[@]}")
print_only=false
for arg in "$@"; do
  case "$arg" in
    --build) packages=("${BUILD_PACKAGES[@]}") ;;
    --runtime) packages=("${RUNTIME_PACKAGES[@]}") ;;
    --container-tests) packages=("${CONTAINER_TEST_PACKAGES[@]}") ;;
    --test-extras) packages=("${TEST_EXTRA_PACKAGES[@]}") ;;
    --print) print_only=true ;;
    *)
      echo "install-deps: unknown argument '$arg' (use --build, --runtime, --container-tests, --test-extras, --print)" >&2
      exit 2
      ;;
  esac
done

if [[ "$print_only" == true ]]; then
  printf '%s\n' "${packages[@]}"
  exit 0
fi

SUDO=""
if [[ "$(id -u)" != 0 ]]; then
  SUDO="sudo"
fi

# One dpkg query for the whole list.
declare -A have=()
while read -r name state; do
  [[ $state == installed ]] && have[$name]=1
done < <(dpkg-query -W -f='${Package} ${db:Status-Status}\n' "${packages[@]}" 2>/dev/null || true)

missing=()
for p in "${packages[@]}"; do
  # npm also comes inside other Node.js builds' nodejs package ("Provides:
  # npm", conflicting with Debian's npm): any working npm will do.
  [[ -n ${have[$p]:-} ]] && continue
  [[ $p == npm ]] && command -v npm >/dev/null && continue
  missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  echo "install-deps: all ${#packages[@]} packages already installed"
  exit 0
fi

echo "install-deps: installing ${#missing[@]} packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
