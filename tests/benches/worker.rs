//! The host worker's numbers against the Python reference worker, on the
//! real ZnDraw job server (`cargo bench -p outage-tests --bench worker`):
//! time from start to registered, client CPU per task while draining a
//! queue of no-op tasks, and peak RSS. The server's own CPU is not counted
//! (it is another process), as in `../shared/jobserver/bench_python_worker.py`.
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
    let (cpu0, t0) = (cpu(), Instant::now());
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
    let (wall, cpu_used) = (t0.elapsed(), cpu() - cpu0);
    let status = http::api(addr, server.token(), "GET", &format!("/tasks/{last}"), None)
        .unwrap()
        .json();
    assert_eq!(status["status"], "completed");
    let requests = worker.stats().requests - before.requests;
    async_std::task::block_on(worker.disconnect());

    let per_task_ms = cpu_used.as_secs_f64() * 1000.0 / n as f64;
    println!(
        "outage host worker vs the Python reference (JobManager), real zndraw-joblib server, {n} no-op tasks"
    );
    println!("  {:<34} {:>14} {:>16}", "", "outage (Rust)", "Python reference");
    // In-process: from building the worker to registered (the reference's
    // figure is from process start, interpreter and imports included).
    println!(
        "  {:<34} {:>11.1} ms {:>16}",
        "start to registered",
        startup.as_secs_f64() * 1000.0,
        "1100-1600 ms"
    );
    println!(
        "  {:<34} {:>11.2} ms {:>16}",
        "client CPU per task", per_task_ms, "3.4-4.2 ms"
    );
    println!(
        "  {:<34} {:>10.1} MiB {:>16}",
        "peak RSS",
        peak_rss_kib() as f64 / 1024.0,
        "~102 MiB"
    );
    println!(
        "  {:<34} {:>11.1} /s {:>16}",
        "drain throughput (server-bound)",
        n as f64 / wall.as_secs_f64(),
        "9.7-17.4 /s"
    );
    println!(
        "  requests per task: {:.2} (claim, running, completed)",
        requests as f64 / n as f64
    );
}
