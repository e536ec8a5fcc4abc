#!/usr/bin/env python3
"""Issue 20: a real Python extension served three ways, on the real server.

Run by ``benches/extension.sh`` with the job server's venv plus ase and
numpy (it imports ``../shared/jobserver/bench_python_worker.py`` and so
``zndraw_joblib``).

N tasks of ``tests/python/shift_extension.py``'s ``Shift`` (payload
``{"dx": ...}``) are queued on a fresh ``serve.py`` (fresh SQLite DB; the job
pre-registered with the extension's schema by a placeholder worker that
never claims), then one worker process drains them:

  jobmanager  zndraw_joblib's own ``JobManager`` with ``execute=`` running
              the extension in its process (``--role jobmanager`` of this
              file), as ZnDraw's worker does but with ``vis=None``
  oneshot     ``outage-worker --job '@global:modifiers:Shift=python3
              tests/python/shift_oneshot.py'``: one process per task
  serve       ``outage-worker --serve '@global:modifiers:Shift=python3 -m
              outage_handler shift_extension:Shift'`` (PYTHONPATH
              runtime-std/python:tests/python): one long-lived handler

Rounds are interleaved (every kind once per round, the order rotated).
``python3`` in the commands is this interpreter (the venv's).

Measured, per run:
* ms per task from the server's timestamps: (last completed_at - first
  started_at) / N, so the worker's start and its first claim are left out;
  the worker's start (exec -> registered) is reported apart.
* CPU during the drain (registered -> all completed), per task: the worker
  process's own (its threads' schedstat) and its handler processes' apart
  (live ones from /proc, exited ones from the worker's cutime + cstime).
* peak RSS: the worker's VmHWM plus the largest VmHWM seen of a handler
  process (sampled every 20 ms; one-shot processes can peak between two
  samples, so theirs is a lower bound).
* every task ran exactly once: the extension appends one line per task to
  OUTAGE_TEST_OUT; the task ids there must be the N submitted ones.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
JOBSERVER = Path(os.environ.get("OUTAGE_JOBSERVER_DIR", ROOT.parent / "shared" / "jobserver"))
sys.path.insert(0, str(JOBSERVER))
sys.path.insert(0, str(ROOT / "tests" / "python"))

TOKEN = "bench-token"
JOB = "@global:modifiers:Shift"
ROOM = "benchroom"
CLK = os.sysconf("SC_CLK_TCK")
KINDS = ("jobmanager", "oneshot", "serve")


# ---------------------------------------------------------------- /proc


def read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def threads_cpu_s(pid: int) -> float | None:
    """Run time of the process's live threads (schedstat), in seconds."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    total = 0
    for tid in tids:
        s = read(f"/proc/{pid}/task/{tid}/schedstat")
        if s:
            total += int(s.split()[0])
    return total / 1e9


def stat_fields(pid: int) -> list[str] | None:
    s = read(f"/proc/{pid}/stat")
    return s.rsplit(")", 1)[1].split() if s else None


def children_cpu_s(pid: int) -> float | None:
    """CPU of the waited-for children (cutime + cstime), in seconds."""
    f = stat_fields(pid)
    return (int(f[13]) + int(f[14])) / CLK if f else None


def hwm_kib(pid: int) -> int | None:
    s = read(f"/proc/{pid}/status")
    for line in (s or "").splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return None


def descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            tids = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for tid in tids:
            for c in (read(f"/proc/{p}/task/{tid}/children") or "").split():
                out.append(int(c))
                todo.append(int(c))
    return out


class Sampler:
    """Every 20 ms: the worker's descendants, their CPU and VmHWM."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.cpu: dict[int, float] = {}  # pid -> last CPU seen (s)
        self.hwm: dict[int, int] = {}  # pid -> largest VmHWM seen (KiB)
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def sample(self) -> dict[int, float]:
        """CPU of the live descendants now (and record them)."""
        now: dict[int, float] = {}
        for c in descendants(self.pid):
            cpu, hwm = threads_cpu_s(c), hwm_kib(c)
            if cpu is None:
                continue
            now[c] = cpu
            with self.lock:
                self.cpu[c] = cpu
                if hwm is not None:
                    self.hwm[c] = max(hwm, self.hwm.get(c, 0))
        return now

    def _run(self) -> None:
        while not self.stop.wait(0.02):
            self.sample()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)


# ---------------------------------------------------------------- the JobManager worker


def run_jobmanager(base_url: str, polling: float) -> int:
    """--role jobmanager: the package's worker running Shift in-process."""
    import bench_python_worker as bpw
    from shift_extension import Shift
    from zndraw_joblib.client import ClaimedTask, JobManager

    def execute(task: ClaimedTask) -> None:
        # as ZnDraw's _execute_task, with no vis; the ids for the record
        os.environ["ZNDRAW_TASK_ID"] = task.task_id
        os.environ["ZNDRAW_ROOM"] = task.room_id
        task.extension.run(None, **task.run_kwargs)

    manager = JobManager(bpw.Api(base_url, TOKEN), execute=execute, polling_interval=polling, heartbeat_interval=30.0)
    manager.register(Shift)
    print(f"registered {manager.worker_id}", flush=True)
    manager.wait()  # until SIGTERM -> disconnect()
    return 0


