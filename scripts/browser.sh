#!/usr/bin/env bash
# Drives the web console in headless Chromium (Debian's `chromium`, installed
# here when absent) through Playwright for Python (pinned, in
# .agentrun/venv-browser), against `agentrun dev` on a fresh database and a
# free port, with the example agents plus tests/browser/agents and the mock
# LLM scripts of tests/browser/mock-llm.json (slower turns, so that a run can
# be watched and cancelled), and event streams that end every 3 s. Screenshots of every page go to
# .agentrun/artifacts/console. Prints "browser: N checks, F failures" and
# fails on any failure. Needs a built `target/debug/agentrun` and
# AGENTRUN_TEST_DATABASE_URL. Arguments pick checks by part of their name.
set -euo pipefail
cd "$(dirname "$0")/.."
PLAYWRIGHT_VERSION=1.64.1

chromium=$(command -v chromium || true)
if [ -z "$chromium" ]; then
  echo "installing Debian's chromium"
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null || ! sudo -n true 2>/dev/null; then
      echo "scripts/browser.sh: no chromium, and apt-get needs root: run 'sudo apt-get install chromium' once" >&2
      exit 1
    fi
    sudo="sudo -n"
  fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get install -y -q chromium >/dev/null ||
    { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q chromium >/dev/null; }
  chromium=$(command -v chromium)
fi
echo "browser tests use $("$chromium" --version 2>/dev/null || echo "$chromium")"
venv=.agentrun/venv-browser
# shellcheck source=scripts/venv.sh
source scripts/venv.sh
ensure_venv "$venv" "playwright==$PLAYWRIGHT_VERSION"

agents=.agentrun/browser-agents
rm -rf "$agents"
mkdir -p "$agents"
cp examples/agents/*.json tests/browser/agents/*.json "$agents/"
# Streams end every 3 s, so that every check also sees the console resume one.
export AGENTRUN_STREAM_MAX_SECONDS=3
# shellcheck source=scripts/dev-server.sh
source scripts/dev-server.sh
start_dev_server browser --agents "$agents" --mock-scripts tests/browser/mock-llm.json

artifacts=.agentrun/artifacts/console
rm -rf "$artifacts"
mkdir -p "$artifacts"
set +e
AGENTRUN_URL="$DEV_URL" AGENTRUN_API_KEY="$AGENTRUN_API_KEY" \
  AGENTRUN_ADMIN_KEY="$AGENTRUN_ADMIN_KEY" AGENTRUN_DATABASE_URL="$DEV_DATABASE_URL" \
  CHROMIUM="$chromium" ARTIFACTS="$artifacts" \
  "$venv/bin/python" tests/browser/console_test.py "$@"
status=$?
set -e
if [ "$status" -ne 0 ]; then
  cp "$DEV_STATE_DIR/server.log" "$artifacts/server.log"
  echo "the server's log: $artifacts/server.log"
fi
exit "$status"
