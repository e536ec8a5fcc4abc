#!/usr/bin/env python3
"""Writes BENCHMARKS.md and the fleet plot from what `benches/run.sh` measured
(target/bench/*.json and size.txt). Every number in the document comes from
those files; a column whose runs are missing from this invocation is printed
as "not measured", never filled in."""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
from pathlib import Path

KIND_NAMES = {
    "raw": "raw floor (httpx loop)",
    "python": "Python JobManager",
    "lib": "outage library worker",
    "base": "outage library worker, before (executor task)",
    "cli": "`outage-worker` CLI (runs /bin/true)",
}


def push_targets(text):
    """Issue 13's targets, met or missed, from benches/push.sh's tables."""
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and not cells[0].startswith(("what", "---")):
            rows[cells[0]] = cells
    out = []
    pickup = rows.get("pickup, push (default config)")
    if pickup:
        ms = float(pickup[2].split()[0])
        out.append(f"- Push: median pickup ≤ 50 ms: **{'met' if ms <= 50 else 'missed'}** — {ms:.1f} ms "
                   f"(p95 {pickup[3]}), submit → running, with the default configuration.")
    idle = next((c for k, c in rows.items() if k.startswith("idle, push") and k.endswith("(default)")), None)
    if idle:
        rate = float(idle[4])
        out.append(f"- Push: idle requests ≤ 0.05 per worker per second: **{'met' if rate <= 0.05 else 'missed'}** "
                   f"— {rate:.4f} with the default fallback poll "
                   f"({idle[0].split('fallback poll ')[1].removesuffix(' (default)')}).")
    if not out:
        out.append("- Push: not measured in this run (see the push section).")
    return out


def med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def span(xs: list[float], fmt: str) -> str:
    if not xs:
        return "not measured"
    if len(xs) == 1:
        return format(xs[0], fmt)
    return f"{format(med(xs), fmt)} ({format(min(xs), fmt)}–{format(max(xs), fmt)})"


def machine() -> str:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os

    return f"{os.cpu_count()} × {model}, Linux {platform.release()}"


def git_rev() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True).stdout.strip()
        return rev + (" (with uncommitted changes)" if dirty else "")
    except OSError:
        return "?"


