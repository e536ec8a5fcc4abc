//! A second signal while stopping stops at once: the running command's task
//! is reported failed, and its process group — which ignores SIGTERM here —
//! is killed with SIGKILL shortly after. (One signal test per file: each
//! runs in its own process.)

use std::time::{Duration, Instant};

use outage_core::protocol::TaskStatus;
use outage_runtime_std::command::{self, Command};
use outage_runtime_std::{Job, WorkerBuilder};
use outage_tests::server::TestServer;
use serde_json::json;

#[test]
fn a_second_signal_stops_at_once_and_the_command_group_is_killed() {
    let server = TestServer::start().unwrap();
    let pidfile = std::env::temp_dir().join(format!("outage-twice-{}", uuid::Uuid::new_v4().simple()));
    // The whole group ignores SIGTERM (an ignored signal is inherited).
    let script = format!(
        "trap '' TERM INT; sleep 60 & echo $! > {}; wait",
        pidfile.display()
    );
    let worker = async_std::task::block_on(
        WorkerBuilder::new(server.url(), server.token())
            .config(outage_tests::scenarios::fast_config())
            .job(
                Job::parse("@global:modifiers:Stubborn").unwrap(),
                Command::new("sh", ["-c", &script]),
            )
            .start(),
    )
    .unwrap();
    let id = server
        .submit("r", "@global:modifiers:Stubborn", json!({}))
        .unwrap();
    let runner = std::thread::spawn(move || {
        // A long grace: only the second signal can end the task early.
        async_std::task::block_on(worker.run_until_signal(Duration::from_secs(60)));
        command::wait_for_abandoned();
        worker
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.state().tasks[&id].status != TaskStatus::Running || !pidfile.exists() {
        assert!(Instant::now() < deadline, "the task never ran");
        std::thread::sleep(Duration::from_millis(20));
    }
    let t0 = Instant::now();
    nix::sys::signal::raise(nix::sys::signal::Signal::SIGTERM).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        server.state().tasks[&id].status,
        TaskStatus::Running,
        "the first signal leaves the task its grace"
    );
    nix::sys::signal::raise(nix::sys::signal::Signal::SIGINT).unwrap();
    let worker = runner.join().unwrap();
    assert!(worker.is_finished());
    assert!(
        t0.elapsed() < Duration::from_secs(20),
        "stopped at once, not after the 60 s grace: {:?}",
        t0.elapsed()
    );
    let task = server.state().tasks[&id].clone();
    assert_eq!(task.status, TaskStatus::Failed);
    assert_eq!(task.error.as_deref(), Some("worker shutting down"));
    assert!(server.state().workers.is_empty(), "the worker was deleted");
    // SIGTERM was ignored; SIGKILL followed.
    let pid = std::fs::read_to_string(&pidfile).unwrap();
    let stat = format!("/proc/{}/stat", pid.trim());
    let gone = || {
        std::fs::read_to_string(&stat)
            .map(|s| s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
            .unwrap_or(true)
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while !gone() {
        assert!(Instant::now() < deadline, "the command's child survived SIGKILL");
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = std::fs::remove_file(pidfile);
}
