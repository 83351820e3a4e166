#!/usr/bin/env bash
# Builds the image of docker/Dockerfile and tests it for real, with podman
# (daemonless; no Docker engine needed) as root. Run by CI (.ci/run) after
# scripts/test.sh.
#
#   scripts/test-docker.sh
#
# What it checks, each a numbered check in the summary:
#   - the image runs as uid 10001 with its /data volume, HEALTHCHECK and ports;
#   - a container as docker/compose.yaml runs it (read-only root, tmpfs /tmp,
#     published ports on loopback, the default command) serves: health,
#     the sample datasets, metrics, a dataset written through the port;
#   - the image's HEALTHCHECK (docker/healthcheck.sh) reports healthy, and
#     the script fails against a dead target;
#   - SIGTERM (podman stop) drains and exits 0;
#   - the written dataset survives a container restart and a new container
#     on the same volume;
#   - TLS, as deploy/k8s/tls runs it: the server with --tls_cert/--tls_key
#     from a mounted directory, the HEALTHCHECK over TLS through
#     CBLOSS_TLS_CA, plaintext refused.
#
# No image registry is needed: the base image (localhost/debian:bookworm)
# is made once by debootstrap from the machine's Debian mirror and kept in
# podman's storage, as are the build layers, so a second run only rebuilds
# from the first changed layer. A Docker user builds the same Dockerfile on
# the registry's debian:bookworm (its default BASE_IMAGE).
#
# Needs root, and podman, runc and debootstrap
# (scripts/install-deps.sh --container-tests). Work files: build-docker/.
#
#   CBLOSS_TEST_IMAGE   the image's tag (default localhost/cbloss:test)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=$ROOT/build-docker
IMAGE=${CBLOSS_TEST_IMAGE:-localhost/cbloss:test}
BASE=localhost/debian:bookworm
NAME=cbloss-test-$$
VOLUME=cbloss-test-data-$$
start=$(date +%s)

if [[ $(id -u) != 0 ]]; then
  echo "test-docker: run as root (podman's rootful storage and networks)" >&2
  exit 2
fi
for tool in podman runc debootstrap openssl; do
  command -v "$tool" >/dev/null ||
    { echo "test-docker: $tool is missing (scripts/install-deps.sh --container-tests)" >&2; exit 2; }
done

mkdir -p "$WORK"
# Debian's default ulimits (nofile) cannot be set in every sandbox.
printf '[containers]\ndefault_ulimits = []\n' >"$WORK/containers.conf"
export CONTAINERS_CONF=$WORK/containers.conf
podman=(podman --storage-driver=vfs --runtime runc --cgroup-manager=cgroupfs)

passed=0
failed=0
check() {  # check DESCRIPTION COMMAND...: runs COMMAND, counts the result
  local what=$1
  shift
  if "$@"; then
    echo "ok   $what"
    passed=$((passed + 1))
  else
    echo "FAIL $what"
    failed=$((failed + 1))
  fi
}
quiet() { "$@" >/dev/null; }
lap() { echo "=== test-docker: $1 at $(($(date +%s) - start)) s"; }

cleanup() {
  "${podman[@]}" rm -f -t 0 "$NAME" "$NAME-2" "$NAME-tls" >/dev/null 2>&1 || true
  "${podman[@]}" volume rm -f "$VOLUME" >/dev/null 2>&1 || true
  rm -rf "$WORK/rootfs"
}
trap cleanup EXIT

