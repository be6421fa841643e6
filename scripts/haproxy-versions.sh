#!/usr/bin/env bash
# Fetches the HAProxy branches the project supports beyond bookworm's 2.6 (3.0 from trixie,
# 3.2 from sid, 3.4 from experimental) and etcd 3.5 (sid) as Debian packages, extracts each
# with its own suite's libraries into a private root and patches the binaries' ELF
# interpreter and RPATH to that root. A wrapper script is not enough: HAProxy's master
# re-executes its own binary (/proc/self/exe) on reload, so the binary itself must find its
# libc.
#
# The machine's apt configuration is left untouched: a private sources list and lists
# directory under the cache reuse the mirror of the machine's own Debian sources (only the
# suite changes). Cached: a second run only checks the binaries and prints the env lines.
#
# Output (stdout, also written to <cache>/env): NAME=path lines
#   HAPROXY_BIN_3_0, HAPROXY_BIN_3_2, HAPROXY_BIN_3_4, ETCD_BIN, ETCDCTL_BIN
# Usage: bash scripts/haproxy-versions.sh [--cache DIR]   (env HAPROXY_VERSIONS_CACHE, default
#        /var/cache/haproxy-updater/versions); --refresh forgets the cache.
set -euo pipefail

CACHE="${HAPROXY_VERSIONS_CACHE:-/var/cache/haproxy-updater/versions}"
REFRESH=0
while (($#)); do
  case "$1" in
    --cache) CACHE="$2"; shift 2 ;;
    --refresh) REFRESH=1; shift ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "haproxy-versions: unknown argument '$1' (expected --cache DIR or --refresh)" >&2; exit 2 ;;
  esac
done
ARCH_TRIPLET=x86_64-linux-gnu
log() { echo "haproxy-versions: $*" >&2; }

# name  suite  package  binaries (inside the package)
TARGETS=(
  "haproxy-3.0 trixie       haproxy     usr/sbin/haproxy"
  "haproxy-3.2 sid          haproxy     usr/sbin/haproxy"
  "haproxy-3.4 experimental haproxy     usr/sbin/haproxy"
  "etcd-3.5    sid          etcd-server usr/bin/etcd"
  "etcd-3.5    sid          etcd-client usr/bin/etcdctl"
)

# The env lines, from roots already built; fails when a binary is missing or does not run.
emit_env() {
  local out="" v
  for v in 3.0 3.2 3.4; do
    local bin="$CACHE/haproxy-$v/usr/sbin/haproxy"
    "$bin" -v >/dev/null 2>&1 || return 1
    out+="HAPROXY_BIN_${v/./_}=$bin"$'\n'
  done
  "$CACHE/etcd-3.5/usr/bin/etcd" --version >/dev/null 2>&1 || return 1
  "$CACHE/etcd-3.5/usr/bin/etcdctl" version >/dev/null 2>&1 || return 1
  out+="ETCD_BIN=$CACHE/etcd-3.5/usr/bin/etcd"$'\n'
  out+="ETCDCTL_BIN=$CACHE/etcd-3.5/usr/bin/etcdctl"$'\n'
  printf '%s' "$out" > "$CACHE/env.tmp" && mv "$CACHE/env.tmp" "$CACHE/env"
  printf '%s' "$out"
}

if [ "$REFRESH" = 1 ]; then rm -rf "$CACHE"; fi
if [ -f "$CACHE/env" ] && emit_env; then exit 0; fi

mkdir -p "$CACHE"
if ! command -v patchelf >/dev/null 2>&1; then
  log "installing Debian's patchelf"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends patchelf >&2 \
    || { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends patchelf >&2; }
fi

# The machine's Debian mirror: the URIs of the deb822 (or one-line) source whose suite is
# this release's codename (not -security/-updates).
. /etc/os-release
mirror_uri() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk -v code="$VERSION_CODENAME" '
      BEGIN { RS=""; FS="\n" }
      { uri=""; ok=0
        for (i=1;i<=NF;i++) {
          if ($i ~ /^URIs:/) { sub(/^URIs:[ \t]*/, "", $i); split($i, u, /[ \t]+/); uri=u[1] }
          if ($i ~ /^Suites:/) { n=split($i, s, /[ \t]+/); for (j=2;j<=n;j++) if (s[j]==code) ok=1 }
        }
        if (ok && uri != "") { print uri; exit } }' "$f"
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    awk -v code="$VERSION_CODENAME" '$1=="deb" { i=2; if ($2 ~ /^\[/) { while ($i !~ /\]$/) i++; i++ } if ($(i+1)==code) { print $i; exit } }' "$f"
  done
}
MIRROR="$(mirror_uri | head -n1)"
[ -n "$MIRROR" ] || { log "no Debian source for '$VERSION_CODENAME' in /etc/apt/sources.list*: cannot find the mirror"; exit 1; }
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg

