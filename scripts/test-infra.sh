#!/usr/bin/env bash
# Tests of the Terraform deployment in infra/.
#
#   scripts/test-infra.sh check    format, validate (root module and both
#                                  examples), terraform test (mock provider),
#                                  checkov, crosscheck against the Rust code
#   scripts/test-infra.sh apply    applies examples/minimal on moto and leaves
#                                  moto running with the resources (outputs in
#                                  .agentrun/infra-outputs.json, endpoint in
#                                  .agentrun/infra-moto-endpoint)
#   scripts/test-infra.sh destroy  destroys them and stops moto
#   scripts/test-infra.sh          check, apply, then destroy (unless
#                                  AGENTRUN_INFRA_KEEP=1)
#
# Offline once the tools are installed: the AWS provider comes from a local
# mirror (AGENTRUN_TF_PLUGIN_DIR, default /opt/tf-plugins), never a registry.
# The last line of check is:
#   infra: N terraform tests passed, M failed; checkov P passed, F failed; crosscheck K checks passed
set -uo pipefail
cd "$(dirname "$0")/.."

MOTO_VERSION=5.2.5
PYTHON_HCL2_VERSION=8.1.4
CHECKOV_VERSION=3.3.30

mirror="${AGENTRUN_TF_PLUGIN_DIR:-/opt/tf-plugins}"
venv=.agentrun/venv
# checkov pins its own boto3 and bc-python-hcl2 (whose module is also named
# hcl2), so it lives apart from moto and python-hcl2.
checkov_venv=.agentrun/venv-checkov
work=.agentrun/infra-moto
mkdir -p .agentrun

# No user CLI configuration (it would name registries or mirrors of its own).
export TF_CLI_CONFIG_FILE=/dev/null TF_IN_AUTOMATION=1 CHECKPOINT_DISABLE=1
unset TF_PLUGIN_CACHE_DIR

tf_passed=0 tf_failed=0 ck_passed=0 ck_failed=0 ck_skipped=0 cross_passed=0
status=0

say() { echo "infra: $*"; }
fail() {
  echo "infra: FAILED: $*" >&2
  status=1
}
summary() {
  echo "infra: $tf_passed terraform tests passed, $tf_failed failed; checkov $ck_passed passed, $ck_failed failed; crosscheck $cross_passed checks passed"
}

loud_skip() {
  echo "################################################################################"
  echo "## infra: SKIPPED: $*"
  echo "################################################################################"
}

have_terraform() {
  if ! command -v terraform > /dev/null 2>&1; then
    loud_skip "terraform is not installed; the Terraform deployment in infra/ was NOT tested"
    return 1
  fi
  if [ ! -d "$mirror/registry.terraform.io/hashicorp/aws" ]; then
    loud_skip "no hashicorp/aws provider mirror at $mirror (set AGENTRUN_TF_PLUGIN_DIR); the Terraform deployment in infra/ was NOT tested"
    return 1
  fi
}

tf_init() {
  terraform -chdir="$1" init -backend=false -input=false -no-color -plugin-dir="$(realpath "$mirror")" > "$2" 2>&1
}

# shellcheck source=scripts/venv.sh
source scripts/venv.sh

ensure_tools() {
  ensure_venv "$venv" "moto[server]==$MOTO_VERSION" "python-hcl2==$PYTHON_HCL2_VERSION"
}

################################################################################
# check
################################################################################