# ---------------------------------------------------------------- one run


def registered_schema() -> dict:
    from shift_extension import Shift
    from zndraw_joblib.schemas import JobRegisterRequest

    dumped = JobRegisterRequest(category="modifiers", name="Shift", schema=Shift.model_json_schema()).model_dump(
        exclude_none=True, mode="json"
    )
    return dumped.get("schema_", dumped.get("schema"))


def worker_cmd(kind: str, base_url: str, cli: str, schema_file: str, polling: float) -> list[str]:
    py = sys.executable
    if kind == "jobmanager":
        return [py, __file__, "--role", "jobmanager", "--base-url", base_url, "--polling-interval", str(polling)]
    common = [cli, "--server", base_url, "--token", TOKEN]
    if kind == "oneshot":
        return [*common, "--job", f"{JOB}={py} tests/python/shift_oneshot.py", "--schema", f"{JOB}={schema_file}"]
    if kind == "serve":
        return [*common, "--serve", f"{JOB}={py} -m outage_handler shift_extension:Shift"]
    raise ValueError(kind)


def drain(kind: str, n: int, cli: str, polling: float, timeout: float) -> dict:
    import bench_python_worker as bpw

    tmp = tempfile.mkdtemp(prefix="outage-ext-bench-")
    out_file = os.path.join(tmp, "tasks.jsonl")
    schema_file = os.path.join(tmp, "shift.schema.json")
    Path(schema_file).write_text(json.dumps(registered_schema()))
    srv = bpw.Server(TOKEN)
    w = None
    try:
        with bpw.new_client(srv) as c:
            pw = c.post("/v1/joblib/workers").json()["id"]
            r = c.put(
                "/v1/joblib/rooms/@global/jobs",
                json={"category": "modifiers", "name": "Shift", "schema": registered_schema(), "worker_id": pw},
            )
            assert r.status_code == 201, r.text
            ids = []
            for i in range(n):
                r = c.post(f"/v1/joblib/rooms/{ROOM}/tasks/{JOB}", json={"payload": {"dx": round(0.1 * i, 3)}})
                assert r.status_code == 202, r.text
                ids.append(r.json()["id"])
            env = dict(os.environ)
            env.update(
                OUTAGE_TEST_OUT=out_file,
                RUST_LOG="warn,outage=info",
                PYTHONDONTWRITEBYTECODE="1",
                PYTHONPATH=os.pathsep.join([str(ROOT / "runtime-std" / "python"), str(ROOT / "tests" / "python")]),
            )
            t0 = time.perf_counter()
            w = subprocess.Popen(
                worker_cmd(kind, srv.base_url, cli, schema_file, polling),
                cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                start_new_session=True,
            )  # fmt: skip
            stream = w.stdout if kind == "jobmanager" else w.stderr
            other = w.stderr if kind == "jobmanager" else w.stdout
            tail: list[str] = []
            threading.Thread(target=lambda: [tail.append(x) for x in other], daemon=True).start()
            registered, ended = threading.Event(), threading.Event()

            def watch() -> None:
                for line in stream:
                    tail.append(line)
                    if "egistered" in line:
                        registered.set()
                ended.set()  # the worker closed its output: it exited

            threading.Thread(target=watch, daemon=True).start()
            end = time.monotonic() + timeout
            while not registered.wait(0.05) and not ended.is_set() and time.monotonic() < end:
                pass
            if not registered.is_set():
                why = f"exited with {w.wait(timeout=10)}" if ended.is_set() else f"not registered within {timeout} s"
                raise RuntimeError(f"{kind}: {why}: {''.join(tail[-20:])}")
            startup = time.perf_counter() - t0
            sampler = Sampler(w.pid)
            cpu0, kids0, ccpu0 = threads_cpu_s(w.pid), sampler.sample(), children_cpu_s(w.pid)
            wait_finished(c, n, timeout)
            cpu1, kids1, ccpu1 = threads_cpu_s(w.pid), sampler.sample(), children_cpu_s(w.pid)
            worker_hwm = hwm_kib(w.pid) or 0
            sampler.close()
            tasks = bpw.all_tasks(c)
    finally:
        if w is not None:
            stop(w)
        srv.stop()
    # handlers: exited ones through cutime, live ones through /proc
    gone0 = sum(v for p, v in kids0.items() if p not in kids1)
    live = sum(v - kids0.get(p, 0.0) for p, v in kids1.items())
    handler_cpu = (ccpu1 - ccpu0) - gone0 + live if kind != "jobmanager" else None
    handler_hwm = max(sampler.hwm.values(), default=0)
    records = [json.loads(x) for x in Path(out_file).read_text().splitlines()] if os.path.exists(out_file) else []
    done = [t for t in tasks if t["status"] == "completed"]
    starts = [bpw.parse_ts(t["started_at"]) for t in done]
    ends = [bpw.parse_ts(t["completed_at"]) for t in done]
    span = (max(ends) - min(starts)).total_seconds() if done else float("nan")
    per_task = [(e - s).total_seconds() * 1000 for s, e in zip(starts, ends)]
    return {
        "kind": kind,
        "n": n,
        "completed": len(done),
        "failed": sum(t["status"] == "failed" for t in tasks),
        "ran_once": sorted(r["task"] for r in records) == sorted(ids),
        "ms_per_task": 1000 * span / max(1, len(done)),
        "run_ms_mean": statistics.fmean(per_task) if per_task else None,
        "worker_cpu_ms_per_task": 1000 * (cpu1 - cpu0) / n,
        "handler_cpu_ms_per_task": 1000 * handler_cpu / n if handler_cpu is not None else None,
        "handler_pids": len(sampler.hwm),
        "worker_peak_rss_kib": worker_hwm,
        "handler_peak_rss_kib": handler_hwm if kind != "jobmanager" else None,
        "peak_rss_kib": worker_hwm + (handler_hwm if kind != "jobmanager" else 0),
        "exec_to_registered_ms": 1000 * startup,
        "errors": sorted({t["error"] for t in tasks if t.get("error")})[:3],
    }


