#!/usr/bin/env python3
"""Host worker vs the Python JobManager vs the raw floor, on the real server.

Run by ``benches/run.sh`` with the job server's venv (it imports
``../shared/jobserver/bench_python_worker.py`` and so ``zndraw_joblib``).

Drain: N no-op tasks are queued first (the job pre-registered by a
placeholder worker that never claims), then the worker process is started
and drains them; every run gets a fresh ``serve.py`` (fresh SQLite DB).
Rounds are interleaved (every kind once per round, the order rotated), so
a change in the machine's load hits every kind alike.

  raw     the floor: bench_python_worker.py's raw-drain (one httpx
          connection, claim -> running -> completed, no JobManager)
  python  the package's JobManager worker (bench_python_worker.py
          --role worker), a process of its own
  lib     the host library worker (tests/examples/bench_worker.rs)
  base    the same, built from an earlier commit (before a change)
  cli     the ``outage-worker`` command running /bin/true per task

Throughput comes from the server's timestamps (N / (last completed_at -
first started_at)), so it does not include the worker's start or its first
(jittered) claim wait. CPU is the worker process's own (user + system, the
sum of its threads' /proc schedstat run time, in ns); the CLI's commands are
reported apart. Context switches are summed over the worker's threads
(/proc/PID/task/*/status). Idle: a fresh server with an access log, the
worker registered and left alone with an empty queue for IDLE_S seconds,
each worker with its default intervals (Python JobManager:
polling_interval 2 s, heartbeat 30 s; ours: poll 2 s, heartbeat 30 s).

Writes one JSON file; ``benches/report.py`` turns it into tables.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
JOBSERVER = Path(os.environ.get("OUTAGE_JOBSERVER_DIR", ROOT.parent / "shared" / "jobserver"))
sys.path.insert(0, str(JOBSERVER))

import bench_python_worker as bpw  # noqa: E402
import httpx  # noqa: E402

TOKEN = "bench-token"
CLK = os.sysconf("SC_CLK_TCK")


def threads(pid: int) -> list[Path]:
    try:
        return list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return []


def cpu_ns(pid: int) -> int:
    """Run time of the process's live threads in ns (schedstat)."""
    total = 0
    for t in threads(pid):
        try:
            total += int((t / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return total


def children_cpu_s(pid: int) -> float:
    """CPU of the waited-for children (cutime + cstime), in seconds."""
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(f[13]) + int(f[14])) / CLK
    except OSError:
        return float("nan")


def ctx_switches(pid: int) -> tuple[int, int]:
    vol = invol = 0
    for t in threads(pid):
        try:
            for line in (t / "status").read_text().splitlines():
                if line.startswith("voluntary_ctxt_switches:"):
                    vol += int(line.split()[1])
                elif line.startswith("nonvoluntary_ctxt_switches:"):
                    invol += int(line.split()[1])
        except OSError:
            pass
    return vol, invol


def thread_cpu(pid: int) -> dict[str, int]:
    """Run time in ns by thread name (threads of one name summed)."""
    out: dict[str, int] = {}
    for t in threads(pid):
        try:
            name = (t / "comm").read_text().strip()
            out[name] = out.get(name, 0) + int((t / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return out


class Server(bpw.Server):
    """bench_python_worker's server, optionally with uvicorn's access log
    captured to a file (for counting requests)."""

    def __init__(self, access_log: bool = False) -> None:
        self.token = TOKEN
        self.tmp = tempfile.mkdtemp(prefix="outage-bench-")
        self.log = os.path.join(self.tmp, "access.log")
        cmd = [
            sys.executable, str(JOBSERVER / "serve.py"),
            "--port", "0", "--db", os.path.join(self.tmp, "jobs.db"),
            "--token", TOKEN, "--no-sweeper",
            *(["--access-log", "--log-level", "info"] if access_log else []),
        ]  # fmt: skip
        with open(self.log, "w") as err:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True)
        line = self.proc.stdout.readline().strip()
        if not line.startswith("listening on "):
            self.proc.kill()
            raise RuntimeError(f"server failed to start: {line!r}")
        self.base_url = line.removeprefix("listening on ")
        # uvicorn writes its access log to stdout: count the requests.
        self.requests = 0

        def count() -> None:
            for line in self.proc.stdout:
                if 'HTTP/1.1"' in line:
                    self.requests += 1

        threading.Thread(target=count, daemon=True).start()

    def requests_logged(self) -> int:
        time.sleep(0.2)  # let the counter catch up
        return self.requests


RUST_JOB = "@global:modifiers:BenchNoop"


def worker_cmd(kind: str, srv: Server, bins: dict[str, str], polling: float) -> list[str]:
    if kind == "python":
        return [
            sys.executable, bpw.__file__, "--role", "worker", "--base-url", srv.base_url,
            "--token", TOKEN, "--polling-interval", str(polling),
        ]  # fmt: skip
    if kind in ("lib", "base"):
        return [bins[kind], srv.base_url, TOKEN, RUST_JOB]
    if kind == "cli":
        return [bins["cli"], "--server", srv.base_url, "--token", TOKEN, "--job", f"{RUST_JOB}=/bin/true"]
    raise ValueError(kind)


class Proc:
    """A worker process; `registered()` waits for its registered line."""

    def __init__(self, cmd: list[str], kind: str) -> None:
        env = dict(os.environ)
        if kind == "cli":
            env["RUST_LOG"] = "warn,outage=info"
        self.kind = kind
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE if kind == "cli" else None, text=True, env=env
        )

    def registered(self) -> float:
        stream = self.proc.stderr if self.kind == "cli" else self.proc.stdout
        while True:
            line = stream.readline()
            if not line:
                raise RuntimeError(f"{self.kind} worker exited before registering")
            if "egistered" in line:
                t = time.perf_counter() - self.t0
                if self.kind == "cli":  # keep its stderr drained
                    threading.Thread(target=lambda: [None for _ in stream], daemon=True).start()
                return t

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGTERM)
        try:
            out, _ = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        return (out or "").strip()