def drain_section(d: dict) -> tuple[list[str], dict]:
    run_id, rounds = d["run_id"], d["rounds"]
    rows = {k: [r for r in d["drain"] if r["kind"] == k and r["run_id"] == run_id] for k in KIND_NAMES}
    measured = {k: len(v) == rounds for k, v in rows.items()}
    idle = {r["kind"]: r for r in d["idle"] if r["run_id"] == run_id}
    col = lambda k, key: [r[key] for r in rows[k] if r.get(key) is not None]  # noqa: E731
    kinds = [k for k in ["raw", "python", "lib", "base", "cli"] if k in d["kinds"]]
    out = [
        f"{d['n']} no-op tasks queued first, then drained by one worker; {rounds} interleaved rounds "
        f"(each kind once per round, the order rotated, a fresh `serve.py` per run); medians with (min–max). "
        f"Load average {d['load_before'][0]:.2f} before, {d['load_after'][0]:.2f} after "
        "(per run: " + ", ".join(format(r["load"], ".2f") for r in d["drain"]) + ").",
        "",
        "| | " + " | ".join(KIND_NAMES[k] for k in kinds) + " |",
        "| --- |" + " --- |" * len(kinds),
    ]

    def row(title: str, f) -> None:
        out.append(f"| {title} | " + " | ".join(f(k) if measured[k] else "not measured" for k in kinds) + " |")

    def per_round(k: str, other: str, key: str, invert: bool = False) -> list[float]:
        """The ratio of kind k to `other` within each round (same load)."""
        mine = {r["round"]: r[key] for r in rows[k]}
        theirs = {r["round"]: r[key] for r in rows[other]}
        return [(theirs[i] / mine[i]) if invert else (mine[i] / theirs[i]) for i in sorted(mine) if i in theirs]

    raw_rate = med(col("raw", "tasks_per_s")) if measured.get("raw") else None
    row("tasks/s (server timestamps)", lambda k: span(col(k, "tasks_per_s"), ".1f"))
    if raw_rate:
        row("÷ raw floor's, same round", lambda k: span(per_round(k, "raw", "tasks_per_s"), ".2f"))
    row("client CPU per task, ms", lambda k: span(col(k, "cpu_ms_per_task"), ".3f"))
    py_cpu = med(col("python", "cpu_ms_per_task")) if measured.get("python") else None
    if py_cpu:
        row("Python's CPU per task ÷ this, same round",
            lambda k: span(per_round(k, "python", "cpu_ms_per_task", invert=True), ".1f"))
    row("+ the commands it ran, ms/task", lambda k: span(col(k, "children_cpu_ms_per_task"), ".2f") if k == "cli" else "—")
    row("context switches per task (vol. + invol.)", lambda k: "—" if k == "raw" else
        f"{med(col(k, 'voluntary_ctx_per_task')):.1f} + {med(col(k, 'involuntary_ctx_per_task')):.1f}")
    row("threads", lambda k: "—" if k == "raw" else str(rows[k][0]["threads"]))
    row("peak RSS (VmHWM), MiB", lambda k: "—" if k == "raw" else span([x / 1024 for x in col(k, "peak_rss_kib")], ".1f"))
    row("exec → registered, ms", lambda k: "—" if k == "raw" else span(col(k, "exec_to_registered_ms"), ".0f"))
    row("idle requests/s", lambda k: f"{idle[k]['requests_per_s']:.2f}" if k in idle else "—")
    row("idle CPU, ms per s", lambda k: f"{idle[k]['cpu_ms_per_s']:.3f}" if k in idle else "—")
    out.append("")
    out.append("CPU per task by thread (medians, ms): " + "; ".join(
        f"{KIND_NAMES[k]}: " + ", ".join(f"`{t}` {med([r['thread_cpu_ms_per_task'].get(t, 0) for r in rows[k]]):.3f}"
                                      for t in rows[k][0]["thread_cpu_ms_per_task"])
        for k in kinds if k not in ("raw", "python") and measured[k]) + ".")
    facts = {
        "measured": measured,
        "lib_cpu": med(col("lib", "cpu_ms_per_task")) if measured.get("lib") else None,
        "base_cpu": med(col("base", "cpu_ms_per_task")) if measured.get("base") else None,
        "py_cpu": py_cpu,
        "lib_ctx": med([r["voluntary_ctx_per_task"] + r["involuntary_ctx_per_task"] for r in rows["lib"]]) if measured.get("lib") else None,
        "base_ctx": med([r["voluntary_ctx_per_task"] + r["involuntary_ctx_per_task"] for r in rows["base"]]) if measured.get("base") else None,
        "lib_rate": med(col("lib", "tasks_per_s")) if measured.get("lib") else None,
        "raw_rate": raw_rate,
        "py_ratio": med(per_round("lib", "python", "cpu_ms_per_task", invert=True)) if measured.get("python") and measured.get("lib") else None,
        "py_ratio_span": span(per_round("lib", "python", "cpu_ms_per_task", invert=True), ".1f") if measured.get("python") and measured.get("lib") else None,
        "floor_ratio_span": span(per_round("lib", "raw", "tasks_per_s"), ".2f") if measured.get("raw") and measured.get("lib") else None,
        "base_ratio_span": span(per_round("base", "lib", "cpu_ms_per_task"), ".1f") if measured.get("base") and measured.get("lib") else None,
    }
    return out, facts


