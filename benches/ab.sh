#!/usr/bin/env bash
# The library worker's CPU per task, before and after a change, interleaved
# on the real server (a quicker check than run.sh, which measures all):
#
#   bash benches/ab.sh [BASE] [ROUNDS] [TASKS]
#
# BASE (default main's b1a007a) is built from `git archive` as run.sh does;
# this tree's worker is built as it is. Each round drains TASKS (300) tasks
# with each build, the order alternating; prints CPU per task (schedstat),
# context switches per task and tasks/s per run, then the medians. With
# AB_STRACE=1 it also counts each build's system calls per task over one
# more drain each (`strace -f -c`; strace slows the drain, not the counts).
set -euo pipefail
export PYTHONDONTWRITEBYTECODE=1
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$(pwd)
BASE=${1:-b1a007a}
ROUNDS=${2:-5}
TASKS=${3:-300}
out=target/bench-ab
mkdir -p "$out"
venv=${OUTAGE_JOBSERVER_VENV:-$root/target/jobserver-venv}
py=$venv/bin/python
[ -x "$py" ] || { echo "no job server venv at $venv: run benches/run.sh once" >&2; exit 1; }

cargo build --release --quiet -p outage-tests --example bench_worker
cp target/release/examples/bench_worker "$out/after"
rm -rf "$out/src" && mkdir -p "$out/src"
git archive "$BASE" | tar -x -C "$out/src"
cp tests/examples/bench_worker.rs "$out/src/tests/examples/"
(cd "$out/src" && cargo build --release --quiet -p outage-tests --example bench_worker --target-dir "$root/target/bench-base-target")
cp target/bench-base-target/release/examples/bench_worker "$out/before"

echo "== load before: $(cut -d' ' -f1-3 /proc/loadavg)"
"$py" benches/drain.py -n "$TASKS" --rounds "$ROUNDS" --idle-seconds 0 --kinds base,lib \
    --lib-bin "$out/after" --base-bin "$out/before" --cli-bin /bin/false --json "$out/ab.json"
echo "== load after: $(cut -d' ' -f1-3 /proc/loadavg)"
"$py" - "$out/ab.json" <<'PY'
import json, statistics, sys
d = json.load(open(sys.argv[1]))
name = {"base": "before", "lib": "after"}
for kind in ("base", "lib"):
    runs = [r for r in d["drain"] if r["kind"] == kind]
    cpu = [r["cpu_ms_per_task"] for r in runs]
    ctx = [r["voluntary_ctx_per_task"] + r["involuntary_ctx_per_task"] for r in runs]
    tps = [r["tasks_per_s"] for r in runs]
    print(f"{name[kind]:6}  CPU ms/task {statistics.median(cpu):.3f} ({min(cpu):.3f}-{max(cpu):.3f})"
          f"  ctx/task {statistics.median(ctx):.1f}  tasks/s {statistics.median(tps):.1f}")
rounds = sorted({r["round"] for r in d["drain"]})
ratios = []
for k in rounds:
    b = [r["cpu_ms_per_task"] for r in d["drain"] if r["round"] == k and r["kind"] == "base"]
    a = [r["cpu_ms_per_task"] for r in d["drain"] if r["round"] == k and r["kind"] == "lib"]
    if a and b:
        ratios.append(b[0] / a[0])
print(f"before / after, per round: {statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})")
PY

if [ -n "${AB_STRACE:-}" ]; then
    for b in before after; do
        cat >"$out/strace-$b.sh" <<SH
#!/bin/sh
strace -f -c -o "$root/$out/strace-$b.txt" -p \$\$ 2>/dev/null &
sleep 0.5
exec "$root/$out/$b" "\$@"
SH
        chmod +x "$out/strace-$b.sh"
        "$py" benches/drain.py -n "$TASKS" --rounds 1 --idle-seconds 0 --kinds base \
            --base-bin "$out/strace-$b.sh" --lib-bin /bin/false --cli-bin /bin/false --json "$out/strace.json" >/dev/null
        sleep 1
        echo "== $b: system calls per task (strace -f -c, $TASKS tasks)"
        awk -v n="$TASKS" 'NR>2 && $1 !~ /^-/ && NF>=5 { name=$NF; calls=$4; err=(NF==6?$5:0);
            if (name=="total") printf "   total %.1f\n", calls/n;
            else if (calls/n >= 0.5) printf "   %-16s %5.1f (%.1f failed)\n", name, calls/n, err/n }' "$out/strace-$b.txt"
    done
fi
