#!/usr/bin/env bash
# Installs every Debian 12 package cbloss needs to build, test and run.
# The one list of dependencies: README, .ci/run and docker/Dockerfile all call
# this script. Idempotent; run as root (or with sudo available).
#
#   scripts/install-deps.sh            # build + test dependencies (default)
#   scripts/install-deps.sh --runtime  # only what the server binaries need at run time
#   scripts/install-deps.sh [--runtime] --print  # print the list, install nothing
set -euo pipefail

BUILD_PACKAGES=(
  build-essential cmake ninja-build pkg-config git ca-certificates
  protobuf-compiler protobuf-compiler-grpc libprotobuf-dev libgrpc++-dev
  libabsl-dev libspdlog-dev libfmt-dev nlohmann-json3-dev
  libsqlite3-dev sqlite3
  libgtest-dev libgmock-dev googletest libbenchmark-dev
  libhwy-dev libcli11-dev
  # Golden files, Python client and tests: PyTorch float64 is the oracle.
  python3 python3-numpy python3-torch python3-grpcio python3-protobuf python3-sklearn
  python3-matplotlib python3-pip python3-setuptools python3-venv openssl
  # Fuzzing (scripts/fuzz.sh): clang and its libFuzzer runtime.
  clang libclang-rt-14-dev
  # Production: metrics HTTP endpoint, lint of the deployment files.
  libcpp-httplib-dev shellcheck yamllint
  # Shared dataset store: libpq, and the PostgreSQL server the tests start.
  postgresql libpq-dev
)

# What cbloss-server and cbloss link against (tests/deploy checks this list
# against `ldd` of the built binaries), as docker/Dockerfile's runtime stage
# installs it.
RUNTIME_PACKAGES=(
  libgrpc++1.51 libprotobuf32 libabsl20220623 libspdlog1.10 libfmt9
  libsqlite3-0 libcpp-httplib0.11 libhwy1 libpq5 ca-certificates
)

packages=("${BUILD_PACKAGES[@]}")
print_only=false
for arg in "$@"; do
  case "$arg" in
    --runtime) packages=("${RUNTIME_PACKAGES[@]}") ;;
    --print) print_only=true ;;
    *)
      echo "install-deps: unknown argument '$arg' (use --runtime, --print)" >&2
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

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]} == 0)); then
  echo "install-deps: all ${#packages[@]} packages already installed"
  exit 0
fi

echo "install-deps: installing ${#missing[@]} packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
