#!/usr/bin/env bash
# Fuzzes the HTTP API against its own OpenAPI document with schemathesis
# (pinned, in .agentrun/venv-schemathesis): `agentrun dev` on a fresh
# database and a free port, every check, once with a team key and once with
# the admin key. Prints "schemathesis: N cases, F failures" and fails on any
# failure. The admin pass runs on this throwaway database, so the teams it
# creates and changes are its own. Needs a built `target/debug/agentrun` and
# AGENTRUN_TEST_DATABASE_URL.
set -euo pipefail
cd "$(dirname "$0")/.."
SCHEMATHESIS_VERSION=4.32.5
venv=.agentrun/venv-schemathesis
if [ ! -x "$venv/bin/schemathesis" ] || ! "$venv/bin/schemathesis" --version | grep -q "$SCHEMATHESIS_VERSION"; then
  echo "installing schemathesis==$SCHEMATHESIS_VERSION into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "schemathesis==$SCHEMATHESIS_VERSION"
fi

admin_url="${AGENTRUN_TEST_DATABASE_URL:?set AGENTRUN_TEST_DATABASE_URL}"
database="agentrun_test_schemathesis_$$"
psql "$admin_url" -qc "DROP DATABASE IF EXISTS $database" -qc "CREATE DATABASE $database" >/dev/null
state_dir=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
AGENTRUN_LISTEN="127.0.0.1:$port" DATABASE_URL="${admin_url%/*}/$database" \
  target/debug/agentrun dev --state-dir "$state_dir" \
  > "$state_dir/server.log" 2>&1 &
server=$!
cleanup() {
  kill "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  psql "$admin_url" -qc "DROP DATABASE IF EXISTS $database" >/dev/null 2>&1 || true
  [ -n "${KEEP:-}" ] || rm -rf "$state_dir"
}
trap cleanup EXIT
for _ in $(seq 1 150); do
  [ -f "$state_dir/dev.env" ] && python3 -c "import urllib.request, sys; urllib.request.urlopen(sys.argv[1], timeout=1)" \
    "http://127.0.0.1:$port/healthz" 2>/dev/null && break
  sleep 0.2
done
# shellcheck disable=SC1091
source "$state_dir/dev.env"
base="http://127.0.0.1:$port"

cases=0
failures=0
run_pass() {
  local name=$1 key=$2
  shift 2
  set +e
  "$venv/bin/schemathesis" --config-file scripts/schemathesis.toml run "$base/openapi.json" \
    --checks all --exclude-checks ignored_auth \
    --phases examples,coverage,fuzzing --max-examples 30 --seed 1 \
    --request-timeout 10 --suppress-health-check all --no-color \
    -H "Authorization: Bearer $key" \
    "$@" > "$state_dir/$name.out" 2>&1
  local status=$?
  set -e
  local counted
  # The summary says "N generated, F found F unique failures" (or no failures).
  counted=$(python3 - "$state_dir/$name.out" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
generated = re.search(r"(\d+) generated", text)
found = re.search(r"found (\d+) unique failures", text)
print(generated.group(1) if generated else 0, found.group(1) if found else 0)
PY
)
  read -r pass_cases pass_failures <<< "$counted"
  cases=$((cases + pass_cases))
  failures=$((failures + pass_failures))
  echo "schemathesis ($name key): $pass_cases cases, $pass_failures failures, exit $status"
  if [ "$status" -ne 0 ] || [ "$pass_failures" -ne 0 ]; then
    tail -n 80 "$state_dir/$name.out"
    failures=$((failures + (pass_failures == 0)))
  fi
}
run_pass team "$AGENTRUN_API_KEY" --exclude-path-regex '^/v1/admin'
run_pass admin "$AGENTRUN_ADMIN_KEY" --include-path-regex '^/v1/admin'
echo "schemathesis: $cases cases, $failures failures"
[ "$failures" -eq 0 ]
