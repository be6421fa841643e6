#!/bin/sh
# As the official image's entry point: `haproxy ...` (or bare flags) runs as
# `haproxy -W -db ...` (master-worker, foreground); anything else runs as given.
set -e
if [ "${1#-}" != "$1" ]; then
	set -- haproxy "$@"
fi
if [ "$1" = 'haproxy' ]; then
	shift
	set -- haproxy -W -db "$@"
fi
exec "$@"
