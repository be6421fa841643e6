#!/usr/bin/env bash
# `npm test`: bootstrap, typecheck, then unit and integration tests on node's test runner.
# `npm test -- unit` (or `bash scripts/test.sh unit`) runs the unit tests only.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
export PATH="$PATH:/usr/sbin:/sbin"
npx tsc -p tsconfig.json --noEmit
shopt -s nullglob
files=(test/unit/*.test.ts)
if [ "${1:-all}" != unit ]; then files+=(test/integration/*.test.ts); fi
# One file at a time: integration tests start real HAProxy/etcd processes and
# measure traffic, which two cores cannot do in parallel without flakiness.
exec node --import tsx --test --test-concurrency=1 --test-reporter=spec "${files[@]}"