check() {
  local log
  log=$(mktemp)

  if terraform fmt -check -recursive -no-color infra > "$log" 2>&1; then
    say "terraform fmt: ok"
  else
    cat "$log"
    fail "terraform fmt -check -recursive infra (run terraform fmt -recursive infra)"
  fi

  local dir
  for dir in infra infra/examples/minimal infra/examples/complete; do
    if tf_init "$dir" "$log" && terraform -chdir="$dir" validate -no-color > "$log" 2>&1; then
      say "terraform validate $dir: ok"
    else
      cat "$log"
      fail "terraform init/validate $dir"
    fi
  done

  say "terraform test (mock provider)"
  terraform -chdir=infra test -no-color > "$log" 2>&1
  local test_status=$?
  grep -E '^(  run |tests/|Success!|Failure!|Error:)' "$log" | grep -vE 'in progress|tearing down'
  local counts
  counts=$(grep -Eo '(Success|Failure)! [0-9]+ passed, [0-9]+ failed' "$log" | tail -1)
  if [ -n "$counts" ]; then
    tf_passed=$(echo "$counts" | grep -Eo '[0-9]+ passed' | grep -Eo '[0-9]+')
    tf_failed=$(echo "$counts" | grep -Eo '[0-9]+ failed' | grep -Eo '[0-9]+')
  else
    cat "$log"
    tf_failed=$((tf_failed + 1))
  fi
  if [ "$test_status" -ne 0 ] || [ "$tf_failed" -ne 0 ]; then
    cat "$log"
    fail "terraform test"
  fi

  if ensure_venv "$checkov_venv" "checkov==$CHECKOV_VERSION"; then
    local out
    out=$(mktemp -d)
    "$checkov_venv/bin/checkov" -d infra --config-file infra/.checkov.yaml \
      -o cli -o json --output-file-path "$out" > "$log" 2>&1
    if [ -f "$out/results_json.json" ]; then
      read -r ck_passed ck_failed ck_skipped < <(python3 - "$out/results_json.json" <<'PY'
import json, sys
reports = json.load(open(sys.argv[1]))
reports = reports if isinstance(reports, list) else [reports]
total = [0, 0, 0]
for report in reports:
    summary = report.get("summary", {})
    total[0] += summary.get("passed", 0)
    total[1] += summary.get("failed", 0)
    total[2] += summary.get("skipped", 0)
print(*total)
PY
)
      say "checkov $CHECKOV_VERSION: $ck_passed passed, $ck_failed failed, $ck_skipped skipped (skips: infra/.checkov.yaml)"
      if [ "$ck_failed" -ne 0 ]; then
        cat "$out/results_cli.txt"
        fail "checkov"
      fi
    else
      cat "$log"
      ck_failed=$((ck_failed + 1))
      fail "checkov did not run"
    fi
    rm -rf "$out"
  else
    loud_skip "checkov==$CHECKOV_VERSION could not be installed (offline?); checkov was NOT run"
  fi

  if ensure_tools; then
    "$venv/bin/python" infra/tests/crosscheck.py . > "$log" 2>&1
    local cross_status=$?
    cat "$log"
    cross_passed=$(grep -Eo '[0-9]+ checks passed' "$log" | tail -1 | grep -Eo '[0-9]+' || echo 0)
    [ "$cross_status" -eq 0 ] || fail "crosscheck"
  else
    loud_skip "python-hcl2==$PYTHON_HCL2_VERSION could not be installed (offline?); crosscheck was NOT run"
  fi
  rm -f "$log"
}

################################################################################
# apply / destroy on moto
################################################################################

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

moto_env() {
  export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
  unset AWS_PROFILE AWS_SESSION_TOKEN
}

stop_moto() {
  local pid
  if [ -f "$work/pids" ]; then
    for pid in $(cat "$work/pids"); do
      kill "$pid" 2> /dev/null || true
    done
    rm -f "$work/pids"
  fi
  rm -f .agentrun/infra-moto-endpoint
}

