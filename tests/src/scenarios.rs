//! One scenario list for every worker runtime. A runtime plugs in through
//! [`Runtime`]; [`scenario_tests!`](crate::scenario_tests) turns the list
//! into `#[test]`s, so the host and embassy workers are held to the same
//! behaviour structurally, not by copied tests.
//!
//! Handlers in every scenario behave by their payload:
//! `{"sleep_ms": N}` sleeps, `{"fail": "text"}` fails with that text,
//! `{"panic": true}` panics (only where the runtime can catch panics).
//! Every run is recorded in [`crate::record`] under its task id, with the
//! payload the handler got and what it returned.

use std::time::{Duration, Instant};

use outage_core::protocol::TaskStatus;
use outage_core::{Config, Duration as CoreDuration, Fatal, Jitter, OnRegistrationLost, Stats, StopReason};
use serde_json::{Value, json};

use crate::capture::{self, Line, Session};
use crate::http;
use crate::real::RealServer;
use crate::server::{Fault, TestServer};

/// The two jobs every scenario serves.
pub const JOBS: [&str; 2] = ["@global:modifiers:Echo", "@global:analysis:Check"];

/// What a runtime is started with.
#[derive(Debug, Clone)]
pub struct Setup {
    /// Server URL.
    pub url: String,
    /// Bearer token.
    pub token: String,
    /// The core's configuration.
    pub config: Config,
}

/// A worker under test, seen from a test thread (blocking calls).
pub trait RunningWorker {
    /// Wait (at most `limit`) until both loops have exited; the stop reason.
    fn wait_stopped(&self, limit: Duration) -> Option<StopReason>;
    /// True once both loops have exited.
    fn is_finished(&self) -> bool;
    /// Why it stopped, once it has.
    fn stop_reason(&self) -> Option<StopReason>;
    /// Stop and delete the worker from the server.
    fn disconnect(&self);
    /// The worker id on the server.
    fn id(&self) -> String;
    /// Requests retried once after meeting a closed keep-alive connection.
    fn stale_connection_retries(&self) -> u64;
    /// Requests the worker sent so far, if the runtime counts them.
    fn requests(&self) -> Option<u64> {
        None
    }
    /// Stop gracefully (what SIGTERM does on a host): a running task gets
    /// `grace`; blocks until the worker has finished.
    fn shutdown(&self, grace: Duration);
    /// The counters.
    fn stats(&self) -> Stats;
}

/// A worker runtime under test.
pub trait Runtime {
    /// For messages.
    const NAME: &'static str;
    /// The running worker.
    type Worker: RunningWorker;
    /// The most tasks it runs at once ([`Config::concurrency`]).
    const MAX_CONCURRENCY: u8;
    /// Start a worker serving [`JOBS`] (blocking until registered).
    fn start(setup: &Setup) -> Result<Self::Worker, String>;
}

/// Short intervals so scenarios take seconds.
pub fn fast_config() -> Config {
    Config {
        heartbeat_interval: CoreDuration::from_millis(300),
        poll_interval: CoreDuration::from_millis(100),
        max_unreachable: CoreDuration::from_secs(2),
        log_interval: CoreDuration::from_millis(500),
        backoff_cap: CoreDuration::from_millis(400),
        request_timeout: CoreDuration::from_secs(1),
        disconnect_timeout: CoreDuration::from_secs(1),
        startup_base: CoreDuration::from_millis(200),
        startup_cap: CoreDuration::from_secs(1),
        jitter: Jitter::Equal,
        ..Config::DEFAULT
    }
}

fn setup(server: &TestServer, config: Config) -> Setup {
    Setup {
        url: server.url(),
        token: server.token().to_owned(),
        config,
    }
}

fn start<R: Runtime>(s: &Setup, log: &Session) -> R::Worker {
    R::start(s).unwrap_or_else(|e| panic!("{}: start failed: {e}\n{}", R::NAME, log.dump()))
}

/// Poll `cond` every 10 ms until it holds; fail after `limit`.
pub fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn status_of(server: &TestServer, id: uuid::Uuid) -> TaskStatus {
    server.state().tasks[&id].status
}

/// The countdown in a warning line: `(Ns/Ms elapsed)` → N.
fn countdown(line: &str) -> Option<u64> {
    let rest = line.strip_prefix("Server unreachable — retrying (")?;
    rest.split_once("s/")?.0.parse().ok()
}

/// Lines that look like a panic, a backtrace or a `Debug` dump.
fn noisy(lines: &[Line]) -> Vec<String> {
    const BAD: [&str; 10] = [
        "panicked",
        "backtrace",
        "Backtrace",
        "Os {",
        "Custom {",
        "kind:",
        "Error {",
        "Some(",
        "Kind(",
        "{ code:",
    ];
    lines
        .iter()
        .filter(|l| BAD.iter().any(|b| l.text.contains(b)))
        .map(|l| format!("{}: {}", l.target, l.text))
        .collect()
}

// ---------------------------------------------------------------- scenarios

/// Tasks are served: completed, or failed with the handler's text.
pub fn serves_tasks<R: Runtime>() {
    let log = capture::start();
    let server = TestServer::start().unwrap();
    let w = start::<R>(&setup(&server, fast_config()), &log);
    let ids: Vec<_> = (0..6)
        .map(|i| {
            let payload = if i % 3 == 2 {
                json!({"fail": format!("bad input {i}")})
            } else {
                json!({"n": i})
            };
            server.submit("room1", JOBS[i % 2], payload).unwrap()
        })
        .collect();
    wait_until("all tasks done", Duration::from_secs(10), || {
        ids.iter().all(|id| status_of(&server, *id).is_terminal())
    });
    for (i, id) in ids.iter().enumerate() {
        let t = server.state().tasks[id].clone();
        if i % 3 == 2 {
            assert_eq!(t.status, TaskStatus::Failed, "task {i}");
            assert_eq!(t.error.as_deref(), Some(format!("bad input {i}").as_str()));
        } else {
            assert_eq!(t.status, TaskStatus::Completed, "task {i}");
        }
    }
    assert_eq!(log.matching(") failed after ").len(), 2, "{}", log.dump());
    assert_eq!(log.matching("s: bad input").len(), 2, "{}", log.dump());
    assert_eq!(
        log.matching(") completed in ").len(),
        4,
        "one info line per task\n{}",
        log.dump()
    );
    w.disconnect();
    assert!(w.is_finished());
    assert!(server.state().workers.is_empty(), "disconnect deletes the worker");
}