# One private apt tree per suite (experimental also needs sid: it carries only a few packages).
apt_for() {
  local suite="$1" dir="$CACHE/apt/$1"
  mkdir -p "$dir/lists/partial" "$dir/cache/archives/partial"
  : > "$dir/status"
  {
    if [ "$suite" = experimental ]; then echo "deb [signed-by=$KEYRING] $MIRROR sid main"; fi
    echo "deb [signed-by=$KEYRING] $MIRROR $suite main"
  } > "$dir/sources.list"
  APT_OPTS=(
    -o "Dir::Etc::SourceList=$dir/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
    -o "Dir::State::Lists=$dir/lists" -o "Dir::State::Status=$dir/status"
    -o "Dir::Cache=$dir/cache" -o "APT::Architecture=amd64" -o "APT::Architectures::=amd64"
    -o "Acquire::Languages=none" -o "Debug::NoLocking=1" -o "APT::Sandbox::User=root"
  )
  if [ ! -f "$dir/updated" ]; then
    log "apt-get update ($suite, private lists under $dir)"
    apt-get "${APT_OPTS[@]}" update -q >&2
    touch "$dir/updated"
  fi
}

# The package plus the libraries it needs (recursive Depends/Pre-Depends of its own suite;
# the non-library dependencies such as adduser or debconf are not needed to run the binary).
deps_of() {
  local pkg="$1"
  apt-cache "${APT_OPTS[@]}" depends --recurse --no-recommends --no-suggests --no-conflicts \
    --no-breaks --no-replaces --no-enhances "$pkg" \
    | awk '/^[a-z0-9]/ { print $1 }' | sort -u \
    | grep -E '^(lib|zlib)' | grep -Ev -- '-(dev|dbg|doc|bin|common|data)$|^libc-bin$|^libgcc-s1-|^libpam' || true
}

build_root() {
  local name="$1" suite="$2" pkg="$3" bin="$4"
  local root="$CACHE/$name" debs="$CACHE/debs/$name-$pkg"
  apt_for "$suite"
  local want="$pkg"
  if [ "$suite" = experimental ]; then want="$pkg/experimental"; fi
  mkdir -p "$debs" "$root"
  if [ ! -f "$debs/.done" ]; then
    mapfile -t libs < <(deps_of "$want")
    log "$name: apt-get download $want + ${#libs[@]} libraries: ${libs[*]}"
    (cd "$debs" && apt-get "${APT_OPTS[@]}" download -q "$want" "${libs[@]}" >&2)
    touch "$debs/.done"
  fi
  local deb
  for deb in "$debs"/*.deb; do dpkg -x "$deb" "$root"; done
  # usrmerge: libraries may sit in /lib or /usr/lib depending on the suite's packaging.
  local exe="$root/$bin"
  [ -x "$exe" ] || { log "$name: $bin missing after extracting $pkg"; exit 1; }
  if patchelf --print-interpreter "$exe" >/dev/null 2>&1; then
    local ld="$root/usr/lib/$ARCH_TRIPLET/ld-linux-x86-64.so.2"
    [ -e "$ld" ] || ld="$root/lib/$ARCH_TRIPLET/ld-linux-x86-64.so.2"
    [ -e "$ld" ] || ld="$root/lib64/ld-linux-x86-64.so.2"
    patchelf --force-rpath --set-interpreter "$ld" \
      --set-rpath "$root/usr/lib/$ARCH_TRIPLET:$root/lib/$ARCH_TRIPLET" "$exe"
  fi
}

for t in "${TARGETS[@]}"; do
  # shellcheck disable=SC2086
  build_root $t
done

# Each HAProxy: its version is the branch its root is named for, it loads only libraries
# of its own root, and a master-worker reload re-executes the patched binary.
check_haproxy() {
  local v="$1" bin="$CACHE/haproxy-$1/usr/sbin/haproxy"
  local vv; vv="$("$bin" -vv 2>&1)" || { log "haproxy-$v: -vv failed: $vv"; exit 1; }
  grep -q "^HAProxy version $v\." <<<"$vv" || { log "haproxy-$v: wrong version: $(head -n1 <<<"$vv")"; exit 1; }
  local foreign
  foreign="$(LD_TRACE_LOADED_OBJECTS=1 "$bin" 2>&1 | awk '/=>/ { print $3 }' | grep -v "^$CACHE/haproxy-$v/" || true)"
  [ -z "$foreign" ] || { log "haproxy-$v: loads libraries outside its root: $foreign"; exit 1; }
  local tmp; tmp="$(mktemp -d)"
  printf 'global\n  master-worker\n  stats socket %s/admin.sock level admin\ndefaults\n  mode http\n  timeout connect 1s\n  timeout client 1s\n  timeout server 1s\nfrontend f\n  bind unix@%s/fe.sock\n  http-request return status 200\n' "$tmp" "$tmp" > "$tmp/h.cfg"
  "$bin" -W -S "$tmp/master.sock" -f "$tmp/h.cfg" >"$tmp/out" 2>&1 &
  local pid=$! i reply=""
  for i in $(seq 50); do [ -S "$tmp/master.sock" ] && break; sleep 0.1; done
  reply="$(printf 'reload\n' | socat -t 5 - "UNIX-CONNECT:$tmp/master.sock" 2>&1 || true)"
  sleep 0.5
  local procs; procs="$(printf 'show proc\n' | socat -t 2 - "UNIX-CONNECT:$tmp/master.sock" 2>&1 || true)"
  kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
  rm -rf "$tmp"
  grep -q 'Success=1' <<<"$reply" || { log "haproxy-$v: master reload did not succeed: $reply"; exit 1; }
  grep -q '^[0-9]\+ *worker' <<<"$procs" || { log "haproxy-$v: no worker after reload: $procs"; exit 1; }
}
for v in 3.0 3.2 3.4; do check_haproxy "$v"; done
emit_env || { log "a binary does not run; see above or rerun with --refresh"; exit 1; }
