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

/// Reproduction 1: `cat` echoing a 1 MB payload used to deadlock (stdin was
/// written whole before stdout was read).
#[test]
fn a_command_that_echoes_a_large_payload_does_not_deadlock() {
    let server = TestServer::start().unwrap();
    let _w = start(
        &server,
        vec![("@global:modifiers:Cat", Command::new("cat", Vec::<String>::new()))],
    );
    let big = "y".repeat(1 << 20);
    let id = server
        .submit("r", "@global:modifiers:Cat", json!({ "s": big }))
        .unwrap();
    assert_eq!(wait_terminal(&server, id), (TaskStatus::Completed, None));
}

/// Reproduction 2: a task ends when its command exits, not when every
/// process holding its pipes has gone.
#[test]
fn a_task_ends_when_its_command_exits() {
    let server = TestServer::start().unwrap();
    let _w = start(
        &server,
        vec![(
            "@global:modifiers:Bg",
            Command::new("sh", ["-c", "sleep 1000 & echo started; exit 0"]),
        )],
    );
    let t0 = Instant::now();
    let id = server.submit("r", "@global:modifiers:Bg", json!({})).unwrap();
    assert_eq!(wait_terminal(&server, id), (TaskStatus::Completed, None));
    assert!(t0.elapsed() < Duration::from_secs(8), "{:?}", t0.elapsed());
    let _ = std::process::Command::new("pkill")
        .args(["-f", "^sleep 1000$"])
        .status();
}

/// Reproduction 3: the command runs in its own process group, so a
/// terminal's Ctrl-C to the worker's group does not reach it directly.
#[test]
fn a_command_runs_in_its_own_process_group() {
    let server = TestServer::start().unwrap();
    // Field 5 of /proc/PID/stat is the process group: its own pid.
    let check = r#"set -- $(cat /proc/$$/stat); test "$5" = "$$""#;
    let _w = start(
        &server,
        vec![("@global:modifiers:Pg", Command::new("sh", ["-c", check]))],
    );
    let id = server.submit("r", "@global:modifiers:Pg", json!({})).unwrap();
    assert_eq!(wait_terminal(&server, id), (TaskStatus::Completed, None));
}

/// Commands can talk back: ZnDraw's variables are set (that the worker's
/// own credentials are not passed on is a unit test of `command`).
#[test]
fn commands_get_zndraw_variables() {
    let server = TestServer::start().unwrap();
    let check = r#"test "$ZNDRAW_URL" = "$1" && test "$ZNDRAW_TOKEN" = "$2" && test "$ZNDRAW_ROOM" = room9 \
        && test "$ZNDRAW_JOB" = '@global:modifiers:Env' && test -n "$ZNDRAW_TASK_ID" \
        && test "$ZNDRAW_TASK_ID" = "$OUTAGE_TASK_ID""#;
    let url = server.url();
    let _w = start(
        &server,
        vec![(
            "@global:modifiers:Env",
            Command::new("sh", ["-c", check, "sh", &url, server.token()]).server(url.clone(), server.token()),
        )],
    );
    let id = server
        .submit("room9", "@global:modifiers:Env", json!({}))
        .unwrap();
    assert_eq!(wait_terminal(&server, id), (TaskStatus::Completed, None));
}

/// `--task-timeout`: a task that runs too long fails, and its command's
/// whole group is killed.
#[test]
fn a_task_that_runs_too_long_fails_and_its_group_is_killed() {
    let server = TestServer::start().unwrap();
    let pidfile = std::env::temp_dir().join(format!("outage-timeout-{}", uuid::Uuid::new_v4().simple()));
    let script = format!("sleep 30 & echo $! > {}; wait", pidfile.display());
    let _w = start(
        &server,
        vec![(
            "@global:modifiers:Slow",
            Command::new("sh", ["-c", &script]).timeout(Duration::from_secs(1)),
        )],
    );
    let id = server.submit("r", "@global:modifiers:Slow", json!({})).unwrap();
    let (status, error) = wait_terminal(&server, id);
    assert_eq!(status, TaskStatus::Failed);
    assert_eq!(error.as_deref(), Some("task timed out after 1s"));
    let pid = std::fs::read_to_string(&pidfile).unwrap();
    let proc_dir = format!("/proc/{}", pid.trim());
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::path::Path::new(&proc_dir).exists() && !is_zombie(&proc_dir) {
        assert!(Instant::now() < deadline, "the command's child survived");
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = std::fs::remove_file(pidfile);
}

fn is_zombie(proc_dir: &str) -> bool {
    std::fs::read_to_string(format!("{proc_dir}/stat"))
        .map(|s| s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
        .unwrap_or(true)
}