# --- the base image ---------------------------------------------------------
if ! "${podman[@]}" image exists "$BASE"; then
  echo "=== test-docker: making $BASE with debootstrap (once)"
  rm -rf "$WORK/rootfs"
  debootstrap --variant=minbase bookworm "$WORK/rootfs" >"$WORK/debootstrap.log" 2>&1 ||
    { tail -30 "$WORK/debootstrap.log"; exit 1; }
  # The machine's own apt sources (with updates and security), as the
  # registry's debian:bookworm has them.
  if [[ -f /etc/apt/sources.list.d/debian.sources ]]; then
    cp /etc/apt/sources.list.d/debian.sources "$WORK/rootfs/etc/apt/sources.list.d/"
    rm -f "$WORK/rootfs/etc/apt/sources.list"
  fi
  rm -rf "$WORK"/rootfs/var/lib/apt/lists/* "$WORK"/rootfs/var/cache/apt/archives/*.deb
  tar -C "$WORK/rootfs" -c . | "${podman[@]}" import - "$BASE" >/dev/null
  rm -rf "$WORK/rootfs"
  lap "base image"
fi

# --- the build ----------------------------------------------------------------
echo "=== test-docker: building $IMAGE (log: $WORK/build.log)"
# The build stage gets a tag of its own, so that pruning the previous run's
# untagged images below keeps its layers (the package layer above all) as
# the next run's cache. Docker's image format: OCI images have no
# HEALTHCHECK.
build=("${podman[@]}" build --network=host --format docker --build-arg BASE_IMAGE="$BASE"
  -f docker/Dockerfile)
if ! { "${build[@]}" --target build -t "$IMAGE-build" . &&
  "${build[@]}" -t "$IMAGE" .; } >"$WORK/build.log" 2>&1; then
  tail -40 "$WORK/build.log"
  exit 1
fi
"${podman[@]}" image prune -f >/dev/null
lap "image built"
size=$("${podman[@]}" image inspect -f '{{.Size}}' "$IMAGE")
echo "image $IMAGE: $((size / 1000000)) MB"

inspect() { "${podman[@]}" image inspect -f "$1" "$IMAGE"; }
check "image user is 10001:10001" test "$(inspect '{{.Config.User}}')" = 10001:10001
check "image declares the /data volume" \
  grep -q '/data' <<<"$(inspect '{{json .Config.Volumes}}')"
check "image exposes 50051 and 9090" \
  grep -q '50051/tcp.*9090/tcp\|9090/tcp.*50051/tcp' <<<"$(inspect '{{json .Config.ExposedPorts}}')"
check "image HEALTHCHECK runs cbloss-healthcheck" \
  grep -q 'cbloss-healthcheck' <<<"$(inspect '{{json .Config.Healthcheck}}')"

# --- a container as docker/compose.yaml runs it -------------------------------
free_port() {
  /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
GRPC_PORT=$(free_port)
METRICS_PORT=$(free_port)
"${podman[@]}" volume create "$VOLUME" >/dev/null
run_compose_like() {  # run_compose_like NAME: detached, default command
  "${podman[@]}" run -d --name "$1" --health-interval=disable --read-only --tmpfs /tmp \
    -p "127.0.0.1:$GRPC_PORT:50051" -p "127.0.0.1:$METRICS_PORT:9090" \
    -v "$VOLUME:/data" "$IMAGE" >/dev/null
}
in_ctr() { local c=$1; shift; "${podman[@]}" exec "$c" "$@"; }
# Polls the image's HEALTHCHECK until healthy (30 s at most). The containers
# run with --health-interval=disable: podman's periodic checks need systemd
# timers, and the test runs the image's check itself (podman healthcheck run).
wait_healthy() {
  local _
  for _ in $(seq 60); do
    if "${podman[@]}" healthcheck run "$1" >/dev/null 2>&1; then
      return 0
    fi
    if [[ $("${podman[@]}" inspect -f '{{.State.Running}}' "$1") != true ]]; then
      "${podman[@]}" logs "$1" | tail -20
      return 1
    fi
    sleep 0.5
  done
  "${podman[@]}" logs "$1" | tail -20
  return 1
}
# The host side: gRPC health and metrics through the published ports.
host_cli() {
  "${podman[@]}" run --rm --network=host --no-healthcheck --entrypoint cbloss "$IMAGE" "$@"
}
metrics_have() {
  /usr/bin/python3 - "$METRICS_PORT" "$1" <<'PY'
import sys, urllib.request
body = urllib.request.urlopen("http://127.0.0.1:%s/metrics" % sys.argv[1], timeout=10).read().decode()
sys.exit(0 if sys.argv[2] in body else 1)
PY
}
exit_code() { "${podman[@]}" inspect -f '{{.State.ExitCode}}' "$1"; }
has_dataset() { in_ctr "$1" cbloss datasets get "$2" >/dev/null; }

run_compose_like "$NAME"
check "HEALTHCHECK reports healthy" wait_healthy "$NAME"
check "server runs as uid 10001" test "$(in_ctr "$NAME" sh -c 'stat -c %u /proc/1')" = 10001
check "health through the published port" \
  test "$(host_cli --target "127.0.0.1:$GRPC_PORT" health)" = SERVING
check "sample datasets loaded" \
  grep -q cifar10-lt <<<"$(host_cli --target "127.0.0.1:$GRPC_PORT" datasets list)"
check "a dataset written through the port" \
  quiet host_cli --target "127.0.0.1:$GRPC_PORT" datasets put kept --counts 7,3
check "metrics on the published port" metrics_have cbloss_build_info
check "health check script fails for a dead target" \
  test "$(in_ctr "$NAME" sh -c 'CBLOSS_HEALTH_TARGET=127.0.0.1:1 cbloss-healthcheck >/dev/null 2>&1; echo $?')" != 0
check "root filesystem is read-only" \
  test "$(in_ctr "$NAME" sh -c 'touch /x 2>/dev/null; echo $?')" != 0
check "SIGTERM (podman stop) stops it in time" quiet "${podman[@]}" stop -t 30 "$NAME"
check "exit code after SIGTERM is 0" test "$(exit_code "$NAME")" = 0
"${podman[@]}" start "$NAME" >/dev/null
check "restarted container is healthy" wait_healthy "$NAME"
check "dataset kept across a restart" has_dataset "$NAME" kept
"${podman[@]}" rm -f -t 30 "$NAME" >/dev/null
run_compose_like "$NAME-2"
check "new container on the volume is healthy" wait_healthy "$NAME-2"
check "dataset kept in the volume for a new container" has_dataset "$NAME-2" kept
"${podman[@]}" stop -t 30 "$NAME-2" >/dev/null
check "second container exits 0 on SIGTERM" test "$(exit_code "$NAME-2")" = 0
lap "plaintext container"

# --- TLS, as deploy/k8s/tls runs the image ------------------------------------
TLS=$WORK/tls
rm -rf "$TLS" && mkdir -p "$TLS"
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=cbloss test CA" \
  -keyout "$TLS/ca.key" -out "$TLS/ca.crt" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
  -keyout "$TLS/tls.key" -out "$TLS/server.csr" 2>/dev/null
printf 'subjectAltName=DNS:localhost,DNS:cbloss-headless,IP:127.0.0.1\n' >"$TLS/ext.cnf"
openssl x509 -req -in "$TLS/server.csr" -CA "$TLS/ca.crt" -CAkey "$TLS/ca.key" \
  -CAcreateserial -days 2 -extfile "$TLS/ext.cnf" -out "$TLS/tls.crt" 2>/dev/null
# Readable by uid 10001 (a Kubernetes Secret's defaultMode plus fsGroup).
chmod 0644 "$TLS/tls.key" "$TLS/tls.crt" "$TLS/ca.crt"
"${podman[@]}" run -d --name "$NAME-tls" --health-interval=disable --read-only --tmpfs /tmp \
  -v "$TLS:/etc/cbloss/tls:ro" -e CBLOSS_TLS_CA=/etc/cbloss/tls/ca.crt \
  -e CBLOSS_TLS_SERVER_NAME=localhost "$IMAGE" \
  --listen=0.0.0.0:50051 --data_dir=/tmp/data \
  --datasets_file=/etc/cbloss/datasets/sample_datasets.json \
  --tls_cert=/etc/cbloss/tls/tls.crt --tls_key=/etc/cbloss/tls/tls.key >/dev/null
check "TLS: HEALTHCHECK reports healthy over TLS" wait_healthy "$NAME-tls"
check "TLS: datasets over TLS" grep -q cifar10-lt <<<"$(in_ctr "$NAME-tls" cbloss \
  --tls_ca /etc/cbloss/tls/ca.crt --tls_server_name localhost datasets list)"
check "TLS: plaintext health is refused" \
  test "$(in_ctr "$NAME-tls" sh -c 'cbloss --timeout 3 health >/dev/null 2>&1; echo $?')" != 0
check "TLS: health check script without the CA fails" \
  test "$(in_ctr "$NAME-tls" sh -c 'CBLOSS_TLS_CA= cbloss-healthcheck >/dev/null 2>&1; echo $?')" != 0
"${podman[@]}" stop -t 30 "$NAME-tls" >/dev/null
check "TLS: exits 0 on SIGTERM" test "$(exit_code "$NAME-tls")" = 0
lap "TLS container"

echo "docker: $passed passed, $failed failed"
((failed == 0))
