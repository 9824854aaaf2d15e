#!/usr/bin/env bash
# Runs the whole test suite: unit tests and end-to-end tests against a real
# PostgreSQL (see scripts/ensure-postgres.sh for which one).
set -euo pipefail
cd "$(dirname "$0")/.."

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

# The crash test runs the real binary.
cargo build --bin agentrun
log=$(mktemp)
set +e
cargo test --workspace 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line for the whole suite.
awk '/^test result:/ {passed += $4; failed += $6} END {printf "%d passed, %d failed\n", passed, failed}' "$log"
rm -f "$log"
exit "$status"
