#!/usr/bin/env bash
# Prints the URL (without a database name) of a PostgreSQL server to use:
#   1. the one answering on 127.0.0.1:5432, if any (trust auth, user postgres);
#   2. otherwise a private server with its data under .agentrun/pg, started
#      on a free port (installing PostgreSQL with apt on Debian if missing).
# AGENTRUN_PRIVATE_PG=1 skips step 1. Logs go to stderr; only the URL to stdout.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
log() { echo "ensure-postgres: $*" >&2; }

answers() { # host port
  if command -v pg_isready >/dev/null 2>&1; then
    pg_isready -q -h "$1" -p "$2" -t 2
  else
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
  fi
}

if [ "${AGENTRUN_PRIVATE_PG:-0}" != 1 ] && answers 127.0.0.1 5432; then
  echo "postgres://postgres@127.0.0.1:5432"
  exit 0
fi

bindir() {
  if command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/initdb" ]; then
    pg_config --bindir
    return
  fi
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

bin=$(bindir)
if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    log "installing PostgreSQL with apt-get"
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
    bin=$(bindir)
  else
    log "PostgreSQL server binaries not found; install PostgreSQL or set DATABASE_URL"
    exit 1
  fi
fi

# The server refuses to run as root: run it as the postgres user, in a
# directory that user can reach.
as_owner=()
data="$root/.agentrun/pg"
if [ "$(id -u)" = 0 ]; then
  id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
  as_owner=(runuser -u postgres --)
  if ! runuser -u postgres -- test -x "$root"; then
    data="/tmp/agentrun-pg-$(echo "$root" | sha1sum | cut -c1-12)"
  fi
fi

port_file="$data/agentrun.port"
if [ -f "$port_file" ] && answers 127.0.0.1 "$(cat "$port_file")"; then
  echo "postgres://postgres@127.0.0.1:$(cat "$port_file")"
  exit 0
fi

mkdir -p "$data"
[ ${#as_owner[@]} -gt 0 ] && chown postgres "$data"
if [ ! -f "$data/PG_VERSION" ]; then
  log "initializing a private PostgreSQL in $data"
  "${as_owner[@]}" "$bin/initdb" -D "$data" -U postgres --auth=trust >/dev/null
fi
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"${as_owner[@]}" "$bin/pg_ctl" -D "$data" -l "$data/server.log" -w -t 60 \
  -o "-p $port -k $data -c listen_addresses=127.0.0.1 -c max_connections=300" start >&2
echo "$port" > "$port_file"
log "private PostgreSQL running on 127.0.0.1:$port (stop: pg_ctl -D $data stop)"
echo "postgres://postgres@127.0.0.1:$port"