def wait_finished(c, n: int, timeout: float) -> None:
    """Until n tasks are completed or failed (polling every 50 ms)."""
    import bench_python_worker as bpw

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if bpw.count_status(c, "completed") + bpw.count_status(c, "failed") >= n:
            return
        time.sleep(0.05)
    raise TimeoutError(f"not all {n} tasks finished within {timeout} s")


def stop(p: subprocess.Popen) -> None:
    """SIGTERM, then (after 30 s) SIGKILL to its whole group."""
    try:
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(p.pid, signal.SIGKILL)  # handlers left behind, if any
    except (ProcessLookupError, PermissionError):
        pass
    try:
        p.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


# ---------------------------------------------------------------- report


def median(xs: list) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x: float | None, digits: int = 1) -> str:
    return "—" if x is None else f"{x:,.{digits}f}"


def table(res: dict) -> str:
    rows = [
        "| worker | ms/task (server) | worker CPU ms/task | handler CPU ms/task | peak RSS MiB (worker + handler) "
        "| start ms | completed | ran once |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    names = {
        "jobmanager": "zndraw_joblib `JobManager` (in-process)",
        "oneshot": "`outage-worker --job` (`shift_oneshot.py`, a process per task)",
        "serve": "`outage-worker --serve` (`outage_handler`, one handler)",
    }
    for kind in res["kinds"]:
        runs = [r for r in res["drain"] if r["kind"] == kind]
        if not runs:
            rows.append(f"| {names[kind]} | not run: {res['skipped'].get(kind, '?')} | | | | | | |")
            continue
        w = median([r["worker_peak_rss_kib"] for r in runs]) / 1024
        h = median([r["handler_peak_rss_kib"] for r in runs])
        rss = f"{w + (h or 0) / 1024:.1f} ({w:.1f} + {h / 1024:.1f})" if h is not None else f"{w:.1f}"
        rows.append(
            f"| {names[kind]} | {fmt(median([r['ms_per_task'] for r in runs]))} "
            f"| {fmt(median([r['worker_cpu_ms_per_task'] for r in runs]))} "
            f"| {fmt(median([r['handler_cpu_ms_per_task'] for r in runs]))} | {rss} "
            f"| {fmt(median([r['exec_to_registered_ms'] for r in runs]), 0)} "
            f"| {sum(r['completed'] for r in runs)}/{sum(r['n'] for r in runs)} "
            f"| {'yes' if all(r['ran_once'] for r in runs) else 'NO'} |"
        )
    return "\n".join(rows)


