//! The demo: a worker with two jobs against the Rust test job server on
//! loopback, through a short outage and then a permanent one.
//!
//! `cargo run -p outage-tests --bin outage-demo` — finishes in under a minute.

use std::io::Write;
use std::time::{Duration, Instant};

use outage_runtime_std::{Config, Duration as CoreDuration, Job, StopReason, Task, WorkerBuilder};
use outage_tests::server::{Fault, TestServer};
use serde_json::json;

const ECHO: &str = "@global:modifiers:Echo";
const CHECK: &str = "@global:analysis:Check";
const SHORT_OUTAGE: Duration = Duration::from_secs(5);

fn say(start: Instant, text: &str) {
    println!("[{:>5.1}s] ---- {text}", start.elapsed().as_secs_f64());
}

/// Waits (bounded) until `cond` holds.
fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        if Instant::now() > deadline {
            eprintln!("demo: gave up waiting for {what}");
            std::process::exit(1);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn terminal(server: &TestServer, ids: &[uuid::Uuid]) -> usize {
    let state = server.state();
    ids.iter()
        .filter(|id| state.tasks.get(id).is_some_and(|t| t.status.is_terminal()))
        .count()
}

fn main() {
    let start = Instant::now();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn,outage=info"))
        .format(move |buf, record| {
            writeln!(
                buf,
                "[{:>5.1}s] {:<5} {}",
                start.elapsed().as_secs_f64(),
                record.level(),
                record.args()
            )
        })
        .init();

    let server = TestServer::start().expect("start the test job server on 127.0.0.1");
    say(start, &format!("test job server on {} (in memory)", server.url()));

    // Short intervals so the whole story fits in under a minute.
    let config = Config {
        heartbeat_interval: CoreDuration::from_secs(1),
        poll_interval: CoreDuration::from_millis(250),
        max_unreachable: CoreDuration::from_secs(8),
        log_interval: CoreDuration::from_secs(1),
        backoff_cap: CoreDuration::from_secs(2),
        request_timeout: CoreDuration::from_secs(2),
        ..Config::DEFAULT
    };
    say(
        start,
        "worker: heartbeat 1s, poll 0.25s, backoff cap 2s, stop after 8s unreachable, one warning per 1s",
    );
    let worker = async_std::task::block_on(
        WorkerBuilder::new(server.url(), server.token())
            .config(config)
            .job(
                Job::new("@global", "modifiers", "Echo"),
                |task: Task| async move {
                    let payload: serde_json::Value = task.payload().unwrap_or_default();
                    let ms = payload["ms"].as_u64().unwrap_or(0);
                    async_std::task::sleep(Duration::from_millis(ms)).await;
                    Ok(())
                },
            )
            .job(
                Job::new("@global", "analysis", "Check"),
                |task: Task| async move {
                    let payload: serde_json::Value = task.payload().unwrap_or_default();
                    match payload["n"].as_u64() {
                        Some(n) if n % 2 == 0 => Ok(()),
                        Some(n) => Err(format!("{n} is odd")),
                        None => Err("payload has no n".into()),
                    }
                },
            )
            .start(),
    )
    .expect("start the worker");

    // 1. Normal service.
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(server.submit("room1", ECHO, json!({"ms": 100})).expect("submit"));
        ids.push(server.submit("room1", CHECK, json!({"n": n})).expect("submit"));
    }
    say(
        start,
        "submitted 6 tasks (3 Echo, 3 Check; Check fails on odd numbers)",
    );
    wait_for("the first tasks", Duration::from_secs(15), || {
        terminal(&server, &ids) == ids.len()
    });
    say(start, "all 6 done");

    // 2. A short outage while a task runs: its outcome is held and delivered.
    let slow = server.submit("room1", ECHO, json!({"ms": 1500})).expect("submit");
    ids.push(slow);
    wait_for("the slow task to start", Duration::from_secs(10), || {
        server.state().tasks[&slow].status == outage_core::protocol::TaskStatus::Running
    });
    let before = worker.stats();
    say(
        start,
        &format!(
            "server goes down for {}s while a 1.5s task runs",
            SHORT_OUTAGE.as_secs()
        ),
    );
    let down_at = Instant::now();
    server.restart(SHORT_OUTAGE);
    let back_at = down_at + SHORT_OUTAGE;
    wait_for(
        "the server to return",
        SHORT_OUTAGE + Duration::from_secs(1),
        || Instant::now() >= back_at,
    );
    say(start, "server is back (same state)");
    wait_for("the held outcome", Duration::from_secs(10), || {
        terminal(&server, &[slow]) == 1
    });
    let after = worker.stats();
    let recovered_in = worker
        .last_recovery()
        .map(|t| t.saturating_duration_since(back_at));

    // 3. The server goes away for good.
    std::thread::sleep(Duration::from_millis(500));
    say(start, "server goes down for good");
    server.set_fault(Fault::Refuse);
    let reason =
        async_std::task::block_on(async_std::future::timeout(Duration::from_secs(20), worker.wait()));
    let reason = match reason {
        Ok(r) => r,
        Err(_) => {
            eprintln!("demo: the worker did not stop within 20 s");
            std::process::exit(1);
        }
    };
    say(start, "worker stopped");

    let (completed, failed) = {
        let state = server.state();
        let done = |s| ids.iter().filter(|id| state.tasks[id].status == s).count();
        (
            done(outage_core::protocol::TaskStatus::Completed),
            done(outage_core::protocol::TaskStatus::Failed),
        )
    };
    let s = worker.stats();
    println!();
    println!("Summary");
    println!(
        "  tasks done:                  {} ({completed} completed, {failed} failed as their handler said)",
        ids.len()
    );
    println!(
        "  requests during the outage:  {} in {}s ({} failed), outcome held {} time(s) and delivered",
        after.requests - before.requests,
        SHORT_OUTAGE.as_secs(),
        after.failed_requests - before.failed_requests,
        after.outcomes_held - before.outcomes_held
    );
    match recovered_in {
        Some(d) => println!(
            "  time to recover:             {:.2}s after the server returned",
            d.as_secs_f64()
        ),
        None => println!("  time to recover:             (no recovery seen)"),
    }
    println!("  stopped because:             {reason}");
    println!(
        "  requests in all:             {} ({} failed)",
        s.requests, s.failed_requests
    );
    let ok = matches!(reason, StopReason::Unreachable { .. }) && completed + failed == ids.len();
    std::process::exit(if ok { 0 } else { 1 });
}
