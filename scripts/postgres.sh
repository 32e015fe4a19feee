#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the tests and benchmarks (Debian's postgresql package,
# installed by scripts/test-deps.sh).
#
#   scripts/postgres.sh start DIR PORT [fast]   initdb DIR (if new), start on 127.0.0.1:PORT,
#                                               print the connection string
#   scripts/postgres.sh stop DIR [keep]         stop it (immediately) and delete DIR unless "keep"
#
# "fast" turns fsync off (tests: what they check is our process crashing, not the host);
# without it the cluster is as durable as a default install (benchmarks).
# PostgreSQL refuses to run as root: as root, the cluster runs as the postgres user.
set -euo pipefail
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -x "$bin/initdb" ] || { echo "postgres.sh: PostgreSQL is not installed: run scripts/test-deps.sh" >&2; exit 1; }
as_owner() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
cmd=${1:?start or stop}
dir=${2:?the cluster directory}
case "$cmd" in
  start)
    port=${3:?a port}
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown postgres: "$dir"
    chmod 700 "$dir"
    if [ ! -f "$dir/PG_VERSION" ]; then
      as_owner "$bin/initdb" -D "$dir" -A trust -U postgres --no-sync -E UTF8 --locale C >"$dir.initdb.log" 2>&1 \
        || { cat "$dir.initdb.log" >&2; exit 1; }
    fi
    opts="-c listen_addresses=127.0.0.1 -p $port -k $dir -c max_connections=50"
    [ "${4:-}" = fast ] && opts="$opts -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    as_owner "$bin/pg_ctl" -D "$dir" -o "$opts" -l "$dir/server.log" -w -t 60 start >/dev/null \
      || { cat "$dir/server.log" >&2; exit 1; }
    echo "host=127.0.0.1 port=$port user=postgres dbname=postgres"
    ;;
  stop)
    as_owner "$bin/pg_ctl" -D "$dir" -m immediate -w stop >/dev/null 2>&1 || true
    [ "${3:-}" = keep ] || rm -rf "$dir" "$dir.initdb.log"
    ;;
  *) echo "usage: postgres.sh start DIR PORT [fast] | stop DIR [keep]" >&2; exit 2 ;;
esac
