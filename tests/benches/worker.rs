//! A quick look at the host worker on the real ZnDraw job server
//! (`cargo bench -p outage-tests --bench worker`): time from building the
//! worker to registered (in-process), client CPU and context switches per
//! task while draining a queue of no-op tasks, peak RSS, and the drain
//! throughput from the server's own timestamps (first `started_at` to last
//! `completed_at`: the worker's start and its first jittered wait do not
//! count). The server's own CPU is not counted (it is another process).
//!
//! The Python column is measured in the same run
//! (`../shared/jobserver/bench_python_worker.py --scenario jm-drain`), or
//! not shown: this bench never prints a figure it did not measure.
//! `OUTAGE_BENCH_NO_PYTHON=1` skips it. The full comparison, interleaved
//! and with the raw floor, is `bash benches/run.sh` (BENCHMARKS.md).
//!
//! `OUTAGE_BENCH_TASKS` sets the queue length (default 300).

#![allow(clippy::float_arithmetic)] // reporting only

use std::time::{Duration, Instant};

use nix::sys::resource::{UsageWho, getrusage};
use outage_runtime_std::{Job, Task, WorkerBuilder};
use outage_tests::http;
use outage_tests::real::RealServer;
use outage_tests::server::TestServer;
use serde_json::json;

fn cpu() -> Duration {
    let u = getrusage(UsageWho::RUSAGE_SELF).expect("getrusage");
    let tv = |t: nix::sys::time::TimeVal| Duration::new(t.tv_sec() as u64, t.tv_usec() as u32 * 1000);
    tv(u.user_time()) + tv(u.system_time())
}

