//! `outage-worker` (the CLI) stopped by a real SIGTERM while its command
//! runs a task, against the real job server behind the test server's
//! fault proxy, and the task's first `completed` update meets a fault: a
//! 503 from the proxy, or the proxy down (connections refused) for a
//! moment. The outcome is tried again within the grace and delivered: the
//! worker exits 0, its summary counts 1 delivered and 0 given up, the task
//! ends `completed` on the server (its command's outcome, never "Worker
//! disconnected"), it ran exactly once, and the worker deleted itself.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use outage_tests::real::RealServer;
use outage_tests::server::{Fault, TestServer};

const JOB: &str = "@global:modifiers:Sleepy";

/// The worker's log so far.
fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The task ids the command started for, in start order (one line per
/// start in the append-only record: pid, task id).
fn started_tasks(record: &Path) -> Vec<String> {
    read(record)
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(_, task)| task.to_owned())
        .collect()
}

fn wait_until(what: &str, within: Duration, log: &Path, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "{what}: not within {within:?}\n{}",
            read(log)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_exit(child: &mut Child, within: Duration, log: &Path) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("the worker did not exit within {within:?}:\n{}", read(log));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn worker_listed(server: &RealServer, id: &str) -> bool {
    let workers = server.api().call("GET", "/workers", None).json();
    workers["items"]
        .as_array()
        .is_some_and(|a| a.iter().any(|w| w["id"] == id))
}

/// SIGTERM while the command runs; `fault` is put on the way of the
/// task's outcome just before the signal.
fn stop_through(what: &str, fault: impl FnOnce(&TestServer, &str)) {
    let server = RealServer::start().expect("real job server");
    let proxy = TestServer::builder()
        .token(server.token())
        .upstream(server.url())
        .and_then(outage_tests::server::Builder::start)
        .expect("the proxy");
    let dir: PathBuf =
        std::env::temp_dir().join(format!("outage-cli-stop-fault-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let record = dir.join("starts");
    let log = dir.join("worker.log");
    let script = format!("echo \"$$ $ZNDRAW_TASK_ID\" >> {}; sleep 1.5", record.display());
    let mut child = outage_tests::cli::worker()
        .args(["--server", &proxy.url(), "--token", proxy.token()])
        .args(["--job", &format!("{JOB}=sh -c '{script}'")])
        .args(["--poll", "200ms", "--push", "off", "--grace", "10s"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start outage-worker");
    wait_until("registered", Duration::from_secs(60), &log, || {
        read(&log).contains("Registered as worker ")
    });
    let text = read(&log);
    let worker_id = text
        .split("Registered as worker ")
        .nth(1)
        .and_then(|rest| rest.split(" (").next())
        .map(|id| id.trim_matches('"').to_owned())
        .expect("the worker id");
    assert!(
        worker_listed(&server, &worker_id),
        "{what}: {worker_id} registered\n{text}"
    );
    let task = server.api().submit("room1", JOB, "{}");
    wait_until("the command runs", Duration::from_secs(30), &log, || {
        started_tasks(&record).len() == 1 && server.api().status(&task) == "running"
    });
    fault(&proxy, &task);
    let t0 = Instant::now();
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let status = wait_exit(&mut child, Duration::from_secs(30), &log);
    let elapsed = t0.elapsed();
    let text = read(&log);
    assert_eq!(status.code(), Some(0), "{what}: exit 0\n{text}");
    assert!(
        elapsed < Duration::from_secs(12),
        "{what}: within the grace: {elapsed:?}\n{text}"
    );
    assert_eq!(
        text.matches("SIGTERM received: stopping").count(),
        1,
        "{what}\n{text}"
    );
    assert!(
        text.contains("1 tasks completed, 0 failed; 1 outcomes delivered, 0 given up;"),
        "{what}: the summary\n{text}"
    );
    assert!(!text.contains("Gave up"), "{what}\n{text}");
    // The first delivery met the fault (held), a later one went through.
    assert!(
        text.contains("Task outcome held until the server is reachable again")
            && text.contains("Delivered the task outcome held during the outage"),
        "{what}: held, then delivered\n{text}"
    );
    assert!(
        !text.contains("Server refused the task outcome"),
        "{what}\n{text}"
    );
    let state = server.api().task(&task);
    assert_eq!(state["status"], "completed", "{what}: {state}\n{text}");
    assert_eq!(state["error"], serde_json::Value::Null, "{what}: {state}");
    assert_eq!(started_tasks(&record), [task.as_str()], "{what}: ran once");
    assert!(!worker_listed(&server, &worker_id), "{what}: deleted\n{text}");
    // The fault met the outcome: its first try never reached the server.
    let updates: Vec<_> = proxy
        .journal()
        .into_iter()
        .filter(|e| e.method == "PATCH" && e.path.ends_with(&task) && e.body.contains("completed"))
        .collect();
    assert_eq!(
        updates.last().and_then(|e| e.status),
        Some(200),
        "{what}: delivered last: {updates:#?}"
    );
    if what == "503" {
        // The proxy answered the first itself; the server saw the second.
        assert_eq!(updates.len(), 2, "{what}: {updates:#?}");
        assert!(
            updates[0].status == Some(503) && !updates[0].processed,
            "{what}: {updates:#?}"
        );
    }
    assert_eq!(
        updates.iter().filter(|e| e.processed).count(),
        1,
        "{what}: applied once: {updates:#?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sigterm_delivers_the_outcome_through_a_503() {
    stop_through("503", |proxy, task| {
        let status = Fault::Status {
            status: 503,
            retry_after: None,
        };
        proxy.fault_after(status, "PATCH", &format!("/tasks/{task}"), 0, 1);
    });
}

#[test]
fn sigterm_delivers_the_outcome_through_refused_connections() {
    // Down from the signal until well after the command ends (1.5 s).
    stop_through("refused", |proxy, _| {
        proxy.schedule(Fault::Refuse, Duration::ZERO, Duration::from_millis(3_500));
    });
}
