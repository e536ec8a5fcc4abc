//! The real job server stopped with SIGSTOP for 25 s under an idle worker,
//! then continued with SIGCONT: the worker counts the outage down while the
//! server hangs, warns at most once more after it is back, serves a task
//! submitted then within 15 s, and leaves no task claimed. One test per
//! runtime.
//!
//! Unlike a stopped-and-restarted server, a SIGSTOPped one still accepts
//! connections (the kernel does) and processes every request it read once
//! it continues, also those whose clients gave up long ago.

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use outage_core::{Config, Duration as CoreDuration};
use outage_tests::capture;
use outage_tests::real::RealServer;
use outage_tests::scenarios::{JOBS, RunningWorker, Runtime, Setup};
use serde_json::{Value, json};

const PAUSE: Duration = Duration::from_secs(25);
const SERVE_WITHIN: Duration = Duration::from_secs(15);

/// SIGSTOPs a process until dropped (or [`Stopped::resume`]): a failing
/// test never leaves a stopped server behind.
struct Stopped(Option<Pid>);

impl Stopped {
    fn new(pid: u32) -> Stopped {
        let pid = Pid::from_raw(pid as i32);
        kill(pid, Signal::SIGSTOP).expect("SIGSTOP the real server");
        Stopped(Some(pid))
    }

    fn resume(&mut self) {
        if let Some(pid) = self.0.take() {
            kill(pid, Signal::SIGCONT).expect("SIGCONT the real server");
        }
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        self.resume();
    }
}

/// `(Ns/120s elapsed)` → N.
fn countdown(line: &str) -> Option<u64> {
    let rest = line.strip_prefix("Server unreachable — retrying (")?;
    let (n, rest) = rest.split_once("s/")?;
    rest.starts_with("120s elapsed)").then_some(())?;
    n.parse().ok()
}

fn pause_under_an_idle_worker<R: Runtime>() {
    let log = capture::start();
    let server = RealServer::start().expect("real job server (see ../shared/jobserver/README.md)");
    let config = Config {
        heartbeat_interval: CoreDuration::from_secs(10),
        poll_interval: CoreDuration::from_secs(2),
        request_timeout: CoreDuration::from_secs(5),
        max_unreachable: CoreDuration::from_secs(120),
        ..Config::DEFAULT
    };
    let setup = Setup {
        url: server.url().to_owned(),
        token: server.token().to_owned(),
        config,
    };
    let w = R::start(&setup).unwrap_or_else(|e| panic!("{}: start failed: {e}\n{}", R::NAME, log.dump()));
    std::thread::sleep(Duration::from_secs(1));

    // Declared after the worker: dropped (SIGCONT) before it disconnects.
    let mut stopped = Stopped::new(server.pid().expect("the server runs"));
    let stopped_at = Instant::now();
    std::thread::sleep(PAUSE);
    stopped.resume();
    let resumed_at = Instant::now();

    let submitted_at = Instant::now();
    let r = server.api().call_json(
        "POST",
        &format!("/rooms/room1/tasks/{}", JOBS[0]),
        Some(&json!({"payload": {"after": "SIGCONT"}})),
    );
    assert_eq!(r.status, 202, "{}", r.text());
    let id = r.json()["id"].as_str().expect("task id").to_owned();
    let mut task = Value::Null;
    while submitted_at.elapsed() < SERVE_WITHIN {
        task = server
            .api()
            .call_json("GET", &format!("/tasks/{id}"), None)
            .json();
        if task["status"] == "completed" {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let served_in = submitted_at.elapsed();
    std::thread::sleep(Duration::from_millis(500));

    let lines = log.worker_lines();
    let during: Vec<_> = lines
        .iter()
        .filter(|l| l.at >= stopped_at && l.at < resumed_at && l.text.starts_with("Server unreachable"))
        .collect();
    let after: Vec<_> = lines
        .iter()
        .filter(|l| l.at >= resumed_at && l.text.starts_with("Server unreachable"))
        .collect();
    let counts: Vec<u64> = during.iter().filter_map(|l| countdown(&l.text)).collect();
    println!(
        "{}: {} warnings while stopped {counts:?}, {} after SIGCONT; task served {:.1}s after submission",
        R::NAME,
        during.len(),
        after.len(),
        served_in.as_secs_f64()
    );
    let mut problems = Vec::new();
    if during.len() < 2 || counts.len() != during.len() {
        problems.push(format!(
            "want at least two countdown warnings while the server was stopped, got {:?}",
            during.iter().map(|l| &l.text).collect::<Vec<_>>()
        ));
    }
    if !counts.windows(2).all(|c| c[0] < c[1]) {
        problems.push(format!("the countdown does not count up: {counts:?}"));
    }
    if after.len() > 1 {
        problems.push(format!(
            "{} warnings after SIGCONT (at most one allowed): {:?}",
            after.len(),
            after
                .iter()
                .map(|l| format!("+{:.1}s {}", (l.at - resumed_at).as_secs_f64(), l.text))
                .collect::<Vec<_>>()
        ));
    }
    if task["status"] != "completed" {
        problems.push(format!(
            "the task submitted after SIGCONT is not completed {served_in:?} later: {task}"
        ));
    }
    for status in ["claimed", "running", "pending"] {
        let r = server
            .api()
            .call_json("GET", &format!("/rooms/room1/tasks?status={status}"), None);
        if r.json()["total"] != 0 {
            problems.push(format!("tasks left {status}: {}", r.text()));
        }
    }
    if let Some(reason) = w.stop_reason() {
        problems.push(format!("the worker stopped: {reason:?}"));
    }
    assert!(
        problems.is_empty(),
        "{}: {} problems:\n  {}\nworker log:\n{}",
        R::NAME,
        problems.len(),
        problems.join("\n  "),
        log.dump()
    );
    drop(stopped);
    w.disconnect();
}

#[test]
fn std() {
    pause_under_an_idle_worker::<outage_tests::std_rt::StdRuntime>();
}

#[test]
fn embassy() {
    pause_under_an_idle_worker::<outage_tests::embassy_rt::EmbassyRuntime>();
}
