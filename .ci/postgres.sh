#!/usr/bin/env bash
# A throw-away PostgreSQL server for the tests: installs Debian's package if missing, keeps one
# cluster in $TRAJECTORIES_PG_DIR (default: a folder under /tmp, outside the repository) on
# 127.0.0.1:$TRAJECTORIES_PG_PORT, and prints the URL of its test database on stdout.
# Idempotent: a running cluster is reused, a stopped one restarted. `postgres.sh stop` stops it.
# Trust authentication on 127.0.0.1 only and fsync off: for tests, never for data you keep.
set -euo pipefail

PORT="${TRAJECTORIES_PG_PORT:-54329}"
DIR="${TRAJECTORIES_PG_DIR:-${TMPDIR:-/tmp}/trajectories-test-pg-$(id -u)}"
DATA="$DIR/data"
LOG="$DIR/server.log"
DB=trajectories_test

say() { echo "postgres.sh: $*" >&2; }

find_bin() {
    local found
    found="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
    if [ -n "$found" ] && [ -x "$found/initdb" ]; then
        echo "$found"
    elif command -v initdb >/dev/null 2>&1; then
        dirname "$(command -v initdb)"
    fi
}

BIN="$(find_bin)"
if [ -z "$BIN" ]; then
    if [ "$(id -u)" != 0 ]; then
        say "PostgreSQL is not installed and installing it needs root (apt-get install postgresql)"
        exit 1
    fi
    say "installing PostgreSQL (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends postgresql >/dev/null
    BIN="$(find_bin)"
    [ -n "$BIN" ] || { say "apt-get installed no initdb"; exit 1; }
fi

# initdb and the server refuse to run as root: run them as the postgres user then
if [ "$(id -u)" = 0 ]; then
    OWNER=postgres
    as_owner() { runuser -u postgres -- "$@"; }
else
    OWNER="$(id -un)"
    as_owner() { "$@"; }
fi

ctl() { as_owner "$BIN/pg_ctl" -D "$DATA" "$@"; }

if [ "${1:-}" = stop ]; then
    if [ -f "$DATA/PG_VERSION" ]; then ctl -m fast stop >/dev/null 2>&1 || true; fi
    exit 0
fi

mkdir -p "$DIR"
chown "$OWNER" "$DIR"
chmod 700 "$DIR"

major="$("$BIN/postgres" --version | sed -E 's/^[^0-9]*([0-9]+).*/\1/')"
if [ -f "$DATA/PG_VERSION" ] && [ "$(cat "$DATA/PG_VERSION")" != "$major" ]; then
    say "replacing the test cluster of PostgreSQL $(cat "$DATA/PG_VERSION") by one of $major"
    rm -rf "$DATA"
fi
if [ ! -f "$DATA/PG_VERSION" ]; then
    rm -rf "$DATA"
    as_owner "$BIN/initdb" -D "$DATA" -U postgres -A trust -E UTF8 --no-locale >"$DIR/initdb.log" \
        2>&1 || { say "initdb failed; see $DIR/initdb.log"; cat "$DIR/initdb.log" >&2; exit 1; }
fi

if ! ctl status >/dev/null 2>&1; then
    rm -f "$DATA/postmaster.pid"  # stale after a crash or a container restart
    ctl -w -t 60 -l "$LOG" start -o "-c listen_addresses=127.0.0.1 -p $PORT \
        -c unix_socket_directories='$DIR' -c fsync=off -c synchronous_commit=off \
        -c full_page_writes=off -c max_connections=50" >/dev/null \
        || { say "the server did not start; see $LOG"; tail -n 20 "$LOG" >&2; exit 1; }
else
    PORT="$(sed -n 4p "$DATA/postmaster.pid")"  # the port it already listens on
fi

psql_() { as_owner "$BIN/psql" -h 127.0.0.1 -p "$PORT" -U postgres -X -q -v ON_ERROR_STOP=1 "$@"; }
if [ "$(psql_ -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$DB'")" != 1 ]; then
    psql_ -d postgres -c "CREATE DATABASE $DB" >/dev/null
fi

echo "postgresql://postgres@127.0.0.1:$PORT/$DB"
