# Sourced by the scripts that test against `agentrun dev` (schemathesis.sh,
# browser.sh). `start_dev_server NAME [dev arguments]` starts the built
# target/debug/agentrun dev on a fresh database (agentrun_test_NAME_<pid>)
# and a free port, waits until it answers, and sets DEV_URL,
# DEV_DATABASE_URL, DEV_STATE_DIR (server.log is there) and, from its
# dev.env, AGENTRUN_API_KEY and AGENTRUN_ADMIN_KEY. On exit the server stops
# and the database is dropped (KEEP=1 keeps the state dir). Needs
# AGENTRUN_TEST_DATABASE_URL; the server sees the caller's environment.
start_dev_server() {
  local name=$1
  shift
  DEV_ADMIN_URL="${AGENTRUN_TEST_DATABASE_URL:?set AGENTRUN_TEST_DATABASE_URL}"
  DEV_DATABASE="agentrun_test_${name}_$$"
  DEV_DATABASE_URL="${DEV_ADMIN_URL%/*}/$DEV_DATABASE"
  psql "$DEV_ADMIN_URL" -qc "DROP DATABASE IF EXISTS $DEV_DATABASE" -qc "CREATE DATABASE $DEV_DATABASE" >/dev/null
  DEV_STATE_DIR=$(mktemp -d)
  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  AGENTRUN_LISTEN="127.0.0.1:$port" DATABASE_URL="$DEV_DATABASE_URL" \
    target/debug/agentrun dev --state-dir "$DEV_STATE_DIR" "$@" > "$DEV_STATE_DIR/server.log" 2>&1 &
  DEV_SERVER_PID=$!
  trap stop_dev_server EXIT
  DEV_URL="http://127.0.0.1:$port"
  for _ in $(seq 1 150); do
    [ -f "$DEV_STATE_DIR/dev.env" ] && python3 -c "import urllib.request, sys; urllib.request.urlopen(sys.argv[1], timeout=1)" \
      "$DEV_URL/healthz" 2>/dev/null && break
    sleep 0.2
  done
  if ! kill -0 "$DEV_SERVER_PID" 2>/dev/null || [ ! -f "$DEV_STATE_DIR/dev.env" ]; then
    echo "agentrun dev did not start:" >&2
    cat "$DEV_STATE_DIR/server.log" >&2
    exit 1
  fi
  # shellcheck disable=SC1091
  source "$DEV_STATE_DIR/dev.env"
}

stop_dev_server() {
  kill "$DEV_SERVER_PID" 2>/dev/null || true
  wait "$DEV_SERVER_PID" 2>/dev/null || true
  psql "$DEV_ADMIN_URL" -qc "DROP DATABASE IF EXISTS $DEV_DATABASE" >/dev/null 2>&1 || true
  [ -n "${KEEP:-}" ] || rm -rf "$DEV_STATE_DIR"
}
