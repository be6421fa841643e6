#!/usr/bin/env bash
# npm run test:compose — builds the sidecar image and runs docker-compose.yml for real.
#
# No container registry is reachable here, so the base images are built locally:
#   - a Debian bookworm root file system (debootstrap --variant=minbase, from the mirror of
#     this machine's own apt sources), cached as a tarball in $HU_COMPOSE_CACHE
#     (default /var/cache/haproxy-updater-compose) and made an image with `docker import`;
#   - on it: a Node image (this machine's node + npm) for node:22-bookworm-slim, a HAProxy
#     image with the official image's layout from Debian's haproxy, an etcd image from
#     Debian's etcd-server, and the demo app (test/compose/images/demo-app.mjs).
# Then the project's Dockerfile is built with those as build arguments and the compose file
# is started with test/compose/docker-compose.test.yml (host networking, local images,
# loopback ports picked here), and test/compose/scenario.ts checks it under load.
#
# The Docker engine is private to the run: dockerd with --iptables=false --bridge=none
# --ip-forward=false, its data root, exec root and socket in a temp dir, stopped by PID at
# the end (also on failure). Nothing touches the machine's firewall, no bridge is created.
# Afterwards the run checks that no container, image, volume, mount or process is left.
#
# Quiet on success (a summary line and the figures); every log on failure.
# Needs root (dockerd). Installs docker.io, docker-compose and debootstrap when missing.
set -euo pipefail
shopt -s inherit_errexit # a failure inside $(...) fails the step too
export PATH="$PATH:/usr/sbin:/sbin"
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
HERE="$ROOT/test/compose"
CACHE="${HU_COMPOSE_CACHE:-/var/cache/haproxy-updater-compose}"
SUITE=bookworm

if [ "$(id -u)" -ne 0 ]; then
  echo "test:compose: needs root (it runs a private dockerd)" >&2
  exit 1
fi

WORK="$(mktemp -d /tmp/hu-compose.XXXXXX)"
LOGS="$WORK/logs"
mkdir -p "$LOGS"
STEP=setup
DOCKERD_PID=
STARTED=$(date +%s)

log() { printf '%s %s\n' "$(date -u +%H:%M:%S)" "$*" >>"$LOGS/steps.log"; }
# step <name> <cmd...>: runs a command with its output in $LOGS/<name>.log
step() {
  local name="$1"
  shift
  STEP="$name"
  log "begin $name"
  "$@" >>"$LOGS/$name.log" 2>&1
  log "end $name"
}

dump_logs() {
  echo "test:compose: FAILED in step '$STEP' — logs follow" >&2
  for f in "$LOGS"/*.log; do
    [ -s "$f" ] || continue
    echo "===== $(basename "$f") =====" >&2
    tail -n 400 "$f" >&2
  done
}

# ----------------------------------------------------------------------------- cleanup

stop_dockerd() {
  [ -n "$DOCKERD_PID" ] || return 0
  if kill -0 "$DOCKERD_PID" 2>/dev/null; then
    kill -TERM "$DOCKERD_PID" 2>/dev/null || true
    for _ in $(seq 1 150); do
      kill -0 "$DOCKERD_PID" 2>/dev/null || break
      sleep 0.2
    done
    if kill -0 "$DOCKERD_PID" 2>/dev/null; then
      log "dockerd $DOCKERD_PID did not stop on SIGTERM: SIGKILL"
      kill -KILL "$DOCKERD_PID" 2>/dev/null || true
      sleep 1
    fi
  fi
  DOCKERD_PID=
}

# Everything below $WORK that is still alive or mounted (dockerd's containerd, shims,
# container processes all carry a path below $WORK in their command line or root).
leftovers() {
  local found=0 pid
  for pid in $(ls /proc | grep -E '^[0-9]+$'); do
    [ "$pid" = "$$" ] && continue
    if { tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null | grep -qF "$WORK"; then
      echo "process left: $pid $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)"
      found=1
    fi
  done
  # Container processes (host networking: same PID namespace view) by their cgroup.
  if [ -s "$WORK/container-ids" ]; then
    for pid in $(grep -lFf "$WORK/container-ids" /proc/[0-9]*/cgroup 2>/dev/null | cut -d/ -f3); do
      echo "container process left: $pid $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)"
      found=1
    done
  fi
  if grep -F "$WORK" /proc/self/mountinfo; then found=1; fi
  return $found
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  set +e
  STEP="${STEP} (then teardown)"
  if [ -n "$DOCKERD_PID" ] && kill -0 "$DOCKERD_PID" 2>/dev/null; then
    if [ $rc -ne 0 ]; then
      compose ps -a >>"$LOGS/compose-ps.log" 2>&1
      compose logs --no-color --timestamps >>"$LOGS/compose-logs.log" 2>&1
    fi
    docker ps -aq --no-trunc >"$WORK/container-ids" 2>/dev/null
    {
      compose down --volumes --remove-orphans --timeout 10
      docker ps -aq | xargs -r docker rm -f
      # Tags first, then everything unused (the classic builder's intermediate images are
      # parents of the tagged ones: removing them by ID in one go fails on the order).
      for _ in 1 2 3; do
        docker images --format '{{.Repository}}:{{.Tag}}' | grep -v '<none>' | xargs -r docker rmi -f
        docker image prune -af
        [ -z "$(docker images -aq)" ] && break
      done
      docker volume ls -q | xargs -r docker volume rm -f
      docker builder prune -af
    } >>"$LOGS/teardown.log" 2>&1
    left="$(docker ps -aq; docker images -aq; docker volume ls -q)"
    if [ -n "$left" ]; then
      echo "teardown: left in the engine: $left" >>"$LOGS/teardown.log"
      rc=1
    fi
  fi
  stop_dockerd
  # dockerd bind-mounts the host's network namespace at <exec-root>/netns/default for host
  # networking and leaves it mounted on exit: release that handle (only that one).
  grep -F " $WORK/exec/netns/" /proc/self/mountinfo | awk '{print $5}' | xargs -r -n1 umount >>"$LOGS/teardown.log" 2>&1
  if ! leftovers >>"$LOGS/teardown.log" 2>&1; then
    echo "teardown: processes or mounts left below $WORK" >>"$LOGS/teardown.log"
    rc=1
  fi
  if [ $rc -ne 0 ]; then
    dump_logs
    # Unmount what a failed dockerd left so the temp dir can go (only mounts below $WORK).
    grep -F "$WORK" /proc/self/mountinfo | awk '{print $5}' | sort -r | xargs -r -n1 umount -l 2>/dev/null
  fi
  rm -rf "$WORK"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ----------------------------------------------------------------------------- tools

