//! `outage-worker`'s task runner: an external command per task, run
//! directly (no shell), against the test job server.

use std::time::{Duration, Instant};

use outage_core::protocol::TaskStatus;
use outage_runtime_std::command::Command;
use outage_runtime_std::{Job, WorkerBuilder};
use outage_tests::server::TestServer;
use outage_tests::std_rt::StdWorker;
use serde_json::json;

fn wait_terminal(server: &TestServer, id: uuid::Uuid) -> (TaskStatus, Option<String>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let t = server.state().tasks[&id].clone();
        if t.status.is_terminal() {
            return (t.status, t.error);
        }
        assert!(Instant::now() < deadline, "task did not finish");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn start(server: &TestServer, jobs: Vec<(&str, Command)>) -> StdWorker {
    let mut b =
        WorkerBuilder::new(server.url(), server.token()).config(outage_tests::scenarios::fast_config());
    for (name, cmd) in jobs {
        b = b.job(Job::parse(name).unwrap(), cmd);
    }
    StdWorker(async_std::task::block_on(b.start()).expect("start"))
}

#[test]
fn payload_on_stdin_and_task_in_the_environment() {
    let server = TestServer::start().unwrap();
    // The program checks its stdin and environment and says so by its exit status.
    let check = r#"read -r p; test "$p" = '{"x":1}' && test "$OUTAGE_JOB" = '@global:modifiers:Sh' && test -n "$OUTAGE_TASK_ID" && test "$OUTAGE_ROOM" = room7"#;
    let _w = start(
        &server,
        vec![("@global:modifiers:Sh", Command::new("sh", ["-c", check]))],
    );
    let id = server
        .submit("room7", "@global:modifiers:Sh", json!({"x": 1}))
        .unwrap();
    assert_eq!(wait_terminal(&server, id), (TaskStatus::Completed, None));
}

#[test]
fn a_failing_command_reports_its_exit_status_and_stderr_tail() {
    let server = TestServer::start().unwrap();
    let fail = "cat >/dev/null; echo first line >&2; echo last words >&2; exit 3";
    let _w = start(
        &server,
        vec![("@global:analysis:Fail", Command::new("sh", ["-c", fail]))],
    );
    let id = server.submit("r", "@global:analysis:Fail", json!({})).unwrap();
    let (status, error) = wait_terminal(&server, id);
    assert_eq!(status, TaskStatus::Failed);
    assert_eq!(error.as_deref(), Some("exit status 3: first line\nlast words"));
}

#[test]
fn a_missing_program_fails_the_task_not_the_worker() {
    let server = TestServer::start().unwrap();
    let w = start(
        &server,
        vec![(
            "@global:analysis:Nope",
            Command::new("/nonexistent/program", Vec::<String>::new()),
        )],
    );
    let id = server.submit("r", "@global:analysis:Nope", json!({})).unwrap();
    let (status, error) = wait_terminal(&server, id);
    assert_eq!(status, TaskStatus::Failed);
    assert!(error.unwrap().starts_with("cannot run /nonexistent/program: "));
    assert_eq!(w.stop_reason(), None);
}

#[test]
fn arguments_are_not_interpreted_by_a_shell() {
    let server = TestServer::start().unwrap();
    // With a shell, `exit 1` after `;` would fail the task; run directly,
    // `echo` just prints its arguments.
    let _w = start(
        &server,
        vec![(
            "@global:modifiers:Echo",
            Command::new("echo", ["a;", "exit", "1", "$HOME"]),
        )],
    );
    let id = server.submit("r", "@global:modifiers:Echo", json!({})).unwrap();
    assert_eq!(wait_terminal(&server, id), (TaskStatus::Completed, None));
}

#[test]
fn dropping_a_worker_halts_its_loops() {
    let server = TestServer::start().unwrap();
    let worker = async_std::task::block_on(
        WorkerBuilder::new(server.url(), server.token())
            .config(outage_tests::scenarios::fast_config())
            .job(
                Job::parse("@global:modifiers:Echo").unwrap(),
                Command::new("true", Vec::<String>::new()),
            )
            .start(),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(400));
    drop(worker);
    std::thread::sleep(Duration::from_millis(100));
    let before = server.journal().len();
    std::thread::sleep(Duration::from_millis(1_000));
    assert_eq!(
        server.journal().len(),
        before,
        "no request after the worker was dropped"
    );
}