def markdown(res: dict) -> str:
    rounds = res["rounds"]
    return f"""## A Python extension three ways (issue 20)

{res['n']} tasks of `tests/python/shift_extension.py`'s `Shift` (ase water molecule shifted by `dx`)
queued on a fresh `serve.py`, then drained by one worker process; {rounds} interleaved round(s), medians.
Started {res['started']}, load {res['load_before'][0]:.2f} before, {res['load_after'][0]:.2f} after;
commit {res.get('commit', '?')}, Python {res['python']}.

{table(res)}

ms/task: (last `completed_at` - first `started_at`) / N from the server. CPU: during the drain (registered ->
all completed); the worker's own threads, and its handler processes apart (live ones from /proc, exited
ones from the worker's cutime + cstime). Peak RSS: the worker's VmHWM plus the largest handler VmHWM
seen (sampled every 20 ms: for one-shot processes a lower bound). start: exec -> registered (for
`--serve` this includes the handler's start, if the worker waits for `ready` before registering).
Ran once: the task ids the extension recorded are exactly the submitted ones.
"""


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("-n", type=int, default=int(os.environ.get("BENCH_EXT_TASKS", 20)))
    p.add_argument("--rounds", type=int, default=int(os.environ.get("BENCH_EXT_ROUNDS", 3)))
    p.add_argument("--kinds", default=",".join(KINDS))
    p.add_argument("--cli-bin", default=str(ROOT / "target" / "release" / "outage-worker"))
    p.add_argument("--polling-interval", type=float, default=0.01, help="JobManager's, during the drain")
    p.add_argument("--timeout", type=float, default=300.0, help="for any one wait")
    p.add_argument("--json", type=Path)
    p.add_argument("--md", type=Path)
    p.add_argument("--commit", default="")
    p.add_argument("--role", default="bench", choices=["bench", "jobmanager"])
    p.add_argument("--base-url")
    a = p.parse_args()
    if a.role == "jobmanager":
        return run_jobmanager(a.base_url, a.polling_interval)
    kinds = a.kinds.split(",")
    skipped: dict[str, str] = {}
    if "serve" in kinds:
        probe = subprocess.run([a.cli_bin, "--help"], capture_output=True, text=True, timeout=30)
        if not re.search(r"--serve\b", probe.stdout):  # \b: not --server
            skipped["serve"] = f"{a.cli_bin} has no --serve yet"
            print(f"warning: {skipped['serve']}: kind `serve` left out", file=sys.stderr)
    todo = [k for k in kinds if k not in skipped]
    res: dict = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "n": a.n,
        "rounds": a.rounds,
        "kinds": kinds,
        "skipped": skipped,
        "commit": a.commit,
        "python": sys.version.split()[0],
        "load_before": os.getloadavg(),
        "drain": [],
    }
    for r in range(a.rounds):
        order = todo[r % len(todo):] + todo[: r % len(todo)] if todo else []
        for kind in order:
            d = drain(kind, a.n, a.cli_bin, a.polling_interval, a.timeout)
            d.update(round=r, load=os.getloadavg()[0])
            res["drain"].append(d)
            print(
                f"round {r} {kind}: {d['ms_per_task']:.1f} ms/task, worker CPU {d['worker_cpu_ms_per_task']:.1f} "
                f"ms/task, handler CPU {fmt(d['handler_cpu_ms_per_task'])} ms/task, peak RSS "
                f"{d['peak_rss_kib'] / 1024:.1f} MiB, {d['completed']}/{d['n']} completed, ran once: "
                f"{d['ran_once']}, load {d['load']:.2f}" + (f", errors {d['errors']}" if d["errors"] else ""),
                file=sys.stderr, flush=True,
            )  # fmt: skip
    res["load_after"] = os.getloadavg()
    res["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    md = markdown(res)
    print(md)
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(res, indent=1, default=str))
    if a.md:
        a.md.parent.mkdir(parents=True, exist_ok=True)
        a.md.write_text(md)
    bad = [d for d in res["drain"] if d["completed"] != d["n"] or not d["ran_once"]]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