/// The reference integration test: the countdown format, at most one
/// warning per log interval, then one clean error line and a stop.
pub fn countdown_then_clean_stop<R: Runtime>() {
    let log = capture::start();
    let server = TestServer::start().unwrap();
    let cfg = fast_config();
    let w = start::<R>(&setup(&server, cfg), &log);
    server.set_fault(Fault::Refuse);
    let reason = w.wait_stopped(Duration::from_secs(10)).expect("stops by itself");
    assert!(
        matches!(
            reason,
            StopReason::Unreachable {
                last_error: outage_core::Failure::Transport(_)
            }
        ),
        "{reason:?}"
    );
    let warnings = log.matching("Server unreachable — retrying");
    assert!(warnings.len() >= 3, "{}", log.dump());
    let counts: Vec<u64> = warnings
        .iter()
        .map(|l| countdown(&l.text).expect("countdown format"))
        .collect();
    assert!(counts.windows(2).all(|c| c[0] <= c[1]), "counts up: {counts:?}");
    assert!(
        warnings
            .iter()
            .all(|l| l.text.ends_with("s/2s elapsed)") && l.level == log::Level::Warn)
    );
    // At most one warning per log interval (500 ms): the core spaces them
    // by its own clock; in wall time, as the log captures them, allow a
    // loaded machine to deliver one line late and the next on time.
    for pair in warnings.windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(
            gap >= Duration::from_millis(250),
            "two warnings {gap:?} apart:\n{}",
            log.dump()
        );
    }
    // The countdown says when, by the core's clock: never two in one
    // interval (the limit is 2 s: at most one per 500 ms, 5 in all).
    assert!(warnings.len() <= 5, "{}", log.dump());
    let errors = log.error_lines();
    assert_eq!(errors.len(), 1, "{}", log.dump());
    assert_eq!(
        errors[0].text,
        "Server unreachable for >2s, shutting down. Last error: Connection refused"
    );
    assert!(noisy(&log.lines()).is_empty(), "{:?}", noisy(&log.lines()));
    assert!(w.is_finished());
}

/// While a long task runs only the heartbeat talks; an outage must still
/// stop the worker at its limit, not at the first heartbeat after it
/// (the outage deadline). Heartbeat 4 s, limit 5 s: without the deadline
/// the stop would come 8 s after the first failure.
pub fn an_outage_during_a_long_task_stops_at_the_limit<R: Runtime>() {
    let log = capture::start();
    let server = TestServer::start().unwrap();
    let cfg = Config {
        heartbeat_interval: CoreDuration::from_secs(4),
        max_unreachable: CoreDuration::from_secs(5),
        ..fast_config()
    };
    let w = start::<R>(&setup(&server, cfg), &log);
    let id = server
        .submit("room1", JOBS[0], json!({"sleep_ms": 60_000}))
        .unwrap();
    wait_until("task running", Duration::from_secs(10), || {
        status_of(&server, id) == TaskStatus::Running
    });
    server.set_fault(Fault::Refuse);
    let reason = w.wait_stopped(Duration::from_secs(20)).expect("stops by itself");
    assert!(matches!(reason, StopReason::Unreachable { .. }), "{reason:?}");
    let first = log
        .matching("Server unreachable — retrying (0s/5s elapsed)")
        .into_iter()
        .next()
        .expect("a first warning");
    let stop = log
        .matching("Server unreachable for >5s, shutting down")
        .into_iter()
        .next()
        .expect("the stop line");
    let took = stop.at - first.at;
    assert!(
        took >= Duration::from_millis(4_900) && took < Duration::from_millis(7_500),
        "stopped {took:?} after the first failure (limit 5 s; the next beat was 8 s):\n{}",
        log.dump()
    );
    assert!(noisy(&log.lines()).is_empty(), "{:?}", noisy(&log.lines()));
}

