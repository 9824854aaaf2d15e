#!/usr/bin/env python3
"""make bench: W1-W4 (../shared/BENCH.md), each beside its physical reference
in the same run, three rounds, then the medians.

- W1 beside pgbench (one single-row INSERT per transaction, same clients).
- W2 on its own (its reference is the ideal: steps x latency).
- W3 beside a plain broadcast SSE server (inside `agentrun bench w3`).
- W4 beside pgbench at the clients W4 uses.

Uses the release build and the PostgreSQL of scripts/ensure-postgres.sh (or
BENCH_SERVER_URL). ROUNDS (3), W2_RUNS (10000) and W1_SECONDS (10) tune it.
"""

import os
import re
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "agentrun")
ROUNDS = int(os.environ.get("ROUNDS", "3"))
W2_RUNS = os.environ.get("W2_RUNS", "10000")
W1_SECONDS = os.environ.get("W1_SECONDS", "10")


def sh(command, **kwargs):
    return subprocess.run(command, check=True, capture_output=True, text=True, cwd=ROOT, **kwargs).stdout


def number(pattern, text):
    match = re.search(pattern, text)
    return float(match.group(1).replace(",", "")) if match else float("nan")


def main():
    print("building the release binary", flush=True)
    subprocess.run(["cargo", "build", "--release", "--bin", "agentrun"], check=True, cwd=ROOT)
    server = os.environ.get("BENCH_SERVER_URL") or sh(["scripts/ensure-postgres.sh"]).strip()
    url = f"{server}/agentrun_bench"
    subprocess.run(["psql", f"{server}/postgres", "-qc", "CREATE DATABASE agentrun_bench"],
                   capture_output=True, cwd=ROOT)
    sh(["psql", url, "-qc", "CREATE TABLE IF NOT EXISTS pgbench_reference (id bigserial PRIMARY KEY, v int NOT NULL)"])
    script = os.path.join(ROOT, ".agentrun", "pgbench-insert.sql")
    os.makedirs(os.path.dirname(script), exist_ok=True)
    with open(script, "w") as f:
        f.write("INSERT INTO pgbench_reference (v) VALUES (1);\n")
    env = dict(os.environ, BENCH_DATABASE_URL=url)

    def pgbench(clients, seconds):
        out = sh(["pgbench", "-n", "-c", str(clients), "-j", "2", "-T", str(seconds), "-f", script, url])
        return number(r"tps = ([\d.]+)", out)

    rows = {k: [] for k in ["w1", "w1_p50", "w1_8_p50", "pgbench", "ratio", "w2_x", "w2_lag", "w2_rss",
                            "w2_lost", "w3_p50", "w3_p99", "w3_ref_p99", "w3_bad", "w4_best", "w4_dups", "pgbench4"]}
    for round_no in range(1, ROUNDS + 1):
        print(f"== round {round_no} ==", flush=True)
        w1 = sh([BIN, "bench", "w1", "--concurrency", "64", "--seconds", W1_SECONDS], env=env)
        print(w1, end="", flush=True)
        w1_8 = sh([BIN, "bench", "w1", "--concurrency", "8", "--seconds", W1_SECONDS], env=env)
        reference = pgbench(64, int(W1_SECONDS))
        print(f"-- pgbench, 64 clients: {reference:,.0f} tps", flush=True)
        rows["w1"].append(number(r"steps/s\s+([\d.]+)", w1))
        rows["w1_p50"].append(number(r"overhead p50\s+([\d.]+)", w1))
        rows["w1_8_p50"].append(number(r"overhead p50\s+([\d.]+)", w1_8))
        rows["pgbench"].append(reference)
        rows["ratio"].append(rows["w1"][-1] / reference)
        w2 = sh([BIN, "bench", "w2", "--runs", W2_RUNS], env=env)
        print(w2, end="", flush=True)
        rows["w2_x"].append(number(r"\(([\d.]+) x ideal\)", w2))
        rows["w2_lag"].append(number(r"dispatch lag p50/p99\s+[\d.]+ / ([\d.]+)", w2))
        rows["w2_rss"].append(number(r"peak RSS\s+([\d.]+)", w2))
        rows["w2_lost"].append(number(r"lost / duplicated\s+(\d+)", w2) + number(r"lost / duplicated\s+\d+ / (\d+)", w2))
        w3 = sh([BIN, "bench", "w3"], env=env)
        print(w3, end="", flush=True)
        rows["w3_p50"].append(number(r"commit to client p50/p99\s+([\d.]+)", w3))
        rows["w3_p99"].append(number(r"commit to client p50/p99\s+[\d.]+ / ([\d.]+)", w3))
        rows["w3_ref_p99"].append(number(r"broadcast SSE\s+p50/p99 [\d.]+ / ([\d.]+)", w3))
        rows["w3_bad"].append(number(r"missed / duplicated\s+(\d+)", w3) + number(r"missed / duplicated\s+\d+ / (\d+)", w3))
        w4 = sh([BIN, "bench", "w4", "--seconds", "5"], env=env)
        print(w4, end="", flush=True)
        rows["w4_best"].append(number(r"p99 < 25 ms\s+(\d+)", w4))
        rows["w4_dups"].append(number(r"duplicate runs\s+(\d+)", w4))
        rows["pgbench4"].append(pgbench(16, 5))
        print(f"-- pgbench, 16 clients: {rows['pgbench4'][-1]:,.0f} tps", flush=True)

    median = {k: statistics.median(v) for k, v in rows.items() if v}
    print()
    print(f"medians of {ROUNDS} rounds")
    print(f"  W1 steps/s            {median['w1']:,.0f} (pgbench {median['pgbench']:,.0f} tps; ratio {median['ratio']:.3f})")
    print(f"  W1 step overhead p50  {median['w1_p50']:.2f} ms at 64 runs, {median['w1_8_p50']:.2f} ms at 8")
    print(f"  W2 completion         {median['w2_x']:.2f} x ideal; dispatch lag p99 {median['w2_lag']:.0f} ms; "
          f"peak RSS {median['w2_rss']:.0f} MiB; lost or duplicated {median['w2_lost']:.0f}")
    print(f"  W3 commit to client   p50 {median['w3_p50']:.1f} ms, p99 {median['w3_p99']:.1f} ms "
          f"(broadcast reference p99 {median['w3_ref_p99']:.1f} ms); missed or duplicated {median['w3_bad']:.0f}")
    print(f"  W4 highest rate       {median['w4_best']:.0f} req/s with p99 < 25 ms; duplicate runs {median['w4_dups']:.0f} "
          f"(pgbench 16 clients {median['pgbench4']:,.0f} tps)")


if __name__ == "__main__":
    sys.exit(main())
