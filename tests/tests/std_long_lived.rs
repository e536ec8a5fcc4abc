//! `outage-worker --serve` against the real job server: long-lived handler
//! processes (issue 20). The handler is `tests/python/raw_handler.py`, which
//! speaks the protocol by hand and commits, on request, each fault a
//! handler can: a crash mid-task, a garbage, out-of-order or oversized
//! reply, prints on stdout, a start that never becomes ready or exits, a
//! process that ignores SIGTERM. Each task is checked on the server (its
//! final state) and in the handler's own record (run exactly once).

use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use outage_tests::real::{Api, RealServer};
use serde_json::Value;

const JOB: &str = "@global:modifiers:Raw";

fn handler() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("python/raw_handler.py")
}

struct Run {
    child: Child,
    dir: PathBuf,
    /// A word in the handler's command line, to find its processes.
    marker: String,
}

impl Run {
    /// `outage-worker --serve JOB=python3 raw_handler.py MODE MARKER` with `extra` flags.
    fn start(server: &RealServer, mode: &str, extra: &[&str]) -> Run {
        let serve = |marker: &str| format!("{JOB}=python3 {} {mode} {marker}", handler().display());
        Run::spawn(&["--token", server.token()], server.url(), serve, extra, &[])
    }

    /// `outage-worker --server URL CREDENTIALS --serve SERVE(marker) EXTRA`,
    /// with `env`; `$OUTAGE_TEST_OUT` is the handler's record.
    fn spawn(
        credentials: &[&str],
        url: &str,
        serve: impl Fn(&str) -> String,
        extra: &[&str],
        env: &[(&str, String)],
    ) -> Run {
        let marker = format!("m{}", uuid::Uuid::new_v4().simple());
        let dir = std::env::temp_dir().join(format!("outage-long-lived-{marker}"));
        std::fs::create_dir_all(&dir).unwrap();
        let child = outage_tests::cli::worker()
            .args(["--server", url])
            .args(credentials)
            .args(["--serve", &serve(&marker), "--poll", "200ms", "--push", "off"])
            .args(extra)
            .env("RUST_LOG", "debug,outage::http=info")
            .env("OUTAGE_TEST_OUT", dir.join("tasks.jsonl"))
            .env("OUTAGE_TEST_ONCE", dir.join("started-once"))
            .env("OUTAGE_TEST_MARKER", &marker)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("worker.log")).unwrap())
            .spawn()
            .expect("start outage-worker");
        Run { child, dir, marker }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("worker.log")).unwrap_or_default()
    }

    fn wait_for(&self, needle: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.log().contains(needle) {
            assert!(Instant::now() < deadline, "no {needle:?} in:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The tasks the handler ran, in order.
    fn ran(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.join("tasks.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), sig).unwrap();
    }

    fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                panic!("the worker did not exit within {within:?}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Processes whose command line holds this run's marker.
    fn handler_pids(&self) -> Vec<u32> {
        let mut pids = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            if pid != self.child.id() && String::from_utf8_lossy(&cmdline).contains(&self.marker) {
                pids.push(pid);
            }
        }
        pids
    }

    /// Stop with SIGTERM; the exit status, and no handler process left
    /// (none running, none a zombie).
    fn stop(&mut self) -> ExitStatus {
        self.signal(Signal::SIGTERM);
        let status = self.wait_exit(Duration::from_secs(60));
        self.assert_no_handler_left();
        status
    }

    /// Children of the worker that exited and were not reaped.
    fn zombies(&self) -> Vec<u32> {
        let mut found = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
            // pid (comm) state ppid …: after the last ')'.
            let Some((_, rest)) = stat.rsplit_once(") ") else {
                continue;
            };
            let mut fields = rest.split(' ');
            let (state, ppid) = (fields.next(), fields.next());
            if state == Some("Z") && ppid == Some(self.child.id().to_string().as_str()) {
                found.push(pid);
            }
        }
        found
    }

    fn assert_no_handler_left(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.handler_pids().is_empty() {
            assert!(
                Instant::now() < deadline,
                "handler processes left behind: {:?}\n{}",
                self.handler_pids(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for pid in self.handler_pids() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Wait until the task is completed or failed; the task.
fn finished(api: &Api, id: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let t = api.task(id);
        if t["status"] == "completed" || t["status"] == "failed" {
            return t;
        }
        assert!(Instant::now() < deadline, "task {id} not finished: {t}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn server() -> RealServer {
    RealServer::start().expect("the real job server (see ../shared/jobserver/README.md)")
}

#[test]
fn each_fault_fails_its_task_only_and_a_fresh_process_runs_the_next() {
    let server = server();
    let api = server.api();
    let mut run = Run::start(&server, "normal", &[]);
    run.wait_for("Registered as worker", Duration::from_secs(60));
    assert!(
        run.log()
            .contains("Handler for @global:modifiers:Raw ready (pid "),
        "{}",
        run.log()
    );

    let expect = |payload: &str, status: &str, error: &str| {
        let id = api.submit("room1", JOB, payload);
        let t = finished(&api, &id, Duration::from_secs(60));
        assert_eq!(t["status"], status, "{payload}: {t}\n{}", run.log());
        let text = t["error"].as_str().unwrap_or_default();
        assert!(text.contains(error), "{payload}: {text:?} lacks {error:?}");
        id
    };
    let first = expect(r#"{"n":1}"#, "completed", "");
    // Killed mid-task: the exit status and the end of its stderr.
    let crashed = expect(
        r#"{"crash":true}"#,
        "failed",
        "exited with status 3 while running the task",
    );
    expect(r#"{"n":2}"#, "completed", "");
    expect(
        r#"{"garbage":true}"#,
        "failed",
        "handler broke the protocol: a line that is not JSON",
    );
    expect(r#"{"n":3}"#, "completed", "");
    expect(
        r#"{"wrong_id":true}"#,
        "failed",
        "handler broke the protocol: a reply to request",
    );
    expect(r#"{"n":4}"#, "completed", "");
    // A reply line over the bound (1 MiB): the worker survives it.
    expect(r#"{"huge":2000000}"#, "failed", "a line longer than 1024 KiB");
    expect(r#"{"fail":"the model said no"}"#, "failed", "the model said no");
    // A print on (what user code thinks is) stdout breaks nothing.
    expect(r#"{"print":"{\"jsonrpc\":\"2.0\",\"id\":1}"}"#, "completed", "");
    // Several MB of payload, through the protocol and back.
    let big = format!(r#"{{"blob":"{}","n":5}}"#, "x".repeat(5 << 20));
    let big_id = expect(&big, "completed", "");

    let log = run.log();
    let crash_text = api.task(&crashed)["error"].as_str().unwrap().to_owned();
    assert!(
        crash_text.contains("about to crash: segfault in the model"),
        "{crash_text}"
    );
    assert_eq!(log.matches("a fresh one starts in").count(), 4, "{log}");
    assert!(log.contains("a fresh one starts in 0.5s"), "{log}");
    // Every task ran exactly once, the big payload whole.
    let ran = run.ran();
    let ids: Vec<&str> = ran.iter().map(|t| t["task"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 11, "{ids:?}");
    assert_eq!(ids[0], first);
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "a task ran twice: {ids:?}");
    let last = ran.last().unwrap();
    assert_eq!(last["task"], big_id.as_str());
    assert_eq!(last["payload"]["blob"].as_str().unwrap().len(), 5 << 20);
    // Four replacements: five processes in all.
    let mut pids: Vec<u64> = ran.iter().map(|t| t["pid"].as_u64().unwrap()).collect();
    pids.dedup();
    assert_eq!(pids.len(), 5, "{pids:?}");
    // stderr is logged with its task.
    assert!(
        log.contains(&format!(
            "Handler output (@global:modifiers:Raw, task {crashed}): about to crash"
        )),
        "{log}"
    );
    // The replaced processes were reaped.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !run.zombies().is_empty() {
        assert!(Instant::now() < deadline, "zombies: {:?}", run.zombies());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(run.stop().success(), "{}", run.log());
}

/// A crash the pipes do not show (a forked child keeps stdout open) fails
/// its task all the same; a process that dies while idle is replaced
/// before the next task, which does not fail for it.
#[test]
fn a_crash_behind_an_open_pipe_and_a_death_while_idle() {
    let server = server();
    let api = server.api();
    let mut run = Run::start(&server, "normal", &[]);
    run.wait_for("Registered as worker", Duration::from_secs(60));
    let id = api.submit("room1", JOB, r#"{"fork_crash":true}"#);
    let t = finished(&api, &id, Duration::from_secs(20));
    assert_eq!(t["status"], "failed", "{t}");
    let text = t["error"].as_str().unwrap();
    assert!(
        text.contains("exited with status 3 while running the task"),
        "{text}"
    );
    assert!(text.contains("crashing, a child left behind"), "{text}");
    let done = api.submit("room1", JOB, r#"{"exit_after_reply":true}"#);
    assert_eq!(
        finished(&api, &done, Duration::from_secs(30))["status"],
        "completed"
    );
    std::thread::sleep(Duration::from_millis(500));
    let next = api.submit("room1", JOB, r#"{"n":1}"#);
    let t = finished(&api, &next, Duration::from_secs(30));
    assert_eq!(t["status"], "completed", "{t}\n{}", run.log());
    assert!(
        run.log().contains("exited with status 0 while idle"),
        "{}",
        run.log()
    );
    assert!(run.stop().success(), "{}", run.log());
}

/// An ignored signal (SIGUSR1) while the `--serve` handlers start: logged
/// and ignored, as once the worker runs (one list of signals) — the worker
/// starts, serves a task and stops cleanly; before, only the stop signals
/// were caught in that window and SIGUSR1 killed the worker.
#[test]
fn an_ignored_signal_while_the_handlers_start_is_ignored() {
    let server = server();
    let api = server.api();
    let mut run = Run::start(&server, "slow-ready", &["--startup-timeout", "60s"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while run.handler_pids().is_empty() {
        assert!(Instant::now() < deadline, "no handler started: {}", run.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    run.signal(Signal::SIGUSR1);
    run.wait_for("SIGUSR1 received: ignored", Duration::from_secs(10));
    assert!(
        !run.log().contains("Registered as worker"),
        "the signal came while the handler started: {}",
        run.log()
    );
    assert_eq!(run.child.try_wait().unwrap(), None, "{}", run.log());
    run.wait_for("Registered as worker", Duration::from_secs(60));
    let id = api.submit("room1", JOB, "{}");
    let task = finished(&api, &id, Duration::from_secs(30));
    assert_eq!(task["status"], "completed", "{task}");
    assert_eq!(run.ran().len(), 1, "ran once: {:?}", run.ran());
    assert_eq!(run.stop().code(), Some(0), "{}", run.log());
    assert_eq!(run.log().matches("SIGUSR1 received").count(), 1, "{}", run.log());
}

#[test]
fn a_handler_that_never_becomes_ready_or_exits_at_start_is_one_clear_error() {
    let server = server();
    let mut run = Run::start(&server, "never-ready", &["--startup-timeout", "2s"]);
    let status = run.wait_exit(Duration::from_secs(60));
    assert_eq!(status.code(), Some(5), "{}", run.log());
    let log = run.log();
    assert!(
        log.contains("error: the handler for @global:modifiers:Raw did not start: not ready after 2s"),
        "{log}"
    );
    assert!(!log.contains("Registered as worker"), "{log}");
    assert!(
        !log.contains("panicked") && !log.contains("RUST_BACKTRACE"),
        "{log}"
    );
    run.assert_no_handler_left();

    // A stop signal while the handler starts: a stop as requested (exit 0),
    // the handler ended too.
    let mut run = Run::start(&server, "never-ready", &["--startup-timeout", "60s"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while run.handler_pids().is_empty() {
        assert!(Instant::now() < deadline, "no handler started: {}", run.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    let began = Instant::now();
    assert_eq!(run.stop().code(), Some(0), "{}", run.log());
    assert!(began.elapsed() < Duration::from_secs(20), "{:?}", began.elapsed());
    assert!(!run.log().contains("Registered as worker"), "{}", run.log());

    let mut run = Run::start(&server, "exit-at-start", &[]);
    let status = run.wait_exit(Duration::from_secs(60));
    assert_eq!(status.code(), Some(5), "{}", run.log());
    let log = run.log();
    assert!(
        log.contains("exited with status 7 before it was ready: cannot load the model"),
        "{log}"
    );
    assert_eq!(
        log.lines()
            .filter(|l| l.contains("ERROR") || l.starts_with("error:"))
            .count(),
        1,
        "one error line: {log}"
    );
    run.assert_no_handler_left();
}

#[test]
fn restarts_that_die_at_every_start_are_given_up_and_the_worker_stops() {
    let server = server();
    let api = server.api();
    // Ready the first time; every later start exits before it is ready.
    let mut run = Run::start(&server, "once", &[]);
    run.wait_for("Registered as worker", Duration::from_secs(60));
    let id = api.submit("room1", JOB, r#"{"crash":true}"#);
    let status = run.wait_exit(Duration::from_secs(120));
    assert_eq!(status.code(), Some(5), "{}", run.log());
    let log = run.log();
    assert!(
        log.contains("Handler for @global:modifiers:Raw cannot be started (5 starts in a row failed"),
        "{log}"
    );
    // The waits doubled (0.5 s, then 1, 2, 4, 8 s), no spinning.
    for wait in ["0.5s", "1s", "2s", "4s", "8s"] {
        assert!(
            log.contains(&format!("a fresh one starts in {wait}")),
            "{wait}: {log}"
        );
    }
    assert_eq!(api.status(&id), "failed");
    assert!(log.contains("deleted from the server"), "{log}");
    run.assert_no_handler_left();
}

#[test]
fn a_timeout_replaces_the_process_and_max_tasks_recycles_it() {
    let server = server();
    let api = server.api();
    let mut run = Run::start(
        &server,
        "normal",
        &["--task-timeout", "2s", "--max-tasks-per-child", "2"],
    );
    run.wait_for("Registered as worker", Duration::from_secs(60));
    let slow = api.submit("room1", JOB, r#"{"sleep":60}"#);
    let t = finished(&api, &slow, Duration::from_secs(60));
    assert_eq!(t["status"], "failed");
    assert!(
        t["error"].as_str().unwrap().contains("task timed out after 2s"),
        "{t}"
    );
    let ids: Vec<String> = (0..4)
        .map(|n| api.submit("room1", JOB, &format!(r#"{{"n":{n}}}"#)))
        .collect();
    for id in &ids {
        assert_eq!(finished(&api, id, Duration::from_secs(60))["status"], "completed");
    }
    let ran = run.ran();
    let pids: Vec<u64> = ran.iter().map(|t| t["pid"].as_u64().unwrap()).collect();
    // The slow task's process was replaced; then two tasks per process.
    assert_eq!(pids.len(), 5);
    assert_ne!(pids[0], pids[1]);
    assert_eq!(pids[1], pids[2]);
    assert_ne!(pids[2], pids[3]);
    assert_eq!(pids[3], pids[4]);
    assert!(
        run.log()
            .contains("served 2 tasks, its limit: replaced by a fresh one"),
        "{}",
        run.log()
    );
    assert!(run.stop().success());
}

#[test]
fn a_stop_gives_the_running_task_its_grace_then_ends_every_process() {
    let server = server();
    let api = server.api();
    let mut run = Run::start(&server, "normal", &["--grace", "30s"]);
    run.wait_for("Registered as worker", Duration::from_secs(60));
    let id = api.submit("room1", JOB, r#"{"sleep":3}"#);
    let deadline = Instant::now() + Duration::from_secs(30);
    while run.ran().is_empty() {
        assert!(Instant::now() < deadline, "{}", run.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = run.stop();
    assert!(status.success(), "{}", run.log());
    assert_eq!(api.status(&id), "completed", "{}", run.log());

    // A handler that ignores SIGTERM, its task past the grace: the task is
    // reported failed, the group gets SIGKILL, nothing is left.
    let mut run = Run::start(&server, "ignore-term", &["--grace", "1s"]);
    run.wait_for("Registered as worker", Duration::from_secs(60));
    let id = api.submit("room1", JOB, r#"{"sleep":600}"#);
    let deadline = Instant::now() + Duration::from_secs(30);
    while run.ran().is_empty() {
        assert!(Instant::now() < deadline, "{}", run.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let began = Instant::now();
    let status = run.stop();
    assert!(status.success(), "{}", run.log());
    assert!(began.elapsed() < Duration::from_secs(30), "{:?}", began.elapsed());
    let t = api.task(&id);
    assert_eq!(t["status"], "failed", "{t}");
    assert!(
        t["error"].as_str().unwrap().contains("worker shutting down"),
        "{t}"
    );
}

#[test]
fn concurrency_four_runs_four_processes_each_task_once() {
    let server = server();
    let api = server.api();
    let mut run = Run::start(&server, "normal", &["--concurrency", "4"]);
    run.wait_for("Registered as worker", Duration::from_secs(60));
    assert_eq!(
        run.log()
            .matches("Handler for @global:modifiers:Raw ready")
            .count(),
        4
    );
    let ids: Vec<String> = (0..16)
        .map(|n| api.submit("room1", JOB, &format!(r#"{{"n":{n},"sleep":0.4}}"#)))
        .collect();
    for id in &ids {
        assert_eq!(
            finished(&api, id, Duration::from_secs(120))["status"],
            "completed"
        );
    }
    let ran = run.ran();
    let mut tasks: Vec<&str> = ran.iter().map(|t| t["task"].as_str().unwrap()).collect();
    tasks.sort();
    tasks.dedup();
    assert_eq!(tasks.len(), 16, "each task once");
    assert_eq!(ran.len(), 16, "each task once");
    let mut pids: Vec<u64> = ran.iter().map(|t| t["pid"].as_u64().unwrap()).collect();
    pids.sort();
    pids.dedup();
    assert_eq!(pids.len(), 4, "four processes: {pids:?}");
    assert!(run.stop().success());
}

#[test]
fn a_server_pause_mid_task_loses_and_repeats_nothing() {
    let server = server();
    let api = server.api();
    let mut run = Run::start(&server, "normal", &["--request-timeout", "3s"]);
    run.wait_for("Registered as worker", Duration::from_secs(60));
    let ids: Vec<String> = (0..3)
        .map(|n| api.submit("room1", JOB, &format!(r#"{{"n":{n},"sleep":1}}"#)))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while run.ran().is_empty() {
        assert!(Instant::now() < deadline, "{}", run.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = Pid::from_raw(server.pid().unwrap() as i32);
    kill(pid, Signal::SIGSTOP).unwrap();
    std::thread::sleep(Duration::from_secs(10));
    kill(pid, Signal::SIGCONT).unwrap();
    for id in &ids {
        assert_eq!(
            finished(&api, id, Duration::from_secs(120))["status"],
            "completed",
            "{}",
            run.log()
        );
    }
    let ran = run.ran();
    assert_eq!(ran.len(), 3, "each task once: {ran:?}");
    assert!(
        run.log().contains("Server unreachable — retrying"),
        "{}",
        run.log()
    );
    assert!(run.stop().success());
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `PYTHONPATH` for the helper and the test extensions.
fn python_path() -> (&'static str, String) {
    let root = repo();
    (
        "PYTHONPATH",
        format!(
            "{}:{}",
            root.join("runtime-std/python").display(),
            root.join("tests/python").display()
        ),
    )
}

const SHIFT: &str = "@global:modifiers:Shift";

/// A real ZnDraw extension (`tests/python/shift_extension.py`: ase and
/// numpy), unchanged, served by `python -m outage_handler` with four
/// processes: its schema registered as `JobManager` registers it, a bad
/// payload failed with pydantic's words, and every task run exactly once
/// through a pause of the server (SIGSTOP) while tasks run.
#[test]
fn a_zndraw_extension_served_by_four_processes_through_a_server_pause() {
    let py = outage_tests::real::extension_python().expect("the venv with ase and numpy");
    let server = server();
    let api = server.api();
    let serve = |marker: &str| {
        format!(
            "{SHIFT}={} -X outage={marker} -m outage_handler shift_extension:Shift",
            py.display()
        )
    };
    let mut run = Run::spawn(
        &["--token", server.token()],
        server.url(),
        serve,
        &["--concurrency", "4", "--request-timeout", "3s"],
        &[python_path()],
    );
    run.wait_for("Registered as worker", Duration::from_secs(120));
    assert_eq!(
        run.log()
            .matches("Handler for @global:modifiers:Shift ready")
            .count(),
        4
    );
    assert_eq!(run.handler_pids().len(), 4, "four processes");

    // The schema, exactly as the class gives it.
    let expected = std::process::Command::new(&py)
        .args([
            "-c",
            "import json, shift_extension; print(json.dumps(shift_extension.Shift.model_json_schema()))",
        ])
        .env(python_path().0, python_path().1)
        .output()
        .unwrap();
    assert!(
        expected.status.success(),
        "{}",
        String::from_utf8_lossy(&expected.stderr)
    );
    let expected: Value = serde_json::from_slice(&expected.stdout).unwrap();
    let job = api
        .call("GET", &format!("/rooms/@global/jobs/{SHIFT}"), None)
        .json();
    assert_eq!(job["schema"], expected, "{job}");

    let bad = api.submit("room1", SHIFT, r#"{"dx":"far"}"#);
    let t = finished(&api, &bad, Duration::from_secs(60));
    assert_eq!(t["status"], "failed");
    let text = t["error"].as_str().unwrap();
    assert!(text.contains("validation error") && text.contains("dx"), "{text}");

    let ids: Vec<String> = (0..12)
        .map(|n| api.submit("room1", SHIFT, &format!(r#"{{"dx":{n}.5}}"#)))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while run.ran().is_empty() {
        assert!(Instant::now() < deadline, "{}", run.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = Pid::from_raw(server.pid().unwrap() as i32);
    kill(pid, Signal::SIGSTOP).unwrap();
    std::thread::sleep(Duration::from_secs(8));
    kill(pid, Signal::SIGCONT).unwrap();
    // Each task ends, none stuck; none runs twice. A claim whose answer
    // the pause swallowed is never run: the worker registers afresh and
    // deletes the old id, so the server fails that task ("Worker
    // disconnected") for a client to resubmit.
    let ran = || run.ran();
    let mut completed = 0;
    for (id, n) in ids.iter().zip(0..) {
        let t = finished(&api, id, Duration::from_secs(120));
        let runs: Vec<Value> = ran().into_iter().filter(|r| r["task"] == id.as_str()).collect();
        if t["status"] == "completed" {
            completed += 1;
            assert_eq!(runs.len(), 1, "{id} ran {} times", runs.len());
            // ase shifted the molecule by the payload's dx.
            let com_x = runs[0]["com"][0].as_f64().unwrap();
            assert!((com_x - (f64::from(n) + 0.5)).abs() < 1e-6, "{}", runs[0]);
        } else {
            assert!(runs.is_empty(), "{id} ran, yet failed: {t}");
            let lost = run.log().contains("Claim answer lost");
            assert!(lost, "{id} failed without a lost claim: {t}\n{}", run.log());
        }
    }
    assert!(completed >= 10, "{completed} of 12 completed\n{}", run.log());
    assert!(
        run.log().contains("Server unreachable — retrying"),
        "{}",
        run.log()
    );
    assert!(run.stop().success(), "{}", run.log());
}

/// Tokens that live 4 s (`--auth jwt`) and an Extension
/// (`chaos_extension.py`'s `TalkBack`) that talks back to the server at the
/// end of its task with the token it holds then: a task
/// longer than two token lifetimes is told of the renewals mid-task and
/// talks back fine, a later task gets a valid token, and over six
/// lifetimes the server's access log holds no 401 (each token is renewed
/// ahead of its expiry).
/// The Extension way through the faults: `chaos_extension.py`'s `Chaos`,
/// served by `outage_handler`, crashes mid-task (its task fails with the
/// exit status and its last words, a fresh process runs the next), runs
/// past `--task-timeout` (failed, replaced), and runs through a SIGTERM
/// within its grace (completed, then every process ends).
#[test]
fn a_zndraw_extension_through_a_crash_a_timeout_and_a_stop_with_grace() {
    let py = outage_tests::real::extension_python().expect("the venv with zndraw-joblib");
    let server = server();
    let api = server.api();
    let serve = |marker: &str| {
        format!(
            "{SHIFT}={} -X outage={marker} -m outage_handler chaos_extension:Chaos",
            py.display()
        )
    };
    let mut run = Run::spawn(
        &["--token", server.token()],
        server.url(),
        serve,
        &["--task-timeout", "5s", "--grace", "30s"],
        &[python_path()],
    );
    run.wait_for("Registered as worker", Duration::from_secs(120));
    let crashed = api.submit("room1", SHIFT, r#"{"crash":true}"#);
    let t = finished(&api, &crashed, Duration::from_secs(60));
    assert_eq!(t["status"], "failed");
    let text = t["error"].as_str().unwrap();
    assert!(
        text.contains("exited with status 3 while running the task")
            && text.contains("Chaos: the model segfaulted"),
        "{text}"
    );
    let next = api.submit("room1", SHIFT, r#"{"n":1}"#);
    assert_eq!(
        finished(&api, &next, Duration::from_secs(60))["status"],
        "completed"
    );
    let slow = api.submit("room1", SHIFT, r#"{"sleep":60}"#);
    let t = finished(&api, &slow, Duration::from_secs(60));
    assert_eq!(t["status"], "failed");
    assert!(
        t["error"].as_str().unwrap().contains("task timed out after 5s"),
        "{t}"
    );
    let graced = api.submit("room1", SHIFT, r#"{"n":2,"sleep":3}"#);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !run.ran().iter().any(|r| r["task"] == graced.as_str()) {
        assert!(Instant::now() < deadline, "{}", run.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(run.stop().success(), "{}", run.log());
    assert_eq!(api.status(&graced), "completed", "{}", run.log());
    let ran = run.ran();
    assert_eq!(ran.len(), 4, "each task once: {ran:?}");
    let mut pids: Vec<u64> = ran.iter().map(|r| r["pid"].as_u64().unwrap()).collect();
    pids.dedup();
    assert_eq!(
        pids.len(),
        3,
        "replaced after the crash and the timeout: {pids:?}"
    );
}

#[test]
fn short_lived_tokens_reach_a_long_lived_handler_and_no_request_is_refused() {
    const LIFETIME: u64 = 4;
    let password = "long-lived-pw";
    let server = RealServer::start_with(outage_tests::real::Options {
        args: [
            "--auth",
            "jwt",
            "--admin-password",
            password,
            "--token-lifetime",
            &LIFETIME.to_string(),
            "--access-log",
            "--log-level",
            "info",
        ]
        .map(str::to_owned)
        .to_vec(),
        ..Default::default()
    })
    .expect("the real job server in jwt mode");
    let login = || outage_tests::real::login(server.url(), "admin@example.com", password).expect("login");
    let pw_file = std::env::temp_dir().join(format!("outage-pw-{}", uuid::Uuid::new_v4().simple()));
    std::fs::write(&pw_file, password).unwrap();
    let py = outage_tests::real::extension_python().expect("the venv with zndraw-joblib");
    let serve = |marker: &str| {
        format!(
            "{SHIFT}={} -X outage={marker} -m outage_handler chaos_extension:TalkBack",
            py.display()
        )
    };
    let pw = pw_file.display().to_string();
    let mut run = Run::spawn(
        &["--user", "admin@example.com", "--password-file", &pw],
        server.url(),
        serve,
        &["--heartbeat", "1s"],
        &[python_path()],
    );
    run.wait_for("Registered as worker", Duration::from_secs(60));
    let started = Instant::now();
    let api = || Api::new(server.url(), &login());
    // Longer than two token lifetimes.
    let long = api().submit("room1", SHIFT, r#"{"sleep":9}"#);
    let t = finished(&api(), &long, Duration::from_secs(60));
    assert_eq!(t["status"], "completed", "{t}\n{}", run.log());
    // Later, with a token renewed since the process started.
    let later = api().submit("room1", SHIFT, r#"{"sleep":0}"#);
    assert_eq!(
        finished(&api(), &later, Duration::from_secs(60))["status"],
        "completed"
    );
    while started.elapsed() < Duration::from_secs(6 * LIFETIME) {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(run.stop().success(), "{}", run.log());
    let ran = run.ran();
    assert_eq!(ran.len(), 2, "{ran:?}");
    assert!(ran.iter().all(|t| t["status"] == 200), "{ran:?}");
    assert_eq!(
        ran[0]["renewed_mid_task"], true,
        "told of the renewal mid-task: {ran:?}"
    );
    let access_log = server.output();
    let refused: Vec<&str> = access_log.lines().filter(|l| l.contains("\" 401")).collect();
    assert!(
        refused.is_empty(),
        "401s in the server's access log: {refused:#?}"
    );
    assert!(
        server.output().contains("\" 200"),
        "the access log is on: {}",
        server.output()
    );
    assert!(!run.log().contains("401"), "{}", run.log());
    let _ = std::fs::remove_file(pw_file);
}

/// The Python helper's own tests (`runtime-std/python/test_outage_handler.py`:
/// the protocol from the worker's side, and an Extension served as
/// `JobManager` serves it), in the venv with zndraw-joblib; and level 1
/// with a bare `python3` too (standard library only: the level-2 tests
/// skip there).
#[test]
fn the_python_helper_passes_its_own_tests() {
    let py = outage_tests::real::extension_python().expect("the venv");
    for python in [py.as_os_str(), std::ffi::OsStr::new("python3")] {
        let out = std::process::Command::new(python)
            .args(["-m", "unittest", "discover", "-s"])
            .arg(repo().join("runtime-std/python"))
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .output()
            .expect("run python");
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{python:?}:\n{text}");
        assert!(text.contains("OK"), "{python:?}:\n{text}");
    }
}
