//! The embassy worker under `Worker::supervise`, as the firmware example
//! runs it: a gateway that stops by itself (an outage longer than
//! `max_unreachable`, a lost registration) starts again after a capped
//! backoff, says why, and serves tasks again; a shutdown ends it in every
//! phase. On the host: embassy's std executor, TCP to the test server on
//! loopback.

use std::time::{Duration, Instant};

use outage_core::protocol::TaskStatus;
use outage_core::{Config, Duration as CoreDuration, StopReason};
use outage_runtime_embassy::Restart;
use outage_tests::capture::{self, Session};
use outage_tests::embassy_rt::SupervisedWorker;
use outage_tests::scenarios::{JOBS, Setup, fast_config};
use outage_tests::server::TestServer;
use serde_json::json;

fn setup(server: &TestServer, config: Config) -> Setup {
    Setup {
        url: server.url(),
        token: server.token().to_owned(),
        config,
    }
}

fn wait_until(what: &str, limit: Duration, log: &Session, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {limit:?}\n{}",
            log.dump()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Submits a task and waits until the worker `id` completed it.
fn served(server: &TestServer, log: &Session, id: &str) {
    let task = server.submit("room1", JOBS[0], json!({"n": 1})).unwrap();
    wait_until("the task completed", Duration::from_secs(20), log, || {
        server.state().tasks[&task].status == TaskStatus::Completed
    });
    let by = server.journal().into_iter().any(|e| {
        e.method == "POST"
            && e.path.ends_with("/tasks/claim")
            && e.body.contains(id)
            && e.reply_body
                .as_deref()
                .is_some_and(|b| b.contains(&task.to_string()))
    });
    assert!(by, "task {task} was claimed by worker {id}\n{}", log.dump());
}

/// The wait in a restart line (`…; starting again in 0.3s (restart 2)`).
fn wait_secs(line: &str) -> f64 {
    line.split("; starting again in ")
        .nth(1)
        .and_then(|t| t.split('s').next())
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no wait in seconds: {line}"))
}

/// Quick restarts for tests: 200 ms doubling to 800 ms.
const QUICK: Restart = Restart {
    first: CoreDuration::from_millis(200),
    cap: CoreDuration::from_millis(800),
    healthy_after: CoreDuration::from_secs(60),
};

/// The outage limit is 1.5 s and the server is down for 4 s: the worker
/// stops, starts again while the server is still down (startup gives up:
/// another restart), and once the server is back registers afresh and
/// serves a task. Restart waits grow, capped.
#[test]
fn restarts_after_an_outage_longer_than_the_limit_then_serves() {
    let log = capture::start();
    let server = TestServer::start().unwrap();
    let config = Config {
        max_unreachable: CoreDuration::from_millis(1_500),
        startup_retries: 1,
        ..fast_config()
    };
    let w = SupervisedWorker::start(&setup(&server, config), QUICK).unwrap();
    wait_until("registered", Duration::from_secs(10), &log, || {
        !w.worker().worker_id().is_empty()
    });
    let first = w.worker().worker_id().as_str().to_owned();
    served(&server, &log, &first);

    let down = Duration::from_secs(4);
    server.restart(down);
    let outage = Instant::now();
    wait_until("the stop", Duration::from_secs(10), &log, || {
        w.worker().stats().restarts >= 1
    });
    assert!(
        outage.elapsed() < down,
        "stopped while still down\n{}",
        log.dump()
    );
    let stop = log
        .wait_for("Worker stopped: ", Duration::ZERO)
        .expect("the restart line says why");
    assert_eq!(
        stop.text.split("; starting again in ").next(),
        Some("Worker stopped: server unreachable for too long (last error: Connection refused)"),
        "{}",
        log.dump()
    );
    assert_eq!(stop.level, log::Level::Warn);
    assert!(stop.text.ends_with("(restart 1)"), "{}", stop.text);

    wait_until("registered again", Duration::from_secs(20), &log, || {
        let id = w.worker().worker_id();
        !id.is_empty() && id.as_str() != first
    });
    assert!(outage.elapsed() >= down);
    let second = w.worker().worker_id().as_str().to_owned();
    assert_eq!(w.worker().stop_reason(), None);
    assert!(server.state().workers.contains_key(&second.parse().unwrap()));
    // While the server was down the fresh worker could not start: at least
    // one more restart, each saying why.
    let restarts = log.matching("; starting again in ");
    assert!(restarts.len() >= 2, "{}", log.dump());
    assert_eq!(restarts.len() as u64, w.worker().stats().restarts);
    assert!(
        restarts[1..].iter().all(|l| l
            .text
            .starts_with("Worker could not start: create worker failed: Connection refused")),
        "{}",
        log.dump()
    );
    // The waits: 0.2 s doubling, equal jitter, never above the 0.8 s cap.
    for (n, line) in restarts.iter().enumerate() {
        let secs = wait_secs(&line.text);
        let full = (0.2 * 2f64.powi(n as i32)).min(0.8);
        assert!(secs <= full && secs >= full / 2.0 - 0.1, "restart {n}: {secs}s");
    }
    served(&server, &log, &second);

    assert!(
        w.shutdown(Duration::from_secs(10)),
        "supervise returns after a shutdown"
    );
    assert!(
        !server.state().workers.contains_key(&second.parse().unwrap()),
        "the shutdown deletes the worker"
    );
}

/// The server forgets every worker (a restart that lost its state): the
/// worker stops with its registration lost, starts again at once with a
/// new id, and serves.
#[test]
fn restarts_after_the_registration_is_lost_then_serves() {
    let log = capture::start();
    let server = TestServer::start().unwrap();
    let w = SupervisedWorker::start(&setup(&server, fast_config()), QUICK).unwrap();
    wait_until("registered", Duration::from_secs(10), &log, || {
        !w.worker().worker_id().is_empty()
    });
    let first = w.worker().worker_id().as_str().to_owned();
    // Not `forget_state`: a claim cut off by its restart would be
    // ambiguous, and the worker would register afresh without stopping.
    server.forget_workers();
    wait_until("registered again", Duration::from_secs(10), &log, || {
        let id = w.worker().worker_id();
        !id.is_empty() && id.as_str() != first
    });
    let second = w.worker().worker_id().as_str().to_owned();
    assert!(
        log.wait_for("Worker stopped: registration lost: ", Duration::ZERO)
            .is_some(),
        "{}",
        log.dump()
    );
    assert_eq!(w.worker().stats().restarts, 1, "{}", log.dump());
    // The server had forgotten the old worker: no DELETE for it.
    assert!(
        !server
            .journal()
            .iter()
            .any(|e| e.method == "DELETE" && e.path.contains(&first)),
        "{}",
        log.dump()
    );
    served(&server, &log, &second);
    assert!(w.shutdown(Duration::from_secs(10)));
}

/// A shutdown while the worker waits to restart, or while it is starting,
/// ends `supervise` at once: no restart after it.
#[test]
fn shutdown_ends_supervise_in_every_phase() {
    let log = capture::start();
    let server = TestServer::start().unwrap();
    // Refused from the start, and the startup retries take seconds.
    server.set_fault(outage_tests::server::Fault::Refuse);
    let config = Config {
        startup_retries: 5,
        startup_base: CoreDuration::from_secs(1),
        ..fast_config()
    };
    let w = SupervisedWorker::start(&setup(&server, config), QUICK).unwrap();
    wait_until("a startup retry", Duration::from_secs(10), &log, || {
        !log.matching("Startup: create worker failed (").is_empty()
    });
    let asked = Instant::now();
    assert!(w.shutdown(Duration::from_secs(5)), "{}", log.dump());
    assert!(asked.elapsed() < Duration::from_secs(2), "{:?}", asked.elapsed());
    assert_eq!(w.worker().stats().restarts, 0);

    // In the wait before a restart (a long one).
    server.clear_faults();
    let slow = Restart {
        first: CoreDuration::from_secs(30),
        cap: CoreDuration::from_secs(30),
        ..QUICK
    };
    let w = SupervisedWorker::start(&setup(&server, fast_config()), slow).unwrap();
    wait_until("registered", Duration::from_secs(10), &log, || {
        !w.worker().worker_id().is_empty()
    });
    let id = w.worker().worker_id().as_str().to_owned();
    server.revoke_token();
    wait_until("the stop", Duration::from_secs(10), &log, || {
        w.worker().stats().restarts == 1
    });
    let line = log.wait_for("; starting again in ", Duration::ZERO).unwrap();
    let wait = wait_secs(&line.text);
    assert!((15.0..=30.0).contains(&wait), "a wait of 15–30 s: {}", line.text);
    assert!(matches!(
        w.worker().stop_reason(),
        Some(StopReason::RegistrationLost(_))
    ));
    let asked = Instant::now();
    assert!(w.shutdown(Duration::from_secs(5)), "{}", log.dump());
    assert!(asked.elapsed() < Duration::from_secs(2), "{:?}", asked.elapsed());
    assert_eq!(w.worker().stats().restarts, 1);
    assert_eq!(
        w.worker().worker_id().as_str(),
        id,
        "no fresh worker after the shutdown"
    );
}