def vm_hwm_kib(pid: int) -> int:
    return bpw.rss_kib(pid).get("VmHWM", 0)


def preregister(c: httpx.Client, kind: str) -> str:
    """The placeholder registers the job with the schema the worker sends."""
    w = c.post("/v1/joblib/workers").json()["id"]
    if kind == "python":
        name, schema = bpw.BenchNoop.__name__, bpw.BenchNoop.model_json_schema()
    else:
        name, schema = "BenchNoop", {}
    r = c.put(
        "/v1/joblib/rooms/@global/jobs",
        json={"category": "modifiers", "name": name, "schema": schema, "worker_id": w},
    )
    assert r.status_code == 201, r.text
    return w


def submit(c: httpx.Client, n: int) -> None:
    for i in range(n):
        r = c.post(f"/v1/joblib/rooms/{bpw.ROOM}/tasks/{RUST_JOB}", json={"payload": {"i": i}})
        assert r.status_code == 202, r.text


def drain(kind: str, n: int, bins: dict[str, str], polling: float) -> dict:
    if kind == "raw":
        r = bpw.scenario_raw_drain(n, TOKEN)
        return {
            "kind": kind,
            "tasks_per_s": r["server_tasks_per_s"],
            "cpu_ms_per_task": r["client_cpu_ms_per_task"],
            "completed": r["completed"],
        }
    srv = Server()
    try:
        with bpw.new_client(srv) as c:
            preregister(c, kind)
            submit(c, n)
            w = Proc(worker_cmd(kind, srv, bins, polling), kind)
            startup = w.registered()
            pid = w.proc.pid
            cpu0, ctx0, th0 = cpu_ns(pid), ctx_switches(pid), thread_cpu(pid)
            bpw.wait_completed(c, n, timeout=600)
            cpu1, ctx1, th1 = cpu_ns(pid), ctx_switches(pid), thread_cpu(pid)
            child_cpu = children_cpu_s(pid)
            hwm = vm_hwm_kib(pid)
            span = bpw.server_span(bpw.all_tasks(c))
            said = w.stop()
    finally:
        srv.stop()
    return {
        "kind": kind,
        "tasks_per_s": span["server_tasks_per_s"],
        "completed": span["completed"],
        "cpu_ms_per_task": (cpu1 - cpu0) / 1e6 / n,
        "children_cpu_ms_per_task": 1000 * child_cpu / n if kind == "cli" else None,
        "voluntary_ctx_per_task": (ctx1[0] - ctx0[0]) / n,
        "involuntary_ctx_per_task": (ctx1[1] - ctx0[1]) / n,
        "thread_cpu_ms_per_task": {k: (th1.get(k, 0) - th0.get(k, 0)) / 1e6 / n for k in th1},
        "threads": len(th1),
        "peak_rss_kib": hwm,
        "exec_to_registered_ms": 1000 * startup,
        "said": said[-200:],
    }


