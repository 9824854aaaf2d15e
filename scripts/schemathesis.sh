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
# shellcheck source=scripts/venv.sh
source scripts/venv.sh
ensure_venv "$venv" "schemathesis==$SCHEMATHESIS_VERSION"

# shellcheck source=scripts/dev-server.sh
source scripts/dev-server.sh
start_dev_server schemathesis
base=$DEV_URL
state_dir=$DEV_STATE_DIR

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