install_missing() {
  local missing=()
  command -v dockerd >/dev/null || missing+=(docker.io)
  command -v docker >/dev/null || missing+=(docker.io)
  command -v docker-compose >/dev/null || missing+=(docker-compose)
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  if ((${#missing[@]})); then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    # Debian's docker.io enables a system docker service; policy-rc.d / no systemd here
    # keeps it from starting, and this test never uses it.
    apt-get install -y -q --no-install-recommends $(printf '%s\n' "${missing[@]}" | sort -u)
  fi
}

# The first Debian mirror of this machine's apt sources (deb822 or one-line format).
debian_mirror() {
  local f url
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    url="$(awk '/^URIs:/ {print $2; exit}' "$f")"
    if [ -n "$url" ] && grep -qE "^Suites:.*\b$SUITE\b" "$f"; then echo "$url"; return; fi
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    url="$(awk -v s="$SUITE" '$1 == "deb" && $0 ~ " " s " " { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; exit } }' "$f")"
    if [ -n "$url" ]; then echo "$url"; return; fi
  done
  echo "test:compose: no Debian $SUITE mirror in /etc/apt/sources.list{,.d/*}" >&2
  return 1
}

# The bookworm minbase tarball, built once and cached (a run on a fresh machine builds it).
base_tarball() {
  local tar="$CACHE/$SUITE-minbase-$(dpkg --print-architecture).tar" mirror rootfs
  if [ ! -s "$tar" ]; then
    mirror="$(debian_mirror)"
    rootfs="$WORK/rootfs"
    mkdir -p "$CACHE"
    debootstrap --variant=minbase "$SUITE" "$rootfs" "$mirror" >&2
    # As the official slim images: no package lists or downloaded .debs in the layer.
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/archives/*.deb
    tar -C "$rootfs" --numeric-owner -cf "$tar.tmp" .
    mv "$tar.tmp" "$tar"
    rm -rf "$rootfs"
  fi
  echo "$tar"
}

# ----------------------------------------------------------------------------- docker

export DOCKER_HOST="unix://$WORK/docker.sock"
export DOCKER_CONFIG="$WORK/docker-config"
export COMPOSE_PROJECT_NAME="hucompose$$"
export COMPOSE_HTTP_TIMEOUT=300
mkdir -p "$DOCKER_CONFIG"

compose() {
  docker-compose --project-directory "$ROOT" -f "$ROOT/docker-compose.yml" -f "$HERE/docker-compose.test.yml" "$@"
}

start_dockerd() {
  dockerd --data-root "$WORK/docker" --exec-root "$WORK/exec" --pidfile "$WORK/docker.pid" \
    -H "$DOCKER_HOST" --iptables=false --ip6tables=false --bridge=none --ip-forward=false \
    --ip-masq=false >"$LOGS/dockerd.log" 2>&1 &
  DOCKERD_PID=$!
  for _ in $(seq 1 150); do
    if docker info >/dev/null 2>&1; then return 0; fi
    kill -0 "$DOCKERD_PID" 2>/dev/null || { echo "dockerd exited"; return 1; }
    sleep 0.2
  done
  echo "dockerd did not answer within 30 s"
  return 1
}

# free_ports N: N distinct free TCP ports on 127.0.0.1
free_ports() {
  node -e '
    const net = require("node:net");
    (async () => {
      const servers = [];
      for (let i = 0; i < Number(process.argv[1]); i++) {
        const s = net.createServer();
        await new Promise((r) => s.listen(0, "127.0.0.1", r));
        servers.push(s);
      }
      console.log(servers.map((s) => s.address().port).join(" "));
      for (const s of servers) s.close();
    })();' "$1"
}

build_images() {
  local base_tar="$1" ctx
  docker import "$base_tar" hu-test/bookworm:base
  # Node stand-in: this machine's node binary and its npm.
  ctx="$WORK/node-ctx"
  mkdir -p "$ctx"
  cp "$(readlink -f "$(command -v node)")" "$ctx/node"
  cp -a "$(dirname "$(readlink -f "$(command -v npm)")")/.." "$ctx/npm"
  # The machine's trust store (with a TLS-inspecting proxy, npm ci needs its CA).
  cp "${NODE_EXTRA_CA_CERTS:-/etc/ssl/certs/ca-certificates.crt}" "$ctx/ca-certificates.crt"
  cp "$HERE/images/node.Dockerfile" "$ctx/Dockerfile"
  docker build --network host --build-arg BASE_IMAGE=hu-test/bookworm:base -t hu-test/node:22-bookworm-slim "$ctx"
  docker build --network host --build-arg BASE_IMAGE=hu-test/bookworm:base -t hu-test/haproxy:build \
    -f "$HERE/images/haproxy.Dockerfile" "$HERE/images"
  docker build --network host --build-arg BASE_IMAGE=hu-test/bookworm:base -t hu-test/etcd:local \
    -f "$HERE/images/etcd.Dockerfile" "$HERE/images"
  docker build --network host --build-arg NODE_IMAGE=hu-test/node:22-bookworm-slim -t hu-test/demo-app:local \
    -f "$HERE/images/demo-app.Dockerfile" "$HERE/images"
  # The stand-in is tagged haproxy:<its branch>, the name docker-compose.yml derives
  # from HAPROXY_BRANCH, so the compose file's own image reference is used.
  HAPROXY_BRANCH="$(docker run --rm --network none --entrypoint haproxy hu-test/haproxy:build -v |
    sed -nE '1s/.*version ([0-9]+\.[0-9]+)\..*/\1/p')"
  [ -n "$HAPROXY_BRANCH" ] || { echo "cannot read the stand-in's HAProxy branch"; return 1; }
  docker tag hu-test/haproxy:build "haproxy:$HAPROXY_BRANCH"
  docker rmi hu-test/haproxy:build
  echo "$HAPROXY_BRANCH" >"$WORK/haproxy-branch"
}

build_project() {
  local t0 t1
  t0=$(date +%s)
  docker build --network host \
    --build-arg NODE_IMAGE=hu-test/node:22-bookworm-slim \
    --build-arg "HAPROXY_BRANCH=$HAPROXY_BRANCH" \
    -t haproxy-updater:local "$ROOT"
  t1=$(date +%s)
  echo "$((t1 - t0))" >"$WORK/build-seconds"
}

# ----------------------------------------------------------------------------- run

step install install_missing
step bootstrap bash "$ROOT/scripts/bootstrap.sh"
STEP=base-tarball
BASE_TAR="$(base_tarball 2>>"$LOGS/base-tarball.log")"
step dockerd start_dockerd
step base-images build_images "$BASE_TAR"
HAPROXY_BRANCH="$(cat "$WORK/haproxy-branch")"
export HAPROXY_BRANCH
step image build_project

read -r HU_ETCD_PORT HU_ETCD_PEER_PORT HU_HTTP_PORT HU_HTTPS_PORT HU_STATS_PORT HU_LISTEN_PORT HU_APP_A_PORT HU_APP_B_PORT \
  < <(free_ports 8)
export HU_ETCD_PORT HU_ETCD_PEER_PORT HU_HTTP_PORT HU_HTTPS_PORT HU_STATS_PORT HU_LISTEN_PORT HU_APP_A_PORT HU_APP_B_PORT
export HU_ETCD_IMAGE=hu-test/etcd:local HU_APP_IMAGE=hu-test/demo-app:local
export HU_COMPOSE_ROOT="$ROOT" HU_COMPOSE_OVERRIDE="$HERE/docker-compose.test.yml" HU_DOCKER_ROOT="$WORK/docker"
IMAGE_BYTES="$(docker image inspect -f '{{.Size}}' haproxy-updater:local)"

STEP=scenario
log "begin scenario"
node --import tsx "$HERE/scenario.ts" >"$WORK/figures.txt" 2>>"$LOGS/scenario.log" || {
  cat "$WORK/figures.txt" >>"$LOGS/scenario.log"
  exit 1
}
log "end scenario"

FIGURES="$(cat "$WORK/figures.txt")"
BUILD_SECONDS="$(cat "$WORK/build-seconds")"
STEP=teardown
trap - EXIT
cleanup_rc=0
(cleanup) || cleanup_rc=$?
if [ $cleanup_rc -ne 0 ]; then exit $cleanup_rc; fi

echo "test:compose: ok in $(($(date +%s) - STARTED)) s (HAProxy $HAPROXY_BRANCH stand-in; no container, image, volume, mount or process left)"
echo "  image haproxy-updater:local: $((IMAGE_BYTES / 1000000)) MB; project image build ${BUILD_SECONDS} s"
printf '%s\n' "$FIGURES" | sed 's/^/  /'
