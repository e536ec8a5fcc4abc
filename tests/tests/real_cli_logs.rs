//! `outage-worker --log-format json` against the real job server with
//! Socket.IO push: every line one JSON object with the event's fields as
//! keys (task id, job, room, outcome, duration, worker id), a stop's
//! summary counting delivered and given-up outcomes apart, and no library
//! `DEBUG` line at `RUST_LOG=info` — while at `debug` the WebSocket
//! library's lines do appear (so the check can fail).

use std::process::Stdio;
use std::time::{Duration, Instant};

use outage_tests::real::{Options, RealServer};
use serde_json::Value;

/// Run a worker with push at `rust_log` until it has served one task;
/// its JSON lines, and the task's id.
fn serve_one(rust_log: &str) -> (Vec<Value>, String) {
    let server = RealServer::start_with(Options {
        args: vec!["--socketio".into()],
        ..Options::default()
    })
    .expect("the real job server");
    let api = server.api();
    let dir = std::env::temp_dir().join(format!(
        "outage-cli-logs-{}-{}",
        std::process::id(),
        rust_log.replace([',', '='], "_")
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let log_path = dir.join("worker.log");
    let mut child = outage_tests::cli::worker()
        .args(["--server", server.url(), "--token", server.token()])
        .args([
            "--job",
            "@global:modifiers:Echo=cat",
            "--push",
            "on",
            "--log-format",
            "json",
        ])
        .env("RUST_LOG", rust_log)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .expect("start outage-worker");
    let read = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let wait_for = |needle: &str| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !read().contains(needle) {
            assert!(Instant::now() < deadline, "no {needle} in:\n{}", read());
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait_for(r#""event":"push_connected""#);
    let id = api.submit("@global", "@global:modifiers:Echo", r#"{"x":1}"#);
    wait_for(r#""event":"task_finished""#);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the worker did not stop");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0), "{}", read());
    let text = read();
    let lines = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let _ = std::fs::remove_dir_all(&dir);
    (lines, id)
}

fn event<'a>(lines: &'a [Value], name: &str) -> &'a Value {
    lines
        .iter()
        .find(|v| v["event"] == name)
        .unwrap_or_else(|| panic!("no {name} in {lines:#?}"))
}

#[test]
fn json_lines_carry_the_fields_and_info_has_no_library_debug_lines() {
    let (lines, id) = serve_one("info");
    let levels: Vec<&str> = lines.iter().filter_map(|v| v["level"].as_str()).collect();
    assert!(
        !levels.iter().any(|l| *l == "DEBUG" || *l == "TRACE"),
        "{lines:#?}"
    );
    for v in &lines {
        for key in ["ts", "level", "target", "message"] {
            assert!(v[key].is_string(), "{key} in {v}");
        }
    }
    let registered = event(&lines, "registered");
    let worker_id = registered["worker_id"].as_str().expect("a worker id");
    assert_eq!(registered["jobs"], 1);
    let task = event(&lines, "task_finished");
    assert_eq!(task["task_id"], id.as_str(), "{task}");
    assert_eq!(task["job"], "@global:modifiers:Echo", "{task}");
    assert_eq!(task["room"], "@global", "{task}");
    assert_eq!(task["outcome"], "completed", "{task}");
    assert!(task["duration_ms"].is_u64(), "{task}");
    assert_eq!(task["worker_id"], worker_id, "{task}");
    assert_eq!(event(&lines, "push_connected")["jobs"], 1);
    let summary = event(&lines, "summary");
    assert_eq!(summary["completed"], 1, "{summary}");
    assert_eq!(summary["delivered"], 1, "{summary}");
    assert_eq!(summary["given_up"], 0, "{summary}");
    let said = summary["message"].as_str().unwrap_or_default();
    assert!(
        said.contains("1 tasks completed, 0 failed; 1 outcomes delivered, 0 given up;"),
        "{summary}"
    );
    assert_eq!(summary["worker_id"], worker_id, "{summary}");
}

#[test]
fn at_debug_the_websocket_librarys_lines_show_but_never_its_frames() {
    let (lines, _) = serve_one("debug");
    let library: Vec<&Value> = lines
        .iter()
        .filter(|v| v["target"].as_str().is_some_and(|t| t.contains("tungstenite")))
        .collect();
    assert!(!library.is_empty(), "debug shows tungstenite's lines: {lines:#?}");
    assert!(library.iter().all(|v| v["level"] != "TRACE"), "{library:#?}");
}
