//! SIGTERM during a task that finishes within the grace period: it is
//! reported completed, nothing new is claimed, and the worker is deleted.
//! (One signal test per file: each runs in its own process.)

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use outage_core::protocol::TaskStatus;
use outage_runtime_std::{Job, Task, WorkerBuilder};
use outage_tests::server::TestServer;
use serde_json::json;

/// Set by the handler when it starts: the server says `running` as soon
/// as it processes the worker's PATCH, before the worker has read the
/// answer and started the handler; a stop in between leaves the task to
/// the delete ("Worker disconnected"), by design (core machine.rs).
static STARTED: AtomicBool = AtomicBool::new(false);

#[test]
fn sigterm_lets_the_running_task_finish_within_grace() {
    let server = TestServer::start().unwrap();
    let worker = async_std::task::block_on(
        WorkerBuilder::new(server.url(), server.token())
            .config(outage_tests::scenarios::fast_config())
            .job(
                Job::parse("@global:modifiers:Short").unwrap(),
                |_task: Task| async {
                    STARTED.store(true, Ordering::SeqCst);
                    async_std::task::sleep(Duration::from_millis(500)).await;
                    Ok(())
                },
            )
            .start(),
    )
    .unwrap();
    let first = server.submit("r", "@global:modifiers:Short", json!({})).unwrap();
    let second = server.submit("r", "@global:modifiers:Short", json!({})).unwrap();
    let runner = std::thread::spawn(move || {
        async_std::task::block_on(worker.run_until_signal(Duration::from_secs(5)));
        worker
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while server.state().tasks[&first].status != TaskStatus::Running || !STARTED.load(Ordering::SeqCst) {
        assert!(std::time::Instant::now() < deadline, "the task never ran");
        std::thread::sleep(Duration::from_millis(10));
    }
    nix::sys::signal::raise(nix::sys::signal::Signal::SIGTERM).unwrap();
    let worker = runner.join().unwrap();
    assert!(worker.is_finished());
    assert_eq!(server.state().tasks[&first].status, TaskStatus::Completed);
    assert_eq!(
        server.state().tasks[&second].status,
        TaskStatus::Pending,
        "nothing new after the signal"
    );
    assert!(server.state().workers.is_empty());
}