def idle(kind: str, seconds: float, bins: dict[str, str]) -> dict:
    srv = Server(access_log=True)
    try:
        w = Proc(worker_cmd(kind, srv, bins, polling=2.0), kind)
        w.registered()
        time.sleep(3.0)  # past the first claim and heartbeat
        pid = w.proc.pid
        req0, cpu0, ctx0 = srv.requests_logged(), cpu_ns(pid), ctx_switches(pid)
        time.sleep(seconds)
        req1, cpu1, ctx1 = srv.requests_logged(), cpu_ns(pid), ctx_switches(pid)
        w.stop()
    finally:
        srv.stop()
    return {
        "kind": kind,
        "seconds": seconds,
        "requests_per_s": (req1 - req0) / seconds,
        "cpu_ms_per_s": (cpu1 - cpu0) / 1e6 / seconds,
        "ctx_per_s": (ctx1[0] + ctx1[1] - ctx0[0] - ctx0[1]) / seconds,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("-n", type=int, default=300)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--idle-seconds", type=float, default=20.0, help="0: no idle runs")
    p.add_argument("--kinds", default="raw,python,lib,cli")
    p.add_argument("--polling-interval", type=float, default=0.01, help="JobManager's, during the drain")
    p.add_argument("--lib-bin", required=True)
    p.add_argument("--cli-bin", required=True)
    p.add_argument("--base-bin", help="the library worker before a change, as kind `base`")
    p.add_argument("--json", type=Path, required=True)
    a = p.parse_args()
    bins = {"lib": a.lib_bin, "cli": a.cli_bin, "base": a.base_bin}
    kinds = a.kinds.split(",")
    run_id = str(uuid.uuid4())
    out: dict = {
        "run_id": run_id,
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "n": a.n,
        "rounds": a.rounds,
        "kinds": kinds,
        "load_before": os.getloadavg(),
        "drain": [],
        "idle": [],
    }
    for r in range(a.rounds):
        order = kinds[r % len(kinds):] + kinds[: r % len(kinds)]
        for kind in order:
            res = drain(kind, a.n, bins, a.polling_interval)
            res.update(round=r, run_id=run_id, load=os.getloadavg()[0])
            out["drain"].append(res)
            print(f"drain round {r} {kind}: {res['tasks_per_s']} tasks/s, "
                  f"{res['cpu_ms_per_task']:.3f} ms CPU/task, load {res['load']:.2f}", flush=True)
    for kind in [k for k in kinds if k not in ("raw", "base") and a.idle_seconds > 0]:
        res = idle(kind, a.idle_seconds, bins)
        res.update(run_id=run_id, load=os.getloadavg()[0])
        out["idle"].append(res)
        print(f"idle {kind}: {res['requests_per_s']:.2f} req/s, {res['cpu_ms_per_s']:.3f} ms CPU/s", flush=True)
    out["load_after"] = os.getloadavg()
    out["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