def fleet_section(f: dict, png: Path, png_rel: str) -> list[str]:
    out = [
        "| workers | starts | outage | policy | busiest 100 ms ÷ steady | median recovery | worst recovery | requests per worker during the outage | stopped |",
        "| ---: | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in f["fleet"]:
        out.append(
            f"| {r['workers']:,} | {r['starts']} | {r['outage_s']} s | {r['policy']} | {r['peak_over_steady']:.2f}× "
            f"| {r['median_recovery_ms'] / 1000:.1f} s | {r['max_recovery_ms'] / 1000:.1f} s "
            f"| {r['requests_per_worker_during']:.1f} | {r['stopped']} |"
        )
    plotted = [r for r in f["fleet"] if r["histogram_100ms"]]
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        outages = sorted({r["outage_s"] for r in plotted})
        fig, axes = plt.subplots(len(outages), 1, figsize=(10, 3.2 * len(outages)))
        for ax, down in zip(axes, outages):
            for r in [r for r in plotted if r["outage_s"] == down]:
                h = r["histogram_100ms"][:-1]  # the last bucket is cut by the run's end
                ax.plot([i / 10 for i in range(len(h))], h, lw=0.7, label=r["policy"])
            steady = plotted[0]["steady_per_100ms"]
            ax.axhline(steady, color="grey", ls=":", lw=0.8, label=f"steady rate ({steady:.0f})")
            start = plotted[0]["down_at_ms"] / 1000
            ax.axvspan(start, start + down, color="red", alpha=0.07, label="server down")
            ax.set_yscale("log")
            ax.set_ylabel("requests per 100 ms")
            ax.set_title(f"{plotted[0]['workers']:,} workers started together, {down} s outage")
            ax.legend(loc="upper right", fontsize=8)
        for ax in axes:
            ax.set_xlabel("simulated time, s")
        fig.tight_layout()
        fig.savefig(png, dpi=90)
        out += ["", f"![requests per 100 ms, reference policy and ours]({png_rel})"]
    except ImportError:
        out += ["", "(plot not drawn: matplotlib is not installed)"]
    return out


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--dir", type=Path, default=Path("target/bench"))
    p.add_argument("--out", type=Path, default=Path("BENCHMARKS.md"))
    p.add_argument("--png", type=Path, default=Path("benches/fleet-requests.png"))
    p.add_argument("--command", default="bash benches/run.sh")
    a = p.parse_args()
    d = json.loads((a.dir / "drain.json").read_text())
    f = json.loads((a.dir / "fleet.json").read_text())
    prof = json.loads((a.dir / "profile.json").read_text()) if (a.dir / "profile.json").exists() else None
    size = (a.dir / "size.txt").read_text() if (a.dir / "size.txt").exists() else None
    meta = json.loads((a.dir / "meta.json").read_text()) if (a.dir / "meta.json").exists() else {}

    drain_md, facts = drain_section(d)
    doc = [
        "# Benchmarks",
        "",
        f"Everything below was written by `{a.command}` (about 10 minutes) from the files it measured; "
        "nothing is typed in by hand. Run it from a checkout with `../shared/jobserver` beside it, "
        "Python ≥ 3.11 and a Rust toolchain; it creates the job server's venv (`target/jobserver-venv`, "
        "plus matplotlib for the plot) and builds what it runs. It is not part of `.ci/run` (too slow).",
        "",
        f"- **When:** {d['started']} to {meta.get('finished', d['finished'])}; commit {meta.get('commit', git_rev())}",
        f"- **Machine:** {machine()}; other builds may run beside it — the load average is noted with "
        "every measurement, and the drains are interleaved so that load hits every column alike.",
        f"- **Builds:** the workspace's release profile (`opt-level = \"s\"`, LTO), as shipped.",
        "",
        "## Host worker vs Python, on the real server",
        "",
        *drain_md,
        "",
        "- *tasks/s* is N ÷ (last `completed_at` − first `started_at`), from the server, so it leaves out "
        "the worker's start and its first (jittered) wait for work. A drain is bound by the server "
        "(one sequential worker; the raw floor is the fastest a client can go).",
        "- *client CPU* is the worker process's own (user + system), read as the sum of its threads' run "
        "time (`/proc/PID/task/*/schedstat`, ns) from registered to the last task completed; the raw "
        "floor's is its loop's process (tick resolution). The CLI's commands are separate processes and "
        "counted apart. *Context switches* are summed over the worker's threads "
        "(`/proc/PID/task/*/status`).",
        "- *exec → registered*: from `exec` of the worker process to its `registered` line.",
        "- *idle*: a fresh server with its access log on, the worker registered, an empty queue, "
        f"{d['idle'][0]['seconds'] if d['idle'] else '?'} s measured; each worker with its default intervals "
        "(claim poll 2 s, heartbeat 30 s — the JobManager's defaults too). During the drain the JobManager "
        "polls every 0.01 s, as `bench_python_worker.py` runs it.",
        "- *before*: the same library worker built from the commit before its driver got a thread of its own "
        f"({meta.get('base', '?')}: the driver future was an async-std executor task), run in the same rounds.",
        "",
    ]
    if prof:
        doc += ["### Where the library worker's CPU goes", ""]
        if prof.get("perf") and "by_bucket_pct" in prof["perf"]:
            pp = prof["perf"]
            doc += [
                f"`perf record` of the library worker draining {prof['n']} tasks (self time by symbol, "
                "grouped; percentages of all its samples; threads: "
                + ", ".join(f"`{t}` {v:.0f} %" for t, v in pp["by_thread_pct"].items()) + "):",
                "",
                "| where | share of the worker's CPU |",
                "| --- | ---: |",
                *[f"| {k} | {v:.0f} % |" for k, v in pp["by_bucket_pct"].items()],
                "",
            ]
        elif prof.get("perf"):
            doc += [f"perf failed: {prof['perf'].get('error')}", ""]
        else:
            doc += ["(perf is not installed: no profile)", ""]
        if prof.get("strace") and "error" not in prof["strace"]:
            st = prof["strace"]
            total = sum(v["per_task"] for v in st.values())
            doc += [
                f"System calls per task (`strace -f -c`, three requests per task): {total:.0f} in all — "
                + ", ".join(f"`{k}` {v['per_task']:.1f}" + (f" ({v['errors_per_task']:.1f} failed)" if v["errors_per_task"] >= 0.05 else "")
                            for k, v in st.items()) + ".",
                "",
            ]
    if prof:
        st = (prof.get("strace") or {}) if "error" not in (prof.get("strace") or {}) else {}
        per_req = lambda name: st.get(name, {}).get("per_task", 0) / 3  # noqa: E731
        doc += [
            "### What stands in the way of 0.15 ms per task",
            "",
            "Running the worker's one future on a thread of its own with `block_on` removed the cross-thread "
            "wake-ups of an executor. The per-request path was then cut down (`runtime-std/src/h1.rs`, "
            "`http.rs`, `deadline.rs`): the answer to a request is waited for (readiness) before it is read, "
            "so no read finds nothing (the one `recvfrom` per request that finds nothing on purpose is the "
            "quiet check of a kept connection before reuse: skipping it for a connection used a moment ago "
            "turned a server's close into an ambiguous claim, so it stays); the requests' timeouts and the driver's sleeps use timers kept from "
            "one wait to the next instead of registering a new async-io `Timer` (which wakes the reactor: an "
            "eventfd write and one more epoll round) each time; the URL is parsed once per origin, not twice "
            "per request (surf's `Client::request` parsed it again). "
            f"System calls per request now: {sum(v['per_task'] for v in st.values()) / 3:.1f} "
            f"({per_req('epoll_ctl'):.1f} `epoll_ctl`, {per_req('timerfd_settime'):.1f} `timerfd_settime`, "
            f"{st.get('recvfrom', {}).get('errors_per_task', 0) / 3:.1f} failed `recvfrom`). What is left:",
            "",
            "- **The kernel, about half.** Loopback TCP (the send, the receive, the ACKs) and one sleep and "
            "wake-up per request (the server takes milliseconds per request, so the worker must sleep); on "
            "this virtual machine switching a thread in (`finish_task_switch`) is the largest single item.",
            "- **async-io's own thread.** While any thread is in `block_on` (here the driver's thread and the "
            "application's main thread in `run_until_signal`), the `async-io` thread wakes on a back-off timer "
            "(50 µs up to 10 ms) to see whether the reactor is free, and now and then takes it, so an answer "
            "is handed across threads again (a futex wake-up): see its share in *CPU per task by thread* above. "
            "Each epoll round also costs, inside `polling`, a `timerfd_settime`, an `epoll_ctl` for the timer, "
            "an eventfd `read` and an `epoll_ctl` to re-arm it, besides the socket's one-shot re-arm.",
            "- **User space.** surf and http-types build a `Request` and a `Response` per request (header maps "
            "hashed with SipHash, header names and values allocated, an async-channel pair for trailers in "
            "each), and the bodies are copied a few times; the core's own share is about 2 %.",
            "",
            "So below 0.15 ms needs fewer wake-ups than async-io's `block_on` gives (a reactor the worker's "
            "thread owns alone, without the back-off thread) or fewer per-request objects than surf and "
            "http-types make; neither was done here.",
            "",
        ]
    doc += [
        "## One worker through a 120 s outage (manual clock)",
        "",
        "`tests/benches/fleet.rs`: one worker, `Config` defaults, the server refuses connections for 120 s "
        "(= `max_unreachable`) starting 40 s after the worker; 1 000 seeds (jitter).",
        "",
        "| policy | requests sent during the outage (median, min–max) | recovery after the server returns (median, worst) | stopped |",
        "| --- | ---: | ---: | ---: |",
        *[
            f"| {r['policy']} | {r['requests_median']} ({r['requests_min']}–{r['requests_max']}) "
            f"| {r['recovery_median_ms'] / 1000:.1f} s, {r['recovery_max_ms'] / 1000:.1f} s | {r['stopped']} of {r['seeds']} |"
            for r in f["one_worker"]
        ],
        "",
        "Recovery is from the server's return to the worker's first successful claim.",
        "",
        "## Fleet simulation",
        "",
        "Whole lifecycles on one manual clock (`tests/benches/fleet.rs`, the simulation of "
        "`core/tests/support/fleet.rs` with start offsets and a histogram: each worker a `Lifecycle` "
        "taken turn by turn as the driver takes it, its startup included): every worker polls every 2 s "
        "and beats every 30 s; the server goes down 40 s into the run and stays down for the outage; the "
        "run ends 60 s after it returns. *Aligned*: every worker starts at the same instant; *spread*: "
        "starts evenly over 30 s. Steady = the fleet's normal request rate per 100 ms. The reference "
        "policy is `Config::REFERENCE` (no jitter), ours `Config::DEFAULT` (equal jitter).",
        "",
        *fleet_section(f, a.png, a.png.as_posix().removeprefix("./")),
        "",
        "## The core's step cost",
        "",
        "One `Lifecycle` on a manual clock that jumps to its next deadline (`poll_timeout`), so nearly "
        "every turn sends a request: a turn is `handle_timeout`, `poll_start` until it has nothing more, "
        "`handle` of each answer and `poll_timeout` (`fleet::turn`), one million requests per case, on the "
        "machine above (release build):",
        "",
        "| case | turns | requests | ns per request (turn) |",
        "| --- | ---: | ---: | ---: |",
        *[f"| {s['case']} | {s['polls']:,} | {s['requests']:,} | {s['ns_per_request']:.0f} |" for s in f["step"]],
        "",
        f"In the fleet simulation a whole step (a wake-up taken off the heap and the worker's turn) costs "
        f"{min(r['sim_ns_per_step'] for r in f['fleet']):.0f}–{max(r['sim_ns_per_step'] for r in f['fleet']):.0f} ns.",
        "",
        "## Firmware sizes",
        "",
    ]
    if size:
        rc = (a.dir / "size.rc").read_text().strip() if (a.dir / "size.rc").exists() else "0"
        doc += ["`runtime-embassy/firmware/size.sh`, verbatim (the worker's share is the build minus the "
                "same firmware without the worker):", "", "```", size.rstrip(), "```", ""]
        if rc != "0":
            doc += [f"`size.sh` exited with status {rc}: the firmware on this commit exceeds a size target or budget "
                    "it enforces (its `FAIL` lines above). That is the firmware's state, measured, not a "
                    "failure to measure.", ""]
        doc += ["Issue 11's targets are reported met or missed (`targets:` above); `size.sh` fails when "
                "a target met is exceeded again (`targets met (enforced):`) or the budget of one still "
                "missed (its size when set, +1%).", ""]
    push = a.dir / "push.md"
    if push.exists():
        doc += ["## Task-available push (Socket.IO)", "",
                "`benches/push.sh` against the real job server with `--socketio`, verbatim (pickup is "
                "submit → the handler's start, right after the server has the task `running`):", "",
                *[("Run: " + line[2:]) if line.startswith("# ") else line
                  for line in push.read_text().rstrip().splitlines()], ""]
    else:
        doc += ["Not measured in this run (`size.sh` needs the `thumbv7em-none-eabihf` target).", ""]

    # Targets
    m = facts["measured"]
    t = []
    if push.exists():
        t += push_targets(push.read_text())
    if facts["lib_cpu"] is not None:
        ok = facts["lib_cpu"] <= 0.15
        t.append(f"- CPU per task ≤ 0.15 ms (library worker): **{'met' if ok else 'missed'}** — "
                 f"{facts['lib_cpu']:.3f} ms" + (f", down from {facts['base_cpu']:.3f} ms before" if facts["base_cpu"] else "") + ".")
    if facts["py_ratio"]:
        r = facts["py_ratio"]
        t.append(f"- ≥ 10× less CPU per task than Python in the same run: **{'met' if r >= 10 else 'missed'}** — "
                 f"{facts['py_ratio_span']}× per round (medians {facts['py_cpu']:.3f} ms vs {facts['lib_cpu']:.3f} ms).")
    elif not m.get("python"):
        t.append("- ≥ 10× less CPU than Python: **not checked** — the Python worker was not measured in this run.")
    if facts["base_ctx"] and facts["lib_ctx"]:
        t.append(f"- Context switches per task: {facts['base_ctx']:.1f} before, {facts['lib_ctx']:.1f} now "
                 f"({facts['base_ctx'] / facts['lib_ctx']:.1f}× fewer).")
    if facts["base_ratio_span"]:
        t.append(f"- CPU per task before ÷ now, per round: {facts['base_ratio_span']}×.")
    if facts["floor_ratio_span"]:
        t.append(f"- Drain throughput ÷ the raw floor's in the same round: {facts['floor_ratio_span']} "
                 "(the server sets the pace; a ratio above 1 is the server's own variation between runs).")
    doc[doc.index("## Host worker vs Python, on the real server"):doc.index("## Host worker vs Python, on the real server")] = [
        "## Targets", "", *t, "", "The details and what stands in the way are below.", "",
    ]
    a.out.write_text("\n".join(doc) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
