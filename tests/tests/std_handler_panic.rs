//! A handler that panics before its future exists — in the synchronous
//! part of a closure, `|t| { let p: P = t.payload().unwrap(); async move {…} }`
//! — is caught like one that panics inside it: its task is reported
//! `failed` with the panic's text and the worker serves the next task.
//! (Before, the panic escaped `catch_unwind`, killed the worker's thread,
//! left the task `running` and `disconnect()` hanging.)

use std::future::Future;
use std::time::Duration;

use outage_core::protocol::TaskStatus;
use outage_runtime_std::{Job, Task, WorkerBuilder};
use outage_tests::scenarios::{fast_config, wait_until};
use outage_tests::server::TestServer;

const JOB: &str = "room1:modifiers:Sync";

fn handler(task: Task) -> impl Future<Output = Result<(), String>> + Send {
    let payload: serde_json::Value = task.payload().unwrap();
    if payload["panic"] == true {
        panic!("sync boom");
    }
    async { Ok(()) }
}

#[test]
fn a_handler_panicking_before_its_future_is_reported_failed() {
    let server = TestServer::start().unwrap();
    let w = async_std::task::block_on(
        WorkerBuilder::new(server.url(), server.token().to_owned())
            .config(fast_config())
            .job(Job::parse(JOB).unwrap(), handler)
            .start(),
    )
    .unwrap();
    let bad = server
        .submit("room1", JOB, serde_json::json!({"panic": true}))
        .unwrap();
    let good = server.submit("room1", JOB, serde_json::json!({})).unwrap();
    wait_until("both tasks ended", Duration::from_secs(20), || {
        let s = server.state();
        s.tasks[&bad].status.is_terminal() && s.tasks[&good].status.is_terminal()
    });
    let s = server.state();
    assert_eq!(s.tasks[&bad].status, TaskStatus::Failed);
    assert_eq!(
        s.tasks[&bad].error.as_deref(),
        Some("handler panicked: sync boom")
    );
    assert_eq!(s.tasks[&good].status, TaskStatus::Completed);
    assert_eq!(w.stop_reason(), None);
    let stopped = async_std::task::block_on(async_std::future::timeout(
        Duration::from_secs(20),
        w.disconnect(),
    ));
    assert!(stopped.is_ok(), "disconnect() did not return");
}
