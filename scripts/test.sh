#!/usr/bin/env bash
# `npm test`: bootstrap, typecheck, then the version matrix (scripts/matrix.ts): the whole
# suite on bookworm's HAProxy 2.6 + etcd 3.4, then the scenario files on HAProxy 3.0, 3.2
# and 3.4 with etcd 3.5 (binaries from scripts/haproxy-versions.sh, cached). Each leg is
# labelled and timed; a failing leg fails `npm test`.
#   npm test -- unit              unit tests only (no HAProxy/etcd binaries needed)
#   npm test -- --leg 3.4         one leg only (repeatable; or env TEST_LEG=3.4,3.2)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
export PATH="$PATH:/usr/sbin:/sbin"
npx tsc -p tsconfig.json --noEmit
if [ "${1:-all}" = unit ]; then
  shopt -s nullglob
  exec node --import tsx --import ./testkit/test-logs.ts --test --test-concurrency=1 --test-reporter=spec test/unit/*.test.ts
fi
# One file at a time: integration tests start real HAProxy/etcd processes and
# measure traffic, which two cores cannot do in parallel without flakiness.
exec node --import tsx scripts/matrix.ts "$@"
