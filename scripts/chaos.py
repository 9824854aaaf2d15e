#!/usr/bin/env python3
"""make chaos: a few hundred runs with HTTP tools while `agentrun dev` is
SIGKILLed and restarted and PostgreSQL is crashed and restarted, then the
checks that nothing was lost or done twice.

Runs on a private PostgreSQL cluster (initdb; as the postgres user when
root) and the mock LLM; needs a built target/debug/agentrun. Settings from
the environment: CHAOS_RUNS (300), CHAOS_KILLS (8), CHAOS_DB_RESTARTS (4).
Prints the figures and exits non-zero when a check fails.
"""

import glob
import http.server
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "debug", "agentrun")
RUNS = int(os.environ.get("CHAOS_RUNS", "300"))
KILLS = int(os.environ.get("CHAOS_KILLS", "8"))
DB_RESTARTS = int(os.environ.get("CHAOS_DB_RESTARTS", "4"))
TERMINAL = ("succeeded", "failed", "cancelled", "timed_out")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def say(text):
    print(f"chaos: {text}", flush=True)


class Postgres:
    """A private cluster that can be crashed (immediate stop) and started."""

    def __init__(self, workdir):
        found = shutil.which("initdb") or (sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb")) or [None])[-1]
        if not found:
            sys.exit("chaos: no initdb here (install PostgreSQL's server programs)")
        self.bin = os.path.dirname(found)
        self.dir = os.path.join(workdir, "pg")
        os.makedirs(self.dir)
        self.root = os.getuid() == 0
        if self.root:
            subprocess.run(["chown", "-R", "postgres", workdir], check=True)
        self.port = free_port()
        self.cmd("initdb", "-D", f"{self.dir}/data", "-U", "postgres", "-A", "trust")
        self.start()

    def cmd(self, program, *args):
        command = [os.path.join(self.bin, program), *args]
        if self.root:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def start(self):
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c max_connections=300"
        self.cmd("pg_ctl", "-D", f"{self.dir}/data", "-l", f"{self.dir}/log", "-w", "-o", options, "start")

    def crash(self):
        self.cmd("pg_ctl", "-D", f"{self.dir}/data", "-m", "immediate", "-w", "stop")

    def url(self, database):
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def query(self, sql):
        out = subprocess.run(["psql", self.url("chaos"), "-Atc", sql], check=True, capture_output=True, text=True)
        return out.stdout.strip()


class Receiver(http.server.ThreadingHTTPServer):
    """The HTTP tool: counts calls per Idempotency-Key."""

    daemon_threads = True

    def __init__(self):
        self.counts = {}
        self.lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("content-length", 0))
                self.rfile.read(length)
                key = self.headers.get("idempotency-key", "none")
                with outer.lock:
                    outer.counts[key] = outer.counts.get(key, 0) + 1
                body = json.dumps({"ok": True, "key": key}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()


class Dev:
    def __init__(self, pg, workdir, receiver_port):
        self.pg = pg
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.state = os.path.join(workdir, "state")
        self.agents = os.path.join(workdir, "agents")
        os.makedirs(self.agents)
        with open(os.path.join(self.agents, "chaos.json"), "w") as f:
            json.dump({
                "model": "chaos",
                "instructions": "Charge twice, then answer.",
                "tools": [{"name": "charge", "kind": "http", "url": f"http://127.0.0.1:{receiver_port}/charge"}],
            }, f)
        self.scripts = os.path.join(workdir, "mock-llm.json")
        with open(self.scripts, "w") as f:
            json.dump({"chaos": {
                "turns": [
                    {"tool_calls": [{"name": "charge", "arguments": {"cents": 100}}]},
                    {"tool_calls": [{"name": "charge", "arguments": {"cents": 200}}]},
                    {"content": "done"},
                ],
                "latency_ms": [50, 400],
            }}, f)
        self.log = open(os.path.join(workdir, "dev.log"), "ab")
        self.child = None

    def start(self):
        env = dict(os.environ,
                   DATABASE_URL=self.pg.url("chaos"),
                   AGENTRUN_OUTBOUND_ALLOW="127.0.0.1",
                   AGENTRUN_RETRY_BASE_MS="200",
                   RUST_LOG="warn")
        self.child = subprocess.Popen(
            [BIN, "dev", "--listen", f"127.0.0.1:{self.port}", "--agents", self.agents,
             "--mock-scripts", self.scripts, "--state-dir", self.state],
            env=env, stdout=self.log, stderr=self.log)
        until = time.time() + 60
        while time.time() < until:
            try:
                urllib.request.urlopen(f"{self.url}/healthz", timeout=1)
                return
            except Exception:
                time.sleep(0.2)
        sys.exit("chaos: agentrun dev did not come up (see its log)")

    def kill(self):
        self.child.send_signal(signal.SIGKILL)
        self.child.wait()

    def keys(self):
        keys = {}
        with open(os.path.join(self.state, "dev.env")) as f:
            for line in f:
                line = line.strip().removeprefix("export ")
                if "=" in line:
                    name, value = line.split("=", 1)
                    keys[name] = value.strip("'\"")
        return keys


def call(method, url, key, body=None, headers=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("authorization", f"Bearer {key}")
    request.add_header("content-type", "application/json")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, json.loads(response.read() or b"null")


def submit(dev, key, n, accepted):
    """POSTs run n until it is accepted, with the same Idempotency-Key."""
    while True:
        try:
            status, run = call("POST", f"{dev.url}/v1/runs", key,
                               {"agent": "chaos", "input": f"run {n}"}, {"idempotency-key": f"chaos-{n}"})
            if status == 202:
                accepted[n] = run["id"]
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        time.sleep(0.3 + random.random())


def main():
    if not os.path.exists(BIN):
        sys.exit(f"chaos: {BIN} is missing: cargo build --bin agentrun")
    workdir = tempfile.mkdtemp(prefix="agentrun-chaos-")
    pg = Postgres(workdir)
    receiver = Receiver()
    dev = Dev(pg, workdir, receiver.server_address[1])
    dev.start()
    keys = dev.keys()
    key, admin = keys["AGENTRUN_API_KEY"], keys["AGENTRUN_ADMIN_KEY"]
    _, teams = call("GET", f"{dev.url}/v1/admin/teams", admin)
    team = teams["data"][0]["id"]
    call("PATCH", f"{dev.url}/v1/admin/teams/{team}", admin,
         {"limits": {"max_concurrent_runs": 10000, "runs_per_second": 10000.0, "run_burst": 10000}})
    say(f"{RUNS} runs, {KILLS} SIGKILLs of agentrun dev, {DB_RESTARTS} PostgreSQL crashes; work in {workdir}")

    accepted = {}
    started = time.time()
    submitters = [threading.Thread(target=submit, args=(dev, key, n, accepted), daemon=True) for n in range(RUNS)]
    for t in submitters:
        t.start()
        time.sleep(0.01)

    events = ["kill"] * KILLS + ["db"] * DB_RESTARTS
    random.shuffle(events)
    downtimes = []
    for event in events:
        time.sleep(random.uniform(1.0, 3.0))
        if event == "kill":
            dev.kill()
            time.sleep(random.uniform(0.1, 1.0))
            dev.start()
        else:
            down = random.uniform(0.4, 6.0)
            downtimes.append(down)
            pg.crash()
            time.sleep(down)
            pg.start()
    for t in submitters:
        t.join(timeout=300)
    say(f"accepted {len(accepted)} of {RUNS} runs after {time.time() - started:.0f} s of chaos")

    until = time.time() + 600
    while True:
        left = int(pg.query("SELECT count(*) FROM runs WHERE status IN ('queued', 'running')"))
        if left == 0 or time.time() > until:
            break
        time.sleep(1)
    took = time.time() - started
    # A database crash can undo a release that was not flushed yet; the
    # reconciliation (every minute) gives such a slot back.
    hot_settled_after = time.time()
    while time.time() < hot_settled_after + 90:
        held = pg.query("SELECT (SELECT count(*) FROM hot_run_slots) + "
                        "(SELECT count(*) FROM hot_token_reservations WHERE NOT settled)")
        if held == "0":
            break
        time.sleep(1)
    hot_settled_in = time.time() - hot_settled_after
    time.sleep(2)

    failures = []

    def check(ok, text):
        say(("ok   " if ok else "FAIL ") + text)
        if not ok:
            failures.append(text)

    statuses = dict(line.split("|") for line in pg.query("SELECT status, count(*) FROM runs GROUP BY status").splitlines())
    check(len(accepted) == RUNS, f"every run accepted ({len(accepted)})")
    check(int(pg.query("SELECT count(*) FROM runs")) == RUNS and len(set(accepted.values())) == RUNS,
          "one run per Idempotency-Key")
    check(set(statuses) <= set(TERMINAL), f"every run terminal: {statuses}")
    check(statuses.get("succeeded") == str(RUNS), f"every run succeeded: {statuses}")
    gaps = pg.query("SELECT count(*) FROM (SELECT run_id, min(seq) lo, max(seq) hi, count(*) n FROM run_events "
                    "GROUP BY run_id) e WHERE lo <> 1 OR hi <> n")
    check(gaps == "0", f"events 1..N in every run ({gaps} with a gap)")
    terminals = pg.query("SELECT count(*) FROM (SELECT run_id FROM run_events WHERE type IN "
                         "('run.succeeded','run.failed','run.cancelled','run.timed_out') GROUP BY run_id "
                         "HAVING count(*) <> 1) t")
    check(terminals == "0", f"exactly one terminal event per run ({terminals} otherwise)")
    steps = pg.query("SELECT count(*) FROM (SELECT run_id, max(step_no) hi, count(*) n FROM run_steps "
                     "GROUP BY run_id) s WHERE hi <> n")
    check(steps == "0", f"steps 1..K in every run ({steps} otherwise)")
    slots = pg.query("SELECT count(*) FROM hot_run_slots")
    check(slots == "0", f"slots held: {slots}")
    counted = pg.query("SELECT coalesce(sum(in_use), 0) FROM hot_slot_counts")
    check(counted == "0", f"slots counted as held: {counted}")
    reserved = pg.query("SELECT coalesce(sum(reserved), 0) FROM hot_token_days")
    open_marks = pg.query("SELECT count(*) FROM hot_token_reservations WHERE NOT settled")
    check(reserved == "0" and open_marks == "0", f"tokens reserved: {reserved} (open reservations {open_marks})")
    committed = set(pg.query("SELECT run_id || ':' || step_no || ':' || call_index FROM tool_calls").splitlines())
    check(len(committed) == 2 * RUNS, f"two tool calls committed per run ({len(committed)})")
    missing = [k for k in committed if k not in receiver.counts]
    check(not missing, f"every committed tool call reached the tool ({len(missing)} did not)")
    repeated = {k: n for k, n in receiver.counts.items() if n > 1}
    check(all(k in committed for k in receiver.counts), "every call the tool saw belongs to a committed step")
    say(f"figures: {RUNS} runs in {took:.0f} s; {KILLS} SIGKILLs; {DB_RESTARTS} database crashes of "
        f"{', '.join(f'{d:.1f}' for d in downtimes)} s; {len(receiver.counts)} tool keys, "
        f"{len(repeated)} of them called more than once (a repeat carries the same key: run:step:index); "
        f"hot state given back {hot_settled_in:.0f} s after the last run ended")
    dev.kill()
    pg.crash()
    if not failures:
        shutil.rmtree(workdir, ignore_errors=True)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
