#!/usr/bin/env bash
# Issue 20's side-by-side benchmark: a real Python extension (ase + numpy,
# tests/python/shift_extension.py) drained from a fresh real job server by
#   (a) zndraw_joblib's JobManager, the extension in its process,
#   (b) outage-worker --job, one python3 process per task (shift_oneshot.py),
#   (c) outage-worker --serve, one long-lived handler (outage_handler.py),
# in interleaved rounds; prints a markdown table and writes it to
# target/bench/extension.md (raw numbers: target/bench/extension.json).
#
#   bash benches/extension.sh
#
# Needs ../shared/jobserver beside this checkout, Python >= 3.11 and a Rust
# toolchain; about 3 minutes with the defaults on a 2-core machine, plus the
# release build. Knobs: BENCH_EXT_TASKS (20), BENCH_EXT_ROUNDS (3),
# BENCH_EXT_CLI_BIN (an outage-worker to use instead of building one),
# OUTAGE_JOBSERVER_VENV (the venv; default target/jobserver-venv, shared with
# benches/run.sh). A worker without --serve leaves (c) out, with a warning.
# Not part of .ci/run: too slow, and its numbers depend on the machine.
set -euo pipefail
export PYTHONDONTWRITEBYTECODE=1 # no __pycache__ in the source tree
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$(pwd)
out=target/bench
mkdir -p "$out"
rm -f "$out/extension.md" "$out/extension.json"
say() { echo "== $* (load: $(cut -d' ' -f1-3 /proc/loadavg))" >&2; }

# The job server's venv, made as benches/run.sh makes it, plus the
# extensions' own pins (ase, numpy).
# shellcheck source=benches/venv.sh
source benches/venv.sh
ext_req=tests/python/requirements-extensions.txt
if ! cmp -s "$ext_req" "$venv/outage-extensions.txt"; then
    say "installing the extensions' requirements ($ext_req)"
    "$py" -m pip install --quiet --disable-pip-version-check -r "$ext_req"
    cp "$ext_req" "$venv/outage-extensions.txt"
fi

cli=${BENCH_EXT_CLI_BIN:-}
if [ -z "$cli" ]; then
    say "building the worker"
    cargo build --release --quiet -p outage-runtime-std --features cli --bin outage-worker
    cli=target/release/outage-worker
fi

commit=$(git rev-parse --short HEAD)
git diff --quiet HEAD -- . || commit="$commit (with uncommitted changes)"
say "draining (interleaved rounds: jobmanager, oneshot, serve)"
"$py" benches/extension.py -n "${BENCH_EXT_TASKS:-20}" --rounds "${BENCH_EXT_ROUNDS:-3}" \
    --cli-bin "$cli" --commit "$commit" --json "$out/extension.json" --md "$out/extension.md"
echo "wrote $out/extension.md" >&2
