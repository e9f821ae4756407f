#!/usr/bin/env bash
# A throwaway PostgreSQL for the tests, the benches and the lab (Debian's `postgresql` package):
#   postgres.sh up DIR [PORT]   initdb into DIR (as the unprivileged `postgres` user when run as root),
#                               listen on 127.0.0.1:PORT only (default 55432), trust auth on loopback;
#                               prints the admin URL (superuser `rbdbackup`, database `postgres`)
#   postgres.sh down DIR        stop it (fast shutdown) and remove DIR
#   postgres.sh url DIR         print the admin URL of a running one
# Loopback only, no password: for tests and labs, never for production (see README "Several coordinators").
set -euo pipefail
cmd=${1:?usage: postgres.sh up|down|url DIR [PORT]}
dir=${2:?usage: postgres.sh up|down|url DIR [PORT]}
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -n "$bin" ] || { echo "postgres.sh: PostgreSQL is not installed (deploy/lab/install-deps.sh postgresql)" >&2; exit 2; }

as_owner() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case "$cmd" in
  up)
    port=${3:-55432}
    if [ -f "$dir/data/postmaster.pid" ] && as_owner "$bin/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
      cat "$dir/url"; exit 0
    fi
    mkdir -p "$dir"
    [ "$(id -u)" -ne 0 ] || chown postgres: "$dir"
    as_owner "$bin/initdb" -D "$dir/data" -U rbdbackup --auth=trust -E UTF8 --no-instructions >"$dir/initdb.log" 2>&1 ||
      { cat "$dir/initdb.log" >&2; exit 1; }
    cat >>"$dir/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
max_connections = 200
fsync = on
shared_buffers = 128MB
CONF
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 start >/dev/null ||
      { tail -20 "$dir/postgres.log" >&2; exit 1; }
    echo "postgresql://rbdbackup@127.0.0.1:$port/postgres" | tee "$dir/url"
    ;;
  down)
    if [ -d "$dir/data" ]; then as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop >/dev/null 2>&1 || true; fi
    rm -rf "$dir"
    ;;
  url) cat "$dir/url" ;;
  *) echo "postgres.sh: unknown command $cmd" >&2; exit 2 ;;
esac
