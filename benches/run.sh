#!/usr/bin/env bash
# Measures everything in BENCHMARKS.md and writes it (and the fleet plot):
#
#   bash benches/run.sh
#
# Needs ../shared/jobserver beside this checkout, Python >= 3.11 and a Rust
# toolchain; about 10 minutes on a 2-core machine. Knobs: BENCH_TASKS (300),
# BENCH_ROUNDS (3), BENCH_IDLE_S (20), BENCH_BASE (the commit the "before"
# column is built from; empty skips it), BENCH_SKIP_FIRMWARE=1,
# BENCH_SKIP_PUSH=1.
# Not part of .ci/run: too slow, and its numbers depend on the machine.
set -euo pipefail
export PYTHONDONTWRITEBYTECODE=1 # no __pycache__ in benches/
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$(pwd)
out=target/bench
mkdir -p "$out"
rm -f "$out"/{drain,fleet,profile,meta}.json "$out/size.txt" "$out/size.rc" "$out/push.md"
TASKS=${BENCH_TASKS:-300}
ROUNDS=${BENCH_ROUNDS:-3}
IDLE=${BENCH_IDLE_S:-20}
# The last commit before the worker's driver got a thread of its own.
BASE=${BENCH_BASE-5cf3593}
say() { echo "== $* (load: $(cut -d' ' -f1-3 /proc/loadavg))" >&2; }

# The job server's venv, made as tests/src/real.rs makes it (same place,
# same marker), plus matplotlib for the plot.
# shellcheck source=benches/venv.sh
source benches/venv.sh
"$py" -c 'import matplotlib' 2>/dev/null ||
    "$py" -m pip install --quiet --disable-pip-version-check 'matplotlib==3.10.*' ||
    echo "warning: no matplotlib: the plot is left out" >&2

say "building the workers"
cargo build --release --quiet -p outage-runtime-std --features cli --bin outage-worker
cargo build --release --quiet -p outage-tests --example bench_worker
base_args=() kinds=raw,python,lib,cli
if [ -n "$BASE" ] && git cat-file -e "$BASE^{commit}" 2>/dev/null; then
    say "building the library worker of $BASE (the 'before' column)"
    rm -rf target/bench-base && mkdir -p target/bench-base
    git archive "$BASE" | tar -x -C target/bench-base
    cp tests/examples/bench_worker.rs target/bench-base/tests/examples/
    (cd target/bench-base && cargo build --release --quiet -p outage-tests --example bench_worker --target-dir "$root/target/bench-base-target")
    base_args=(--base-bin "$root/target/bench-base-target/release/examples/bench_worker")
    kinds=raw,python,lib,base,cli
fi

say "draining (interleaved rounds: $kinds)"
"$py" benches/drain.py -n "$TASKS" --rounds "$ROUNDS" --idle-seconds "$IDLE" --kinds "$kinds" \
    --lib-bin target/release/examples/bench_worker --cli-bin target/release/outage-worker \
    "${base_args[@]}" --json "$out/drain.json"

say "profiling the library worker"
"$py" benches/profile.py --lib-bin target/release/examples/bench_worker -n 1000 --json "$out/profile.json" ||
    echo "warning: no profile" >&2

say "fleet, one worker, step cost (manual clock)"
cargo bench --quiet -p outage-tests --bench fleet -- "$root/$out/fleet.json"

if [ -z "${BENCH_SKIP_FIRMWARE:-}" ]; then
    say "firmware sizes"
    rustup target add thumbv7em-none-eabihf >/dev/null 2>&1 || true
    # size.sh exits 1 when a size target is exceeded, after printing the
    # sizes: keep its output and its status (the report says so).
    rc=0
    bash runtime-embassy/firmware/size.sh >"$out/size.txt" 2>&1 || rc=$?
    echo "$rc" >"$out/size.rc"
    if ! grep -q "the worker's share" "$out/size.txt"; then
        echo "warning: size.sh measured nothing (status $rc); firmware sizes left out" >&2
        rm -f "$out/size.txt"
    fi
fi

if [ -z "${BENCH_SKIP_PUSH:-}" ]; then
    say "task-available push (100 idle workers, pickup latency)"
    sh benches/push.sh >"$out/push.md" || { echo "warning: push bench failed" >&2; rm -f "$out/push.md"; }
fi

commit=$(git rev-parse --short HEAD)
git diff --quiet HEAD -- . ':!BENCHMARKS.md' ':!benches/fleet-requests.png' || commit="$commit (with uncommitted changes)"
printf '{"finished": "%s", "commit": "%s", "base": "%s"}\n' "$(date '+%Y-%m-%d %H:%M:%S %Z')" "$commit" "$BASE" >"$out/meta.json"
say "writing BENCHMARKS.md"
"$py" benches/report.py --dir "$out" --out BENCHMARKS.md --png benches/fleet-requests.png
echo "wrote BENCHMARKS.md and benches/fleet-requests.png" >&2
