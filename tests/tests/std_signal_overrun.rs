//! SIGTERM during a task that outlasts the grace period: the task is
//! reported failed ("worker shutting down") and the worker is deleted.
//! (One signal test per file: each runs in its own process.)

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use outage_core::StopReason;
use outage_core::protocol::TaskStatus;
use outage_runtime_std::{Job, Task, WorkerBuilder};
use outage_tests::capture;
use outage_tests::server::TestServer;
use serde_json::json;

/// Set by the handler when it starts: the server says `running` as soon
/// as it processes the worker's PATCH, before the worker has read the
/// answer and started the handler; a stop in between leaves the task to
/// the delete ("Worker disconnected"), by design (core machine.rs).
static STARTED: AtomicBool = AtomicBool::new(false);

#[test]
fn sigterm_gives_the_running_task_its_grace_then_reports_it_failed() {
    let log = capture::start();
    let server = TestServer::start().unwrap();
    let worker = async_std::task::block_on(
        WorkerBuilder::new(server.url(), server.token())
            .config(outage_tests::scenarios::fast_config())
            .job(
                Job::parse("@global:modifiers:Long").unwrap(),
                |_task: Task| async {
                    STARTED.store(true, Ordering::SeqCst);
                    async_std::task::sleep(Duration::from_secs(30)).await;
                    Ok(())
                },
            )
            .start(),
    )
    .unwrap();
    let id = server.submit("r", "@global:modifiers:Long", json!({})).unwrap();
    let runner = std::thread::spawn(move || {
        let reason = async_std::task::block_on(worker.run_until_signal(Duration::from_millis(300)));
        (reason, worker)
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while server.state().tasks[&id].status != TaskStatus::Running || !STARTED.load(Ordering::SeqCst) {
        assert!(std::time::Instant::now() < deadline, "the task never ran");
        std::thread::sleep(Duration::from_millis(10));
    }
    nix::sys::signal::raise(nix::sys::signal::Signal::SIGTERM).unwrap();
    let (reason, worker) = runner.join().unwrap();
    assert_eq!(reason, StopReason::Requested);
    assert!(worker.is_finished());
    let task = server.state().tasks[&id].clone();
    assert_eq!(task.status, TaskStatus::Failed);
    assert_eq!(task.error.as_deref(), Some("worker shutting down"));
    assert!(server.state().workers.is_empty(), "the worker was deleted");
    assert_eq!(
        log.matching("Stop requested, shutting down").len(),
        1,
        "{}",
        log.dump()
    );
}