/// Voluntary + involuntary context switches of every thread of this process.
fn ctx_switches() -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    dir.filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("status")).ok())
        .flat_map(|s| {
            s.lines()
                .filter(|l| l.contains("ctxt_switches:"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .sum()
}

/// Seconds since 1970 of the server's naive UTC ISO 8601 time
/// (`2026-01-02T03:04:05.678901`).
fn parse_ts(s: &str) -> Option<f64> {
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + day - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    let time = time.trim_end_matches('Z');
    let mut t = time.split(':');
    let (h, mi, sec) = (
        t.next()?.parse::<f64>().ok()?,
        t.next()?.parse::<f64>().ok()?,
        t.next()?.parse::<f64>().ok()?,
    );
    Some(days as f64 * 86_400.0 + h * 3600.0 + mi * 60.0 + sec)
}

/// Tasks per second from the server's timestamps of the room's tasks.
fn server_rate(addr: std::net::SocketAddr, token: &str, room: &str) -> Option<f64> {
    let (mut first, mut last, mut done, mut offset) = (f64::MAX, f64::MIN, 0usize, 0usize);
    loop {
        let page = http::api(
            addr,
            token,
            "GET",
            &format!("/rooms/{room}/tasks?limit=500&offset={offset}"),
            None,
        )
        .ok()?
        .json();
        let items = page["items"].as_array()?.clone();
        offset += items.len();
        for t in &items {
            if t["status"] == "completed" {
                done += 1;
                first = first.min(parse_ts(t["started_at"].as_str()?)?);
                last = last.max(parse_ts(t["completed_at"].as_str()?)?);
            }
        }
        if items.is_empty() || offset as u64 >= page["total"].as_u64()? {
            break;
        }
    }
    (last > first).then(|| done as f64 / (last - first))
}

/// The Python JobManager's drain, measured now, or why not.
fn python_drain(n: usize) -> Result<serde_json::Value, String> {
    if std::env::var_os("OUTAGE_BENCH_NO_PYTHON").is_some() {
        return Err("skipped (OUTAGE_BENCH_NO_PYTHON)".into());
    }
    let py = outage_tests::real::python().map_err(|e| e.to_string())?;
    let script = outage_tests::real::jobserver_dir().join("bench_python_worker.py");
    let out = std::process::Command::new(py)
        .arg(script)
        .args(["--scenario", "jm-drain", "-n", &n.to_string()])
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("bench_python_worker.py failed ({})", out.status));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("unreadable output: {e}"))
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

struct Target {
    url: String,
    token: String,
}

impl Target {
    fn url(&self) -> &str {
        &self.url
    }
    fn token(&self) -> &str {
        &self.token
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks for a list; this bench has no cases to list.
    }
    let n: usize = std::env::var("OUTAGE_BENCH_TASKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    // The real server by default; `OUTAGE_BENCH_TEST_SERVER=1` uses the Rust
    // test server instead (to see the client without the server's cost).
    let (_real, _test, url, token);
    if std::env::var_os("OUTAGE_BENCH_TEST_SERVER").is_some() {
        let t = TestServer::start().expect("start the test job server");
        (url, token) = (t.url(), t.token().to_owned());
        (_real, _test) = (None, Some(t));
    } else {
        let r = RealServer::start().expect("start the real job server");
        (url, token) = (r.url().to_owned(), r.token().to_owned());
        (_real, _test) = (Some(r), None);
    }
    let server = Target { url, token };
    let addr = http::addr_of(server.url()).unwrap();
    let job = "@global:modifiers:Noop";

    // Queue the tasks first (the job is registered by a placeholder worker),
    // then start the worker and let it drain them, as the reference's
    // `jm-drain` does.
    let placeholder = http::api(addr, server.token(), "POST", "/workers", None)
        .unwrap()
        .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let reg = serde_json::to_vec(
        &json!({"category": "modifiers", "name": "Noop", "schema": {}, "worker_id": placeholder}),
    )
    .unwrap();
    let r = http::api(addr, server.token(), "PUT", "/rooms/@global/jobs", Some(&reg)).unwrap();
    assert!(r.status == 201 || r.status == 200, "{}", r.text());
    let ids: Vec<String> = (0..n)
        .map(|i| {
            let body = serde_json::to_vec(&json!({ "payload": { "i": i } })).unwrap();
            let r = http::api(
                addr,
                server.token(),
                "POST",
                &format!("/rooms/bench/tasks/{job}"),
                Some(&body),
            )
            .unwrap();
            r.json()["id"].as_str().unwrap().to_owned()
        })
        .collect();

    let process_start = Instant::now();
    let worker = async_std::task::block_on(
        WorkerBuilder::new(server.url(), server.token())
            .job(Job::parse(job).unwrap(), |_task: Task| async { Ok(()) })
            .start(),
    )
    .expect("start the worker");
    let startup = process_start.elapsed();
    let before = worker.stats();
    let (cpu0, ctx0, t0) = (cpu(), ctx_switches(), Instant::now());
    let last = ids.last().unwrap();
    loop {
        let done = worker.stats().tasks_completed - before.tasks_completed;
        if done as usize >= n {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
        if std::env::var_os("OUTAGE_BENCH_VERBOSE").is_some() && t0.elapsed().as_millis() % 2000 < 20 {
            eprintln!("{:?}: {done} done, {:?}", t0.elapsed(), worker.stats());
        }
        assert!(
            t0.elapsed() < Duration::from_secs(600),
            "draining took over 10 minutes"
        );
    }
    let (cpu_used, ctx) = (cpu() - cpu0, ctx_switches() - ctx0);
    let status = http::api(addr, server.token(), "GET", &format!("/tasks/{last}"), None)
        .unwrap()
        .json();
    assert_eq!(status["status"], "completed");
    let requests = worker.stats().requests - before.requests;
    async_std::task::block_on(worker.disconnect());

    let rate = server_rate(addr, server.token(), "bench");
    drop((_real, _test));
    let per_task_ms = cpu_used.as_secs_f64() * 1000.0 / n as f64;
    let python = python_drain(n);
    let uptime = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load = uptime.split_whitespace().next().unwrap_or("?");
    println!(
        "outage host worker (in-process) on the real zndraw-joblib server, {n} queued no-op tasks; load {load}"
    );
    let py = |key: &str, scale: f64, unit: &str| match &python {
        Ok(v) => v[key]
            .as_f64()
            .map_or("?".into(), |x| format!("{:.2} {unit}", x * scale)),
        Err(_) => "-".into(),
    };
    println!("  {:<34} {:>14} {:>18}", "", "outage (Rust)", "Python JobManager");
    println!(
        "  {:<34} {:>11.1} ms {:>18}",
        "start to registered",
        startup.as_secs_f64() * 1000.0,
        py("worker_spawn_to_registered_s", 1000.0, "ms")
    );
    println!(
        "  {:<34} {:>11.3} ms {:>18}",
        "client CPU per task",
        per_task_ms,
        py("worker_cpu_ms_per_task", 1.0, "ms")
    );
    println!(
        "  {:<34} {:>14.1} {:>18}",
        "context switches per task",
        ctx as f64 / n as f64,
        "-"
    );
    println!(
        "  {:<34} {:>10.1} MiB {:>18}",
        "peak RSS",
        peak_rss_kib() as f64 / 1024.0,
        match &python {
            Ok(v) => v["worker_rss_kib"]["VmHWM"]
                .as_f64()
                .map_or("?".into(), |k| format!("{:.1} MiB", k / 1024.0)),
            Err(_) => "-".into(),
        }
    );
    println!(
        "  {:<34} {:>11} /s {:>18}",
        "drain, server timestamps",
        rate.map_or("?".into(), |r| format!("{r:.1}")),
        py("server_tasks_per_s", 1.0, "/s")
    );
    println!(
        "  requests per task: {:.2} (claim, running, completed)",
        requests as f64 / n as f64
    );
    match python {
        Ok(_) => println!(
            "  (Python: bench_python_worker.py --scenario jm-drain, measured in this run; RSS there is VmHWM too)"
        ),
        Err(why) => println!("  Python column not measured in this run: {why}"),
    }
}