/// Review findings 2 and 3: a stop decided by one loop wakes the other out
/// of its backoff sleep, and the worker has really finished (both lanes
/// gone, the refused delete tried) promptly: the core decides at once; the
/// 1 s allowed here is for a loaded 2-core machine, against claim-loop
/// sleeps of up to 5 s.
pub fn stop_reaches_every_loop_promptly<R: Runtime>() {
    let log = capture::start();
    let server = TestServer::start().unwrap();
    let cfg = Config {
        // The claim loop sleeps up to 5 s between retries; the heartbeat
        // (every 300 ms) sees the limit first.
        poll_interval: CoreDuration::from_secs(2),
        backoff_cap: CoreDuration::from_secs(5),
        max_unreachable: CoreDuration::from_secs(1),
        ..fast_config()
    };
    let w = start::<R>(&setup(&server, cfg), &log);
    std::thread::sleep(Duration::from_millis(200));
    server.set_fault(Fault::Refuse);
    let stop_line = log
        .wait_for("shutting down", Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no stop line:\n{}", log.dump()));
    // Poll every millisecond: the first time both loops are seen gone is an
    // upper bound of when they went.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !w.is_finished() {
        assert!(
            Instant::now() < deadline,
            "the loops did not exit:\n{}",
            log.dump()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let exited_within = stop_line.at.elapsed();
    assert!(
        exited_within <= Duration::from_secs(1),
        "every loop exited only {exited_within:?} after the stop decision:\n{}",
        log.dump()
    );
    assert!(w.wait_stopped(Duration::from_secs(1)).is_some());
}

/// Any success ends the outage and resets the throttle: a second outage
/// starts its own clock and warns at once (review finding 1).
pub fn recovery_resets_the_outage<R: Runtime>() {
    let log = capture::start();
    let server = TestServer::start().unwrap();
    // A limit with room for a loaded machine's slow recovery (1.5 s).
    let cfg = Config {
        max_unreachable: CoreDuration::from_secs(4),
        ..fast_config()
    };
    let w = start::<R>(&setup(&server, cfg), &log);
    for round in 0..2 {
        server.restart(Duration::from_millis(2_500));
        std::thread::sleep(Duration::from_millis(2_500));
        let deadline = Instant::now() + Duration::from_secs(5);
        while log.matching("Server reachable again").len() <= round {
            assert!(
                Instant::now() < deadline,
                "no recovery {round} within 5 s:\n{}",
                log.dump()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // Two outages of 2.5 s each: 5 s in all, more than the 4 s limit,
    // but each started its own clock.
    assert_eq!(w.stop_reason(), None, "{}", log.dump());
    // The first warning of each outage counts from 0 s.
    let lines = log.worker_lines();
    let mut firsts = Vec::new();
    let mut in_outage = false;
    for l in &lines {
        if l.text.starts_with("Server reachable again") {
            in_outage = false;
        } else if let Some(n) = countdown(&l.text) {
            if !in_outage {
                firsts.push(n);
            }
            in_outage = true;
        }
    }
    assert_eq!(
        firsts,
        [0, 0],
        "each outage warns at once, from 0s:\n{}",
        log.dump()
    );
    w.disconnect();
}

/// A task that finishes during an outage keeps its outcome, which is
/// delivered after recovery, before anything new is claimed.
pub fn outcome_held_through_an_outage<R: Runtime>() {
    let log = capture::start();
    let server = TestServer::start().unwrap();
    // Margins for a loaded machine: the task runs 2 s and the server is
    // down for 5 s from the moment it is seen running, so the task ends
    // inside the outage even if this thread is a second late; the limit
    // (15 s) is far from both.
    let cfg = Config {
        max_unreachable: CoreDuration::from_secs(15),
        ..fast_config()
    };
    let w = start::<R>(&setup(&server, cfg), &log);
    let id = server
        .submit("room1", JOBS[0], json!({"sleep_ms": 2_000}))
        .unwrap();
    wait_until("task running", Duration::from_secs(10), || {
        status_of(&server, id) == TaskStatus::Running
    });
    server.restart(Duration::from_millis(5_000));
    let restarted = server.elapsed();
    wait_until("outcome delivered", Duration::from_secs(20), || {
        status_of(&server, id) == TaskStatus::Completed
    });
    let held = log
        .wait_for("Task outcome held", Duration::ZERO)
        .expect("held line");
    let delivered = log
        .wait_for("Delivered the task outcome", Duration::from_secs(1))
        .expect("delivered line");
    assert!(held.at < delivered.at);
    // After the outage the claim loop's first request delivers, not claims.
    let first = server
        .journal()
        .into_iter()
        .find(|e| {
            e.at > restarted
                && e.status.is_some()
                && (e.path.ends_with("/tasks/claim") || e.path.contains("/tasks/"))
        })
        .expect("requests after the outage");
    assert_eq!(
        first.method, "PATCH",
        "first claim-loop request after recovery: {first:?}"
    );
    assert!(first.path.ends_with(&id.to_string()));
    assert_eq!(w.stop_reason(), None);
    w.disconnect();
}

/// A panicking handler is reported `failed` and the worker keeps serving.
/// (Only for runtimes that can catch panics: a microcontroller aborts.)
pub fn handler_panic_is_reported<R: Runtime>() {
    let log = capture::start();
    let server = TestServer::start().unwrap();
    let w = start::<R>(&setup(&server, fast_config()), &log);
    let bad = server.submit("room1", JOBS[0], json!({"panic": true})).unwrap();
    let good = server.submit("room1", JOBS[0], json!({})).unwrap();
    wait_until("both done", Duration::from_secs(5), || {
        status_of(&server, bad).is_terminal() && status_of(&server, good).is_terminal()
    });
    let t = server.state().tasks[&bad].clone();
    assert_eq!(t.status, TaskStatus::Failed);
    assert_eq!(t.error.as_deref(), Some("handler panicked: boom"));
    assert_eq!(status_of(&server, good), TaskStatus::Completed);
    assert_eq!(w.stop_reason(), None);
    w.disconnect();
}

/// The server closing idle keep-alive connections (uvicorn: after 5 s) is
/// not an outage: an idempotent request (the heartbeat) that meets a
/// connection closed before any answer goes again, once, on a fresh one.
pub fn keepalive_close_is_not_an_outage<R: Runtime>() {
    let log = capture::start();
    let server = TestServer::builder()
        .idle_timeout(Duration::from_millis(150))
        .start()
        .unwrap();
    let cfg = Config {
        heartbeat_interval: CoreDuration::from_millis(400),
        poll_interval: CoreDuration::from_millis(300),
        ..fast_config()
    };
    let w = start::<R>(&setup(&server, cfg), &log);
    // The next heartbeat meets a connection closed under it.
    server.fault_next(Fault::Drop, "/workers/", 1);
    let id = server.submit("room1", JOBS[1], json!({})).unwrap();
    wait_until(
        "the task and the dropped heartbeat",
        Duration::from_secs(10),
        || {
            status_of(&server, id) == TaskStatus::Completed
                && server.journal().iter().any(|e| e.fault == Some("drop"))
        },
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(log.matching("Server unreachable").is_empty(), "{}", log.dump());
    assert!(
        w.stale_connection_retries() >= 1,
        "the dropped heartbeat was re-sent"
    );
    let journal = server.journal();
    let drop_at = journal.iter().position(|e| e.fault == Some("drop")).unwrap();
    let resent = &journal[drop_at + 1..];
    assert!(
        resent
            .iter()
            .any(|e| e.method == "PATCH" && e.path == journal[drop_at].path && e.status == Some(200)),
        "the heartbeat went again"
    );
    assert_eq!(w.stop_reason(), None);
    w.disconnect();
}

/// A claim whose connection closed after it was sent may have been acted
/// on: it is never re-sent blindly. The worker registers afresh and deletes
/// the old id (so the server fails whatever it held), then serves on.
pub fn a_lost_claim_answer_is_resolved_not_resent<R: Runtime>() {
    let log = capture::start();
    let server = TestServer::start().unwrap();
    let w = start::<R>(&setup(&server, fast_config()), &log);
    let old = w.id();
    server.fault_next(Fault::Drop, "/tasks/claim", 1);
    wait_until("a new worker id", Duration::from_secs(10), || w.id() != old);
    let id = server.submit("room1", JOBS[1], json!({})).unwrap();
    wait_until("the task", Duration::from_secs(10), || {
        status_of(&server, id) == TaskStatus::Completed
    });
    let journal = server.journal();
    let drop_at = journal.iter().position(|e| e.fault == Some("drop")).unwrap();
    // The first request of the claim loop after the lost claim registers
    // afresh; no claim goes again under the old id.
    let next = journal[drop_at + 1..]
        .iter()
        .find(|e| e.method != "PATCH")
        .expect("requests after the drop");
    assert_eq!(
        (next.method.as_str(), next.path.as_str()),
        ("POST", "/v1/joblib/workers")
    );
    let old_path = format!("/v1/joblib/workers/{old}");
    assert!(
        journal[drop_at..]
            .iter()
            .any(|e| e.method == "DELETE" && e.path == old_path && e.status == Some(204)),
        "the old id was deleted"
    );
    wait_until("the old id gone", Duration::from_secs(5), || {
        !server.state().workers.keys().any(|k| k.to_string() == old)
    });
    for needle in [
        "Claim answer lost (Connection closed)",
        "Registered afresh after a lost claim answer",
        "Old worker id deleted; serving",
    ] {
        assert_eq!(log.matching(needle).len(), 1, "{needle}\n{}", log.dump());
    }
    assert_eq!(w.stop_reason(), None);
    assert!(noisy(&log.lines()).is_empty(), "{:?}", noisy(&log.lines()));
    w.disconnect();
}

/// 401 stops the worker at once with a clear line; the token appears in no
/// log line and in no request path.
pub fn auth_refused_stops_and_token_never_leaks<R: Runtime>() {
    let log = capture::start();
    let server = TestServer::builder()
        .token("tok-Very-Secret-1234")
        .start()
        .unwrap();
    let w = start::<R>(&setup(&server, fast_config()), &log);
    server.submit("room1", JOBS[0], json!({"fail": "x"})).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    server.set_fault(Fault::Status {
        status: 500,
        retry_after: None,
    });
    std::thread::sleep(Duration::from_millis(300));
    server.clear_faults();
    server.revoke_token();
    let reason = w.wait_stopped(Duration::from_secs(3)).expect("stops at once");
    assert_eq!(
        reason,
        StopReason::RegistrationLost(Fatal::AuthRefused { status: 401 })
    );
    assert!(
        log.matching("Registration lost, shutting down: the server refused the token (HTTP 401)")
            .len()
            == 1,
        "{}",
        log.dump()
    );
    for line in log.lines() {
        assert!(
            !line.text.contains("Very-Secret"),
            "token in a log line: {}",
            line.text
        );
    }
    for e in server.journal() {
        assert!(!e.path.contains("Very-Secret"), "token in a path: {}", e.path);
    }
    assert!(noisy(&log.lines()).is_empty(), "{:?}", noisy(&log.lines()));
}

/// A server that forgot the worker: stop by default (the reference).
pub fn forgotten_worker_stops<R: Runtime>() {
    let log = capture::start();
    let server = TestServer::start().unwrap();
    let w = start::<R>(&setup(&server, fast_config()), &log);
    // Not `forget_state`: a claim cut off by its restart would be
    // ambiguous, and the worker would register afresh (1 run in 250).
    server.forget_workers();
    let reason = w
        .wait_stopped(Duration::from_secs(3))
        .unwrap_or_else(|| panic!("{}: did not stop\n{}", R::NAME, log.dump()));
    assert_eq!(reason, StopReason::RegistrationLost(Fatal::WorkerUnknown));
    assert_eq!(
        log.matching("Registration lost, shutting down").len(),
        1,
        "{}",
        log.dump()
    );
}

/// A server that forgot the worker: with the `Register` policy, register
/// again and carry on serving.
pub fn forgotten_worker_registers_again<R: Runtime>() {
    let log = capture::start();
    let server = TestServer::start().unwrap();
    let cfg = Config {
        on_registration_lost: OnRegistrationLost::Register,
        ..fast_config()
    };
    let w = start::<R>(&setup(&server, cfg), &log);
    let old = w.id();
    server.forget_state();
    log.wait_for("Registered again", Duration::from_secs(5))
        .unwrap_or_else(|| panic!("{}", log.dump()));
    assert_ne!(w.id(), old);
    let id = server
        .submit("room1", JOBS[0], json!({}))
        .expect("the job is registered again");
    wait_until("served after re-registering", Duration::from_secs(5), || {
        status_of(&server, id) == TaskStatus::Completed
    });
    assert_eq!(w.stop_reason(), None);
    w.disconnect();
}

/// Startup rides out a server that is not up yet, on the startup schedule.
pub fn startup_retries_until_the_server_is_up<R: Runtime>() {
    let log = capture::start();
    let server = TestServer::start().unwrap();
    server.schedule(Fault::Refuse, Duration::ZERO, Duration::from_millis(700));
    wait_until("refusing", Duration::from_secs(1), || {
        std::net::TcpStream::connect(server.addr()).is_err()
    });
    let w = start::<R>(&setup(&server, fast_config()), &log);
    assert!(
        !log.matching("Startup: create worker failed (Connection refused); retry 1/5")
            .is_empty(),
        "{}",
        log.dump()
    );
    assert_eq!(server.state().workers.len(), 1);
    w.disconnect();
}

/// A wrong token fails startup at once, with a clear error and no retry.
pub fn startup_fails_clearly<R: Runtime>() {
    let log = capture::start();
    let server = TestServer::start().unwrap();
    let s = Setup {
        token: "wrong-Secret-42".into(),
        ..setup(&server, fast_config())
    };
    let started = Instant::now();
    let err = match R::start(&s) {
        Ok(_) => panic!("a wrong token must not start"),
        Err(e) => e,
    };
    assert!(started.elapsed() < Duration::from_secs(2), "no retries on 401");
    assert!(
        err.contains("create worker failed: HTTP 401 Unauthorized"),
        "{err}"
    );
    assert!(!err.contains("Secret"), "{err}");
    assert_eq!(
        log.matching("Startup: create worker failed, giving up: HTTP 401 Unauthorized")
            .len(),
        1
    );
    assert_eq!(server.journal().len(), 1);
}

/// 503 with Retry-After: the claim loop waits as asked (capped).
pub fn retry_after_is_honoured<R: Runtime>() {
    let log = capture::start();
    let server = TestServer::start().unwrap();
    let cfg = Config {
        backoff_cap: CoreDuration::from_secs(2),
        max_unreachable: CoreDuration::from_secs(30),
        ..fast_config()
    };
    let w = start::<R>(&setup(&server, cfg), &log);
    server.set_fault_on(
        Fault::Status {
            status: 503,
            retry_after: Some(1),
        },
        "/tasks/claim",
    );
    let from = server.elapsed();
    std::thread::sleep(Duration::from_millis(3_500));
    let claims: Vec<_> = server
        .journal()
        .into_iter()
        .filter(|e| e.at > from && e.path.ends_with("/tasks/claim"))
        .collect();
    assert!(claims.len() >= 2, "{claims:?}");
    // The core's guarantee: a claim answered 503 with Retry-After 1 s is
    // sent again no sooner than 1 s after it was sent, even when a
    // heartbeat success ends the outage meanwhile. The journal stamps
    // arrival at the server, so allow 100 ms for the first of a pair to
    // arrive late; without Retry-After these retries come every 100-400 ms.
    for pair in claims.windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(
            gap >= Duration::from_millis(900),
            "claims {gap:?} apart: {claims:?}"
        );
    }
    w.disconnect();
}

/// Every request has a timeout: a server that accepts connections but never
/// answers is an outage like any other, and the worker stops on time.
pub fn unanswered_requests_time_out<R: Runtime>() {
    let log = capture::start();
    let server = TestServer::start().unwrap();
    let w = start::<R>(&setup(&server, fast_config()), &log);
    server.set_fault(Fault::Blackhole);
    let reason = w.wait_stopped(Duration::from_secs(15)).expect("stops by itself");
    assert_eq!(
        reason,
        StopReason::Unreachable {
            last_error: outage_core::Failure::Transport(outage_core::Transport::Timeout)
        },
        "{}",
        log.dump()
    );
    assert_eq!(
        log.matching("shutting down. Last error: Request timed out").len(),
        1,
        "{}",
        log.dump()
    );
    server.clear_faults();
}

/// Malformed, truncated and oversized answers are classified failures: the
/// worker warns and recovers, never crashes.
pub fn bad_answers_are_failures_not_crashes<R: Runtime>() {
    let log = capture::start();
    let server = TestServer::start().unwrap();
    let cfg = Config {
        max_unreachable: CoreDuration::from_secs(30),
        ..fast_config()
    };
    let w = start::<R>(&setup(&server, cfg), &log);
    for fault in [
        Fault::MalformedJson,
        Fault::TruncatedBody,
        Fault::OversizedBody(20 << 20),
        Fault::Reset,
    ] {
        server.set_fault_on(fault.clone(), "/tasks/claim");
        std::thread::sleep(Duration::from_millis(400));
        server.clear_faults();
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(w.stop_reason(), None, "{fault:?}\n{}", log.dump());
    }
    assert!(log.matching("Server unreachable").len() >= 2, "{}", log.dump());
    assert!(
        log.matching("Server reachable again").len() >= 2,
        "{}",
        log.dump()
    );
    let id = server.submit("room1", JOBS[0], json!({})).unwrap();
    wait_until("still serving", Duration::from_secs(5), || {
        status_of(&server, id) == TaskStatus::Completed
    });
    assert!(noisy(&log.lines()).is_empty(), "{:?}", noisy(&log.lines()));
    w.disconnect();
}

// ---------------------------------------------------------------- real server

fn submit_real(server: &RealServer, job: &str, payload: Value) -> String {
    let addr = http::addr_of(server.url()).unwrap();
    let body = serde_json::to_vec(&json!({ "payload": payload })).unwrap();
    let r = http::api(
        addr,
        server.token(),
        "POST",
        &format!("/rooms/room1/tasks/{job}"),
        Some(&body),
    )
    .expect("submit");
    assert_eq!(r.status, 202, "{}", r.text());
    r.json()["id"].as_str().unwrap().to_owned()
}

fn get_real(server: &RealServer, path: &str) -> http::Response {
    let addr = http::addr_of(server.url()).unwrap();
    http::api(addr, server.token(), "GET", path, None).expect("GET")
}

fn real_setup(server: &RealServer, config: Config) -> Setup {
    Setup {
        url: server.url().to_owned(),
        token: server.token().to_owned(),
        config,
    }
}

/// Against the real server: 20 tasks, some failing, end in the right
/// states; disconnect deletes the worker.
pub fn real_server_serves_and_disconnects<R: Runtime>() {
    let log = capture::start();
    let server = RealServer::start().expect("real job server");
    let cfg = Config {
        request_timeout: CoreDuration::from_secs(5),
        ..fast_config()
    };
    let w = start::<R>(&real_setup(&server, cfg), &log);
    let ids: Vec<(usize, String)> = (0..20)
        .map(|i| {
            let payload = if i % 4 == 3 {
                json!({"fail": format!("task {i} failed")})
            } else {
                json!({"i": i})
            };
            (i, submit_real(&server, JOBS[i % 2], payload))
        })
        .collect();
    wait_until("20 tasks done", Duration::from_secs(60), || {
        ids.iter().all(|(_, id)| {
            let s = get_real(&server, &format!("/tasks/{id}")).json()["status"].clone();
            s == "completed" || s == "failed"
        })
    });
    for (i, id) in &ids {
        let t = get_real(&server, &format!("/tasks/{id}")).json();
        if i % 4 == 3 {
            assert_eq!(t["status"], "failed", "{t}");
            assert_eq!(t["error"], format!("task {i} failed").as_str());
        } else {
            assert_eq!(t["status"], "completed", "{t}");
        }
    }
    let wid = w.id();
    w.disconnect();
    let workers = get_real(&server, "/workers").json();
    let listed = workers["items"]
        .as_array()
        .is_some_and(|a| a.iter().any(|x| x["id"] == wid.as_str()));
    assert!(!listed, "disconnect deleted the worker: {workers}");
    assert!(noisy(&log.lines()).is_empty(), "{:?}", noisy(&log.lines()));
}

/// Against the real server: it is stopped and restarted on the same
/// database; the worker rides the outage out and serves again.
pub fn real_server_outage_is_ridden_out<R: Runtime>() {
    let log = capture::start();
    let mut server = RealServer::start().expect("real job server");
    let cfg = Config {
        max_unreachable: CoreDuration::from_secs(30),
        request_timeout: CoreDuration::from_secs(5),
        ..fast_config()
    };
    let w = start::<R>(&real_setup(&server, cfg), &log);
    let before = submit_real(&server, JOBS[0], json!({}));
    wait_until("first task", Duration::from_secs(20), || {
        get_real(&server, &format!("/tasks/{before}")).json()["status"] == "completed"
    });
    server.stop_now().expect("stop the real server");
    log.wait_for("Server unreachable — retrying", Duration::from_secs(5))
        .unwrap_or_else(|| panic!("{}", log.dump()));
    std::thread::sleep(Duration::from_secs(1));
    server.restart().expect("restart on the same database");
    log.wait_for("Server reachable again", Duration::from_secs(15))
        .unwrap_or_else(|| panic!("{}", log.dump()));
    let after = submit_real(&server, JOBS[1], json!({}));
    wait_until("task after the outage", Duration::from_secs(20), || {
        get_real(&server, &format!("/tasks/{after}")).json()["status"] == "completed"
    });
    assert_eq!(w.stop_reason(), None, "{}", log.dump());
    w.disconnect();
}

/// The real server, and the test server as a fault-injecting proxy in
/// front of it (a status forced, connections refused, an answer repeated).
fn real_behind_proxy() -> (RealServer, TestServer) {
    let server = RealServer::start().expect("real job server");
    let proxy = TestServer::builder()
        .token(server.token())
        .upstream(server.url())
        .and_then(crate::server::Builder::start)
        .expect("the proxy");
    (server, proxy)
}

fn proxy_setup(proxy: &TestServer, config: Config) -> Setup {
    Setup {
        url: proxy.url(),
        token: proxy.token().to_owned(),
        config,
    }
}

/// A task's state on the real server.
fn real_task(server: &RealServer, id: &str) -> Value {
    get_real(server, &format!("/tasks/{id}")).json()
}

/// Is worker `id` still on the real server?
fn real_worker_listed(server: &RealServer, id: &str) -> bool {
    let workers = get_real(server, "/workers").json();
    workers["items"]
        .as_array()
        .is_some_and(|a| a.iter().any(|x| x["id"] == id))
}

/// Task `id` ran once and its handler succeeded; the worker held its
/// outcome (the first delivery met the fault), then delivered it, and gave
/// none up.
fn ran_once_then_delivered(id: &str, stats: Stats, what: &str, log: &Session) {
    let runs = crate::record::runs(id);
    assert_eq!(runs.len(), 1, "{what}: ran once: {runs:?}");
    assert_eq!(runs[0].outcome, Some(Ok(())), "{what}: {runs:?}");
    assert_eq!(
        (
            stats.outcomes_held,
            stats.outcomes_delivered,
            stats.outcomes_given_up
        ),
        (1, 1, 0),
        "{what}: held (its first delivery met the fault), then delivered: {stats:?}\n{}",
        log.dump()
    );
}

/// The test server: a graceful stop while a task runs, and its outcome
/// meets a 503, a 500 or a refused connection on its first delivery: held,
/// tried again within the grace, delivered once; the task ran once and
/// ends as its handler did; the worker deleted.
pub fn stop_delivers_through_a_fault<R: Runtime>() {
    let log = capture::start();
    let server = TestServer::start().unwrap();
    let cfg = Config {
        max_unreachable: CoreDuration::from_secs(30),
        ..fast_config()
    };
    for fault in [
        Fault::Status {
            status: 503,
            retry_after: None,
        },
        Fault::Status {
            status: 500,
            retry_after: None,
        },
        Fault::Refuse,
    ] {
        server.clear_faults();
        let w = start::<R>(&setup(&server, cfg), &log);
        let id = server
            .submit("room1", JOBS[0], json!({"sleep_ms": 1_000}))
            .unwrap();
        wait_until("the handler runs", Duration::from_secs(10), || {
            !crate::record::runs(&id.to_string()).is_empty()
        });
        if fault == Fault::Refuse {
            server.schedule(Fault::Refuse, Duration::ZERO, Duration::from_millis(2_500));
        } else {
            server.fault_after(fault.clone(), "PATCH", &format!("/tasks/{id}"), 0, 1);
        }
        w.shutdown(Duration::from_secs(10));
        let task = server.state().tasks[&id].clone();
        assert_eq!(task.status, TaskStatus::Completed, "{fault:?}\n{}", log.dump());
        ran_once_then_delivered(&id.to_string(), w.stats(), &format!("{fault:?}"), &log);
        assert!(server.state().workers.is_empty(), "{fault:?}: deleted");
        let patches = server
            .journal()
            .into_iter()
            .filter(|e| {
                e.method == "PATCH" && e.path.ends_with(&id.to_string()) && e.body.contains("completed")
            })
            .filter(|e| e.processed)
            .count();
        assert_eq!(patches, 1, "{fault:?}: applied once");
    }
}

/// Against the real server (behind the proxy): a graceful stop while a
/// task runs, and the task's `completed` meets a 503, a 500 or refused
/// connections on its way: the outcome is tried again within the grace and
/// delivered; the task ends on the server as its handler ended it (never
/// "Worker disconnected"), the worker is deleted, the counters say so.
pub fn real_stop_delivers_through_a_fault<R: Runtime>() {
    let log = capture::start();
    let (server, proxy) = real_behind_proxy();
    let cfg = Config {
        request_timeout: CoreDuration::from_secs(5),
        max_unreachable: CoreDuration::from_secs(30),
        ..fast_config()
    };
    let faults = [
        (
            "503",
            Some(Fault::Status {
                status: 503,
                retry_after: None,
            }),
        ),
        (
            "500",
            Some(Fault::Status {
                status: 500,
                retry_after: None,
            }),
        ),
        ("refused", None),
    ];
    for (what, fault) in faults {
        proxy.clear_faults();
        let w = start::<R>(&proxy_setup(&proxy, cfg), &log);
        let id = submit_real(&server, JOBS[0], json!({"sleep_ms": 1_500}));
        wait_until("the handler runs", Duration::from_secs(20), || {
            !crate::record::runs(&id).is_empty()
        });
        match &fault {
            // The next update of the task (its outcome) is answered by the
            // proxy; the server never sees it.
            Some(f) => proxy.fault_after(f.clone(), "PATCH", &format!("/tasks/{id}"), 0, 1),
            // Down (connections refused) until well after the task ends.
            None => proxy.schedule(Fault::Refuse, Duration::ZERO, Duration::from_millis(3_500)),
        }
        let t0 = Instant::now();
        w.shutdown(Duration::from_secs(10));
        let task = real_task(&server, &id);
        assert_eq!(task["status"], "completed", "{what}: {task}\n{}", log.dump());
        assert_eq!(task["error"], Value::Null, "{what}: {task}");
        assert_eq!(crate::record::runs(&id).len(), 1, "{what}: ran once");
        assert_eq!(w.stop_reason(), Some(StopReason::Requested), "{what}");
        let stats = w.stats();
        assert_eq!(
            (stats.outcomes_delivered, stats.outcomes_given_up),
            (1, 0),
            "{what}: {stats:?}\n{}",
            log.dump()
        );
        assert!(!real_worker_listed(&server, &w.id()), "{what}: deleted");
        assert!(t0.elapsed() < Duration::from_secs(15), "{what}: within the grace");
        let updates: Vec<_> = proxy
            .journal()
            .into_iter()
            .filter(|e| e.method == "PATCH" && e.path.ends_with(&id) && e.body.contains("completed"))
            .collect();
        match fault {
            Some(_) => {
                assert_eq!(
                    updates.len(),
                    2,
                    "{what}: refused once, then delivered: {updates:#?}"
                );
                assert!(
                    updates[0].fault.is_some() && updates[1].status == Some(200),
                    "{updates:#?}"
                );
            }
            None => assert_eq!(updates.last().and_then(|e| e.status), Some(200), "{updates:#?}"),
        }
        assert!(log.matching("Gave up").is_empty(), "{what}: {}", log.dump());
        assert!(
            log.matching("Server refused the task outcome").is_empty(),
            "{what}: {}",
            log.dump()
        );
    }
    assert!(noisy(&log.lines()).is_empty(), "{:?}", noisy(&log.lines()));
}

/// Against the real server, stopped just before a graceful stop of the
/// worker while a task runs, and started again (on its database) only once
/// the task's handler has returned — worker and server restarted together
/// by one deploy: the outcome's first delivery meets the server away (so
/// it is held: the retry is exercised, not skipped), is tried again within
/// the grace and delivered once the server is back. The task ran once and
/// ends on the server as its handler ended it; the worker is deleted.
pub fn real_restart_across_a_stop<R: Runtime>() {
    let log = capture::start();
    let mut server = RealServer::start().expect("real job server");
    let cfg = Config {
        request_timeout: CoreDuration::from_secs(5),
        max_unreachable: CoreDuration::from_secs(60),
        ..fast_config()
    };
    let w = start::<R>(&real_setup(&server, cfg), &log);
    let id = submit_real(&server, JOBS[1], json!({"sleep_ms": 1_200}));
    wait_until("the handler runs", Duration::from_secs(20), || {
        !crate::record::runs(&id).is_empty()
    });
    let (stopped, server_stopped) = std::sync::mpsc::channel();
    let (down, task) = (&mut server, &id);
    std::thread::scope(|s| {
        let restart = s.spawn(move || {
            down.stop_now().expect("stop the real server");
            let _ = stopped.send(());
            // The outcome goes out as the handler returns; the server's
            // start takes over a second more, so its first try meets the
            // server away even on a loaded machine.
            wait_until("the handler returns", Duration::from_secs(20), || {
                crate::record::runs(task)
                    .first()
                    .is_some_and(|r| r.finished.is_some())
            });
            std::thread::sleep(Duration::from_millis(300));
            down.restart().expect("start it again on its database");
        });
        // The stop is requested while the server is away (the sender is
        // dropped unsent if stopping it failed: the join says why).
        if server_stopped.recv().is_ok() {
            w.shutdown(Duration::from_secs(15));
        }
        restart.join().expect("the restart");
    });
    let task = real_task(&server, &id);
    assert_eq!(task["status"], "completed", "{task}\n{}", log.dump());
    assert_eq!(task["error"], Value::Null, "{task}");
    ran_once_then_delivered(&id, w.stats(), "server restarted", &log);
    assert_eq!(w.stop_reason(), Some(StopReason::Requested));
    assert!(!real_worker_listed(&server, &w.id()), "{}", log.dump());
    assert!(log.matching("Gave up").is_empty(), "{}", log.dump());
}

/// Against the real server (behind the proxy): the second claim's answer
/// is the first one's again (an answer delivered twice) — with 1, 2 or 4
/// task slots, the task it names is held, running, or just finished. It
/// is never started again; the claim is ambiguous (the server claimed
/// another task for the worker meanwhile), so the worker registers afresh
/// once its running tasks are done, and the old id's hidden task is failed
/// by the server. Every task ends terminal; a task whose handler ran ends
/// as the handler did; no task ran twice.
pub fn real_repeated_claim_answer_runs_no_task_twice<R: Runtime>() {
    let log = capture::start();
    let (server, proxy) = real_behind_proxy();
    for slots in [1u8, 2, 4].into_iter().filter(|s| *s <= R::MAX_CONCURRENCY) {
        proxy.clear_faults();
        proxy.clear_journal();
        let cfg = Config {
            request_timeout: CoreDuration::from_secs(5),
            concurrency: slots,
            ..fast_config()
        };
        // The job is registered (under a stand-in worker) before the worker
        // starts, so that the tasks are queued when it claims first.
        let addr = http::addr_of(server.url()).unwrap();
        let r = http::api(
            addr,
            server.token(),
            "PUT",
            "/rooms/@global/jobs",
            Some(br#"{"category":"modifiers","name":"Echo","schema":{}}"#),
        )
        .expect("register the job");
        assert!(r.status == 200 || r.status == 201, "{}", r.text());
        let ids: Vec<String> = (0..3 * usize::from(slots))
            .map(|i| submit_real(&server, JOBS[0], json!({"sleep_ms": 600, "i": i})))
            .collect();
        proxy.fault_after(Fault::Repeat, "POST", "/tasks/claim", 1, 1);
        let w = start::<R>(&proxy_setup(&proxy, cfg), &log);
        wait_until("every task terminal", Duration::from_secs(60), || {
            ids.iter().all(|id| {
                let s = real_task(&server, id)["status"].clone();
                s == "completed" || s == "failed"
            })
        });
        let repeated = proxy
            .journal()
            .iter()
            .filter(|e| e.fault == Some("repeat"))
            .count();
        assert_eq!(repeated, 1, "{slots} slots: one answer repeated");
        for id in &ids {
            let runs = crate::record::runs(id);
            let task = real_task(&server, id);
            assert!(
                runs.len() <= 1,
                "{slots} slots: task {id} ran {} times\n{}",
                runs.len(),
                log.dump()
            );
            if runs.is_empty() {
                assert_eq!(task["error"], "Worker disconnected", "{slots} slots: {task}");
            } else {
                assert_eq!(
                    task["status"],
                    "completed",
                    "{slots} slots: {task}\n{}",
                    log.dump()
                );
            }
        }
        assert!(
            !log.matching("A claim answered with a task this worker already runs or has finished")
                .is_empty(),
            "{slots} slots\n{}",
            log.dump()
        );
        assert_eq!(w.stop_reason(), None, "{slots} slots\n{}", log.dump());
        w.disconnect();
    }
}

/// Strings the server and submitters choose (here a room name holding a
/// newline and an ERROR line) are escaped in the log: no line can be forged.
/// The handler gets them as submitted, runs once, and its failure is what
/// the server holds.
pub fn real_room_names_cannot_forge_log_lines<R: Runtime>() {
    let log = capture::start();
    let server = RealServer::start().expect("real job server");
    let w = start::<R>(&real_setup(&server, fast_config()), &log);
    let addr = http::addr_of(server.url()).unwrap();
    let path = format!("/rooms/{}/tasks/{}", "r%0AERROR%20forged%0D%1B%5B31m", JOBS[0]);
    let r = http::api(
        addr,
        server.token(),
        "POST",
        &path,
        Some(br#"{"payload":{"fail":"one\ntwo"}}"#),
    )
    .expect("submit");
    assert_eq!(r.status, 202, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_owned();
    wait_until("the task is done", Duration::from_secs(20), || {
        real_task(&server, &id)["status"] == "failed"
    });
    assert_eq!(real_task(&server, &id)["error"], "one\ntwo");
    let runs = crate::record::runs(&id);
    assert_eq!(runs.len(), 1, "ran once: {runs:?}");
    assert_eq!(
        runs[0].room_id, "r\nERROR forged\r\u{1b}[31m",
        "the room as submitted"
    );
    assert_eq!(runs[0].outcome, Some(Err("one\ntwo".to_owned())), "{runs:?}");
    let line = log
        .wait_for(&format!("Task {id} "), Duration::from_secs(5))
        .unwrap_or_else(|| panic!("{}", log.dump()));
    assert!(
        line.text.contains("room r\\nERROR forged\\r\\u{1b}[31m)") && line.text.ends_with("one\\ntwo"),
        "{}",
        line.text
    );
    for l in log.lines() {
        assert!(
            !l.text.contains(['\n', '\r', '\u{1b}']),
            "a raw control character: {:?}",
            l.text
        );
    }
    w.disconnect();
}

/// A claim refused for good (here a 308 a proxy answers for every claim):
/// the claim loop backs off (capped) instead of asking every poll, says so
/// at most once per log interval, and serves again when the claims are
/// answered (the next task runs once and completes).
pub fn real_refused_claims_back_off<R: Runtime>() {
    let log = capture::start();
    let (server, proxy) = real_behind_proxy();
    let w = start::<R>(&proxy_setup(&proxy, fast_config()), &log);
    proxy.set_fault_on_request(
        Fault::Status {
            status: 308,
            retry_after: None,
        },
        "POST",
        "/tasks/claim",
    );
    let from = proxy.elapsed();
    std::thread::sleep(Duration::from_secs(4));
    proxy.clear_faults();
    let to = proxy.elapsed();
    let claims = proxy
        .journal()
        .iter()
        .filter(|e| e.path.ends_with("/tasks/claim") && e.at >= from && e.at < to)
        .count();
    // Polling every 100 ms would be ~40; the backoff (100, 200, 400 ms cap,
    // jittered) ~11. Generous for a loaded machine.
    assert!(
        (2..=20).contains(&claims),
        "{claims} claims in 4 s\n{}",
        log.dump()
    );
    let warnings = log.matching("The server refused the claim (HTTP 308");
    // One per log interval (500 ms) at most: ≤ 9 in 4 s.
    assert!(
        (1..=9).contains(&warnings.len()),
        "{} warnings\n{}",
        warnings.len(),
        log.dump()
    );
    let id = submit_real(&server, JOBS[0], json!({}));
    wait_until("served again", Duration::from_secs(20), || {
        real_task(&server, &id)["status"] == "completed"
    });
    let runs = crate::record::runs(&id);
    assert_eq!(runs.len(), 1, "ran once: {runs:?}");
    assert_eq!(runs[0].outcome, Some(Ok(())), "{runs:?}");
    assert_eq!(w.stop_reason(), None);
    w.disconnect();
}

/// Turns the scenario list into `#[test]`s for one runtime:
/// `outage_tests::scenario_tests!(MyRuntime);`
#[macro_export]
macro_rules! scenario_tests {
    ($rt:ty) => {
        $crate::scenario_tests!(@each $rt;
            serves_tasks,
            countdown_then_clean_stop,
            an_outage_during_a_long_task_stops_at_the_limit,
            stop_reaches_every_loop_promptly,
            recovery_resets_the_outage,
            outcome_held_through_an_outage,
            keepalive_close_is_not_an_outage,
            a_lost_claim_answer_is_resolved_not_resent,
            auth_refused_stops_and_token_never_leaks,
            forgotten_worker_stops,
            forgotten_worker_registers_again,
            startup_retries_until_the_server_is_up,
            startup_fails_clearly,
            retry_after_is_honoured,
            unanswered_requests_time_out,
            bad_answers_are_failures_not_crashes,
            real_server_serves_and_disconnects,
            real_server_outage_is_ridden_out,
            stop_delivers_through_a_fault,
            real_stop_delivers_through_a_fault,
            real_restart_across_a_stop,
            real_repeated_claim_answer_runs_no_task_twice,
            real_room_names_cannot_forge_log_lines,
            real_refused_claims_back_off,
        );
    };
    (@each $rt:ty; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                $crate::scenarios::$name::<$rt>();
            }
        )*
    };
}

/// The scenarios only a runtime that catches handler panics can pass.
#[macro_export]
macro_rules! panic_scenario_tests {
    ($rt:ty) => {
        $crate::scenario_tests!(@each $rt; handler_panic_is_reported);
    };
}
