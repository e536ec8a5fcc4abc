//! A request the device worker cannot write is its own problem, not an
//! outage: with a request-body buffer too small for a failed task's
//! outcome, the worker says which request and why in one error line,
//! stops (`StopReason::Local`), and `wait` returns — no countdown, no
//! retries of a request that cannot be written.

use std::time::Duration;

use outage_core::{Endpoint, Local, StopReason};
use outage_tests::capture;
use outage_tests::embassy_rt::EmbassyRuntime;
use outage_tests::scenarios::{JOBS, RunningWorker, Setup, fast_config};
use outage_tests::server::TestServer;
use serde_json::json;

#[test]
fn an_outcome_too_large_for_the_buffer_stops_the_worker_clearly() {
    let log = capture::start();
    let server = TestServer::start().unwrap();
    let setup = Setup {
        url: server.url(),
        token: server.token().to_owned(),
        config: fast_config(),
    };
    // 140 bytes: a registration (100) and a claim (51) fit; `{"status":"failed",
    // "error":"<120 characters>"}` does not.
    let w =
        EmbassyRuntime::start_with_tx(&setup, 140).unwrap_or_else(|e| panic!("start: {e}\n{}", log.dump()));
    server
        .submit("room1", JOBS[0], json!({"fail": "x".repeat(120)}))
        .unwrap();
    let reason = w
        .wait_stopped(Duration::from_secs(20))
        .unwrap_or_else(|| panic!("did not stop:\n{}", log.dump()));
    assert_eq!(
        reason,
        StopReason::Local {
            what: Endpoint::TaskStatus,
            error: Local::BodyTooLarge
        },
        "{}",
        log.dump()
    );
    let errors = log.error_lines();
    assert_eq!(errors.len(), 1, "{}", log.dump());
    assert_eq!(
        errors[0].text,
        "Cannot write the task status update request (the request body does not fit the worker's buffer), shutting down: a worker setting is too small for it"
    );
    assert!(
        log.matching("Server unreachable").is_empty(),
        "no outage:\n{}",
        log.dump()
    );
    assert!(w.is_finished());
}