apply() {
  if ! ensure_tools; then
    loud_skip "moto[server]==$MOTO_VERSION could not be installed (offline?); the apply on moto was NOT run"
    return 0
  fi
  if [ -f "$work/pids" ]; then
    say "a previous apply is still up: destroying it first"
    destroy
  fi
  rm -rf "$work"
  mkdir -p "$work/artifacts"
  # A scratch copy of infra/, so that state, lock and the override file never
  # touch the source tree.
  tar -C . --exclude=.terraform --exclude='*.tfstate*' --exclude='*.lock.hcl' -cf - infra migrations | tar -C "$work" -xf -

  local moto_port proxy_port endpoint
  moto_port=$(free_port)
  proxy_port=$(free_port)
  endpoint="http://127.0.0.1:$proxy_port"
  MOTO_IAM_LOAD_MANAGED_POLICIES=true "$venv/bin/moto_server" -H 127.0.0.1 -p "$moto_port" > "$work/moto.log" 2>&1 &
  echo $! > "$work/pids"
  "$venv/bin/python" scripts/moto-tf.py proxy "$proxy_port" "http://127.0.0.1:$moto_port" > "$work/proxy.log" 2>&1 &
  echo $! >> "$work/pids"
  if ! "$venv/bin/python" scripts/moto-tf.py wait "$endpoint/moto-api/"; then
    cat "$work/moto.log" "$work/proxy.log"
    stop_moto
    fail "moto did not start"
    return 1
  fi
  # State machines executed for real, so a run can go through what Terraform
  # creates. Set before any resource exists: moto keeps executable state
  # machines in a backend of their own.
  "$venv/bin/python" - "$endpoint" <<'PY'
import json, sys, urllib.request
request = urllib.request.Request(
    sys.argv[1] + "/moto-api/config",
    data=json.dumps({"stepfunctions": {"execute_state_machine": True}}).encode(),
    headers={"Content-Type": "application/json"}, method="POST")
urllib.request.urlopen(request)
PY
  echo "$endpoint" > .agentrun/infra-moto-endpoint
  say "moto $MOTO_VERSION at $endpoint (Step Functions gaps answered by scripts/moto-tf.py)"

  moto_env
  "$venv/bin/python" scripts/moto-tf.py zips "$work/artifacts"
  local secret_arn
  secret_arn=$("$venv/bin/python" scripts/moto-tf.py secret "$endpoint" agentrun-moto-database-url \
    "${AGENTRUN_TEST_DATABASE_URL:-postgres://agentrun@127.0.0.1:5432/agentrun}") || {
    stop_moto
    fail "cannot create the database URL secret on moto"
    return 1
  }

  local example=$work/infra/examples/minimal
  sed "s|MOTO_ENDPOINT|$endpoint|g" infra/tests/moto/moto_override.tf > "$example/moto_override.tf"
  cat > "$example/terraform.tfvars.json" <<EOF
{
  "region": "us-east-1",
  "name": "agentrun-moto",
  "database_url_secret_arn": "$secret_arn",
  "artifacts_dir": "$(realpath "$work/artifacts")",
  "run_migrations": false,
  "deletion_protection": false
}
EOF

  if ! tf_init "$example" "$work/init.log"; then
    cat "$work/init.log"
    stop_moto
    fail "terraform init on moto"
    return 1
  fi
  local started=$SECONDS
  if ! terraform -chdir="$example" apply -auto-approve -input=false -no-color > "$work/apply.log" 2>&1; then
    tail -60 "$work/apply.log"
    fail "terraform apply on moto (log: $work/apply.log)"
    destroy
    return 1
  fi
  local apply_seconds=$((SECONDS - started))
  # Managed resources (data sources are listed too, with a data. prefix).
  local resources data_sources
  resources=$(terraform -chdir="$example" state list | grep -cv '\bdata\.')
  data_sources=$(terraform -chdir="$example" state list | grep -c '\bdata\.')
  terraform -chdir="$example" output -json > .agentrun/infra-outputs.json
  echo "$resources $apply_seconds" > "$work/apply.stats"
  say "moto apply of examples/minimal: $resources resources (and $data_sources data sources) in ${apply_seconds}s; outputs in .agentrun/infra-outputs.json"
}

destroy() {
  local example=$work/infra/examples/minimal
  if [ ! -f "$work/pids" ] || [ ! -d "$example/.terraform" ]; then
    say "nothing applied on moto: nothing to destroy"
    stop_moto
    return 0
  fi
  moto_env
  local started=$SECONDS
  if terraform -chdir="$example" destroy -auto-approve -input=false -no-color > "$work/destroy.log" 2>&1; then
    local left
    left=$(terraform -chdir="$example" state list | wc -l)
    say "moto destroy: $((SECONDS - started))s, $left resources left"
    [ "$left" -eq 0 ] || fail "terraform destroy on moto left $left resources"
  else
    tail -40 "$work/destroy.log"
    fail "terraform destroy on moto (log: $work/destroy.log)"
  fi
  stop_moto
}

################################################################################

command=${1:-all}
case "$command" in
  check | apply | destroy | all) ;;
  *)
    echo "usage: $0 [check|apply|destroy]" >&2
    exit 2
    ;;
esac

if ! have_terraform; then
  [ "$command" = check ] || [ "$command" = all ] && summary
  exit 0
fi

case "$command" in
  check)
    check
    summary
    ;;
  apply) apply ;;
  destroy) destroy ;;
  all)
    check
    if apply && [ "${AGENTRUN_INFRA_KEEP:-}" != 1 ]; then
      destroy
    elif [ "${AGENTRUN_INFRA_KEEP:-}" = 1 ]; then
      say "AGENTRUN_INFRA_KEEP=1: moto keeps running at $(cat .agentrun/infra-moto-endpoint 2> /dev/null); run $0 destroy when done"
    fi
    summary
    ;;
esac
exit "$status"
