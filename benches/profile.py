#!/usr/bin/env python3
"""Where the host library worker's CPU goes while it drains queued no-op
tasks from the real server: a `perf` profile of the worker's threads, by
bucket, and its system calls per task (`strace -c -f`). Either tool may be
missing; what was not measured is left out (and said so).

    profile.py --lib-bin target/bench-prof/release/examples/bench_worker --json OUT
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import drain  # noqa: E402  (imports bench_python_worker, so run it with the server's venv)

bpw = drain.bpw

# Self time by symbol, in buckets (first match wins).
BUCKETS = [
    ("kernel: switching threads in and out (sleep/wake per request)", lambda s: re.search(r"\[k\] (finish_task_switch|__schedule|schedule|_raw_spin_unlock_irq$)", s)),
    ("kernel: TCP over loopback, epoll, timers, other system-call work", lambda s: s.startswith("[k]")),
    ("URL parsing (surf: url, idna)", lambda s: re.search(r"\burl::|idna::|percent_encoding", s)),
    ("allocation and copying (malloc, free, memmove)", lambda s: re.search(r"malloc|free|_int_|memmove|memcpy|memset|realloc|alloc::raw_vec|tcache|unlink_chunk|memalign", s)),
    ("formatting (core::fmt)", lambda s: re.search(r"core::fmt|alloc::fmt|fmt::write|Formatter", s)),
    ("our HTTP/1.1 client (h1) and Http adapter", lambda s: re.search(r"outage_runtime_std::(h1|http)|httparse", s)),
    ("surf / http-types", lambda s: re.search(r"surf::|http_types|http_client", s)),
    ("JSON (serde_json)", lambda s: re.search(r"serde_json|serde::", s)),
    ("worker adapter and API (runtime-std)", lambda s: re.search(r"outage_runtime_std", s)),
    ("outage-core (driver, lifecycle, machine)", lambda s: re.search(r"outage_core", s)),
    ("executor and reactor (async-io, async-std, polling)", lambda s: re.search(r"async_io|async_std|async_executor|async_global|polling::|concurrent_queue|parking|async_task|futures_lite|event_listener", s)),
    ("libc system-call wrappers", lambda s: re.search(r"__libc|syscall|epoll_|clock_gettime|recv|send|timerfd|write|read", s)),
]


def run_worker(wrap: list[str], binary: str, n: int) -> None:
    srv = drain.Server()
    try:
        with bpw.new_client(srv) as c:
            drain.preregister(c, "lib")
            drain.submit(c, n)
            p = subprocess.Popen(wrap + [binary, srv.base_url, drain.TOKEN, drain.RUST_JOB],
                                 stdout=subprocess.PIPE, text=True)
            if not p.stdout.readline().startswith("registered"):
                raise RuntimeError("the worker did not register")
            bpw.wait_completed(c, n, timeout=600)
            # The worker is the wrapper's child: stop it, the wrapper follows.
            subprocess.run(["pkill", "-INT", "-P", str(p.pid)], check=False)
            p.wait(timeout=60)
    finally:
        srv.stop()


def perf_profile(binary: str, n: int, tmp: Path) -> dict | None:
    if not shutil.which("perf"):
        return None
    data = tmp / "perf.data"
    try:
        run_worker(["perf", "record", "-q", "-F", "2999", "-o", str(data)], binary, n)
        rep = subprocess.run(
            ["perf", "report", "-i", str(data), "--no-children", "--sort", "comm,sym", "--stdio", "-g", "none"],
            capture_output=True, text=True, check=True,
        ).stdout
    except (subprocess.CalledProcessError, RuntimeError, OSError) as e:
        return {"error": str(e)[:300]}
    by_bucket: dict[str, float] = {}
    by_thread: dict[str, float] = {}
    top: list[tuple[float, str]] = []
    for line in rep.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+(\S+)\s+(\[[k.]\]\s+.*)$", line)
        if not m:
            continue
        pct, comm, sym = float(m.group(1)), m.group(2), m.group(3).strip()
        by_thread[comm] = by_thread.get(comm, 0.0) + pct
        bucket = next((name for name, f in BUCKETS if f(sym)), "other")
        by_bucket[bucket] = by_bucket.get(bucket, 0.0) + pct
        top.append((pct, f"{comm}: {sym[:110]}"))
    top.sort(reverse=True)
    return {
        "by_bucket_pct": dict(sorted(by_bucket.items(), key=lambda kv: -kv[1])),
        "by_thread_pct": by_thread,
        "top": top[:12],
    }


def strace_counts(binary: str, n: int, tmp: Path) -> dict | None:
    if not shutil.which("strace"):
        return None
    out = tmp / "strace.txt"
    try:
        run_worker(["strace", "-f", "-c", "-o", str(out)], binary, n)
    except (RuntimeError, OSError) as e:
        return {"error": str(e)[:300]}
    calls: dict[str, list[int]] = {}
    for line in out.read_text().splitlines():
        f = line.split()
        if len(f) >= 5 and f[0][0].isdigit() and f[-1] != "total":
            errors = int(f[4]) if len(f) == 6 else 0
            calls[f[-1]] = [int(f[3]), errors]
    return {name: {"per_task": c / n, "errors_per_task": e / n} for name, (c, e) in
            sorted(calls.items(), key=lambda kv: -kv[1][0]) if c / n >= 0.05}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--lib-bin", required=True)
    p.add_argument("-n", type=int, default=600)
    p.add_argument("--json", type=Path, required=True)
    a = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="outage-prof-") as t:
        tmp = Path(t)
        res = {"n": a.n, "perf": perf_profile(a.lib_bin, a.n, tmp), "strace": strace_counts(a.lib_bin, a.n, tmp)}
    a.json.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
