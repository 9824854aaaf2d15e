#!/usr/bin/env bash
# Runs the whole test suite: unit tests and end-to-end tests against a real
# PostgreSQL (see scripts/ensure-postgres.sh for which one).
set -euo pipefail
cd "$(dirname "$0")/.."
MOTO_VERSION=5.2.5
mkdir -p .agentrun

if [ -z "${AGENTRUN_TEST_DATABASE_URL:-}" ]; then
  if [ -n "${DATABASE_URL:-}" ]; then
    export AGENTRUN_TEST_DATABASE_URL="$DATABASE_URL"
  else
    export AGENTRUN_TEST_DATABASE_URL="$(scripts/ensure-postgres.sh)/postgres"
  fi
fi
echo "tests use PostgreSQL at ${AGENTRUN_TEST_DATABASE_URL%/*}"

# Each test makes its own database; drop the previous run's.
python3 - "$AGENTRUN_TEST_DATABASE_URL" <<'PY' || true
import subprocess, sys
url = sys.argv[1]
names = subprocess.run(["psql", url, "-Atc", "SELECT datname FROM pg_database WHERE datname LIKE 'agentrun_test_%'"],
                       capture_output=True, text=True, check=True).stdout.split()
for name in names:
    subprocess.run(["psql", url, "-qc", f'DROP DATABASE IF EXISTS "{name}"'], capture_output=True)
PY

# The AWS emulator for the cloud tests: moto in server mode, pinned, in a
# virtualenv of its own, with state-machine execution switched on.
if [ -z "${AGENTRUN_TEST_AWS_ENDPOINT:-}" ]; then
  venv=.agentrun/venv
  if [ ! -x "$venv/bin/moto_server" ]; then
    echo "installing moto[server]==$MOTO_VERSION into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q "moto[server]==$MOTO_VERSION"
  fi
  moto_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  "$venv/bin/moto_server" -H 127.0.0.1 -p "$moto_port" > .agentrun/moto.log 2>&1 &
  moto_pid=$!
  trap 'kill $moto_pid 2>/dev/null || true' EXIT
  export AGENTRUN_TEST_AWS_ENDPOINT="http://127.0.0.1:$moto_port"
  python3 - "$AGENTRUN_TEST_AWS_ENDPOINT" <<'PY'
import json, sys, time, urllib.request
endpoint = sys.argv[1]
for _ in range(100):
    try:
        urllib.request.urlopen(endpoint + "/moto-api/", timeout=1)
        break
    except Exception:
        time.sleep(0.2)
else:
    sys.exit("the AWS emulator did not start; see .agentrun/moto.log")
request = urllib.request.Request(
    endpoint + "/moto-api/config",
    data=json.dumps({"stepfunctions": {"execute_state_machine": True}}).encode(),
    headers={"Content-Type": "application/json"}, method="POST")
urllib.request.urlopen(request)
PY
fi
export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-test}" AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-test}" AWS_REGION="${AWS_REGION:-us-east-1}"
echo "tests use the AWS emulator at $AGENTRUN_TEST_AWS_ENDPOINT"

# A PostgreSQL that accepts only TLS, for the ledger's TLS test.
if tls_env=$(scripts/tls-postgres.sh); then
  eval "$tls_env"
  echo "tests use a TLS-only PostgreSQL at ${AGENTRUN_TEST_TLS_DATABASE_URL}"
else
  echo "!!! no initdb or openssl here: the ledger's TLS test will be SKIPPED !!!"
fi
stop_tls() {
  if [ -n "${AGENTRUN_TEST_TLS_DIR:-}" ]; then
    if [ "$(id -u)" -eq 0 ]; then
      runuser -u postgres -- "$AGENTRUN_TEST_TLS_PG_CTL" -D "$AGENTRUN_TEST_TLS_DIR/data" -m immediate stop >/dev/null 2>&1 || true
    else
      "$AGENTRUN_TEST_TLS_PG_CTL" -D "$AGENTRUN_TEST_TLS_DIR/data" -m immediate stop >/dev/null 2>&1 || true
    fi
    rm -rf "$AGENTRUN_TEST_TLS_DIR"
  fi
}
trap 'stop_tls; kill ${moto_pid:-} 2>/dev/null || true' EXIT

# The Terraform module: static checks, then the minimal example applied on
# its own emulator, kept up for the cloud smoke test and destroyed after.
set +e
scripts/test-infra.sh check 2>&1 | tee .agentrun/infra-check.log
infra_status=${PIPESTATUS[0]}
AGENTRUN_INFRA_KEEP=1 scripts/test-infra.sh apply
apply_status=$?
set -e
infra_status=$((infra_status || apply_status))
if [ "$apply_status" -eq 0 ] && [ -f .agentrun/infra-outputs.json ]; then
  export AGENTRUN_TEST_INFRA_OUTPUTS="$PWD/.agentrun/infra-outputs.json"
  AGENTRUN_TEST_INFRA_ENDPOINT="$(cat .agentrun/infra-moto-endpoint)"
  export AGENTRUN_TEST_INFRA_ENDPOINT
fi
trap 'scripts/test-infra.sh destroy >/dev/null 2>&1 || true; stop_tls; kill ${moto_pid:-} 2>/dev/null || true' EXIT

# The crash test runs the real binary.
cargo build --bin agentrun
log=$(mktemp)
set +e
cargo test --workspace 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e

# The API against its own OpenAPI document.
set +e
scripts/schemathesis.sh 2>&1 | tee -a "$log"
fuzz_status=${PIPESTATUS[0]}
set -e

# The web console in headless Chromium.
set +e
scripts/browser.sh 2>&1 | tee -a "$log"
browser_status=${PIPESTATUS[0]}
set -e

# One closing line for the whole suite.
summary=$(awk '/^test result:/ {passed += $4; failed += $6} END {printf "%d passed, %d failed", passed, failed}' "$log")
fuzz=$(grep '^schemathesis: ' "$log" | tail -n 1)
browser=$(grep '^browser: [0-9]* checks' "$log" | tail -n 1)
scripts/test-infra.sh destroy || infra_status=1
infra=$(grep '^infra: [0-9]* terraform tests' .agentrun/infra-check.log | tail -n 1)
echo "$summary; ${fuzz:-schemathesis: did not run}; ${browser:-browser: did not run}; ${infra:-infra: checks did not run}"
rm -f "$log"
[ "$status" -eq 0 ] && [ "$fuzz_status" -eq 0 ] && [ "$browser_status" -eq 0 ] && [ "$infra_status" -eq 0 ]
