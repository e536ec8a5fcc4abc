#!/bin/sh
# Task-available push against the real job server (serve.py --socketio):
# pickup latency (submit -> running) with push and with polling, idle
# requests per worker per second, and the server's CPU for 100 idle workers
# over 60 s, push vs polling. Prints Markdown tables (benches/run.sh puts
# them in BENCHMARKS.md). Knobs: PUSH_BENCH_WORKERS, PUSH_BENCH_IDLE_S,
# PUSH_BENCH_SAMPLES.
set -eu
cd "$(dirname "$0")/.."
echo "# $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(uname -m)"
exec cargo run --release --quiet -p outage-tests --example push_bench
