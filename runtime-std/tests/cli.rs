//! `outage-worker` as a user meets it: configuration errors are refused at
//! startup with one clear line and exit status 2, before any request; a
//! refused token exits 3.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

fn worker(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_outage-worker"));
    cmd.args(args).stdin(Stdio::null());
    for var in [
        "OUTAGE_SERVER",
        "OUTAGE_TOKEN",
        "ZNDRAW_URL",
        "ZNDRAW_TOKEN",
        "ZNDRAW_USER",
        "ZNDRAW_PASSWORD",
    ] {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run outage-worker")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A port where nothing listens: a request there would be refused, so a
/// test that exits 2 at once proves nothing was retried.
const NOWHERE: &str = "http://127.0.0.1:9";
const JOB: &str = "@global:modifiers:Echo=cat";

#[test]
fn configuration_errors_exit_2_with_one_clear_line() {
    let cases: &[(&[&str], &str)] = &[
        (&["--token", "a b", "--job", JOB], "invalid token"),
        (&["--token", "t\u{e9}", "--job", JOB], "invalid token"),
        (&["--token", "t\r\nX-Injected: 1", "--job", JOB], "invalid token"),
        (&["--server", "http://[::1", "--job", JOB], "invalid IPv6 address"),
        (
            &["--server", "http://127.0.0.1:99999", "--job", JOB],
            "invalid port number",
        ),
        (&["--server", "http://", "--job", JOB], "empty host"),
        (
            &["--server", "http://127.0.0.1:9/v1/joblib", "--job", JOB],
            "without /v1/joblib",
        ),
        (&["--job", JOB, "--job", JOB], "given twice"),
        (
            &["--job", "@global:modifiers:Echo=no-such-program-here"],
            "not an executable file",
        ),
        (
            &["--job", "@global:modifiers:Echo=./Cargo.toml"],
            "not an executable file",
        ),
        (
            &["--job", JOB, "--schema", "@global:modifiers:Other=s.json"],
            "no --job or --serve serves it",
        ),
        (
            &["--job", JOB, "--heartbeat", "18446744073709551.9s"],
            "is not a duration",
        ),
        (&["--job", JOB, "--poll", "31d"], "is not a duration"),
        (&["--job", JOB, "--poll", "800h"], "is not a duration"),
        (
            &["--job", JOB, "--max-unreachable", "1000000m"],
            "must not be longer than 30 days",
        ),
        (
            &["--server", "http://127.0.0.1:0", "--job", JOB],
            "port 0 is no server's port",
        ),
        (&["--job", JOB, "--task-timeout", "0"], "must be longer than zero"),
        (&["--job", JOB, "--heartbeat", "1.5ms"], "whole milliseconds"),
        (&["--job", JOB, "--grace", "0.0001s"], "whole milliseconds"),
    ];
    for (args, needle) in cases {
        let mut all: Vec<&str> = args.to_vec();
        if !args.contains(&"--server") {
            all.extend(["--server", NOWHERE]);
        }
        if !args.contains(&"--token") {
            all.extend(["--token", "t"]);
        }
        let out = worker(&all, &[]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: wanted {needle:?} in {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(!err.contains("X-Injected"), "the token is never echoed: {err}");
    }
}

#[test]
fn an_unusable_ca_file_is_a_usage_error() {
    let dir = std::env::temp_dir().join(format!("outage-ca-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let not_pem = dir.join("not.pem");
    std::fs::write(&not_pem, "hello\n").unwrap();
    for (file, why) in [
        (dir.join("missing.pem"), "cannot read CA file"),
        (not_pem, "holds no certificate"),
    ] {
        let out = worker(
            &[
                "--server",
                "https://127.0.0.1:9",
                "--token",
                "t",
                "--job",
                JOB,
                "--ca-file",
                file.to_str().unwrap(),
            ],
            &[],
        );
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(stderr(&out).contains(why), "{}", stderr(&out));
        assert_eq!(
            stderr(&out).lines().filter(|l| l.starts_with("error:")).count(),
            1
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn no_token_is_a_usage_error_and_zndraw_variables_are_read() {
    let out = worker(&["--server", NOWHERE, "--job", JOB], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no credentials"), "{}", stderr(&out));
    // ZnDraw's own variables are taken: here the URL is refused for its
    // path, which proves ZNDRAW_URL was read.
    let out = worker(
        &["--job", JOB],
        &[
            ("ZNDRAW_URL", "http://127.0.0.1:9/v1/joblib"),
            ("ZNDRAW_TOKEN", "t"),
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("without /v1/joblib"), "{}", stderr(&out));
}

/// A server that refuses every request the way zndraw-joblib does (401).
fn refusing_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming().take(20) {
            let Ok(mut s) = stream else { continue };
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let body = r#"{"detail":"Unauthorized"}"#;
            let _ = write!(
                s,
                "HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
        }
    });
    url
}

#[test]
fn a_refused_token_exits_3() {
    let url = refusing_server();
    let out = worker(&["--server", &url, "--token", "wrong", "--job", JOB], &[]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
}

#[test]
fn json_logs_are_one_object_per_line_with_stable_fields() {
    let url = refusing_server();
    let out = worker(
        &[
            "--server",
            &url,
            "--token",
            "wrong",
            "--job",
            JOB,
            "--log-format",
            "json",
        ],
        &[],
    );
    let err = stderr(&out);
    let lines: Vec<&str> = err.lines().collect();
    assert!(!lines.is_empty());
    let mut levels = Vec::new();
    for line in &lines {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        for field in ["ts", "level", "target", "message"] {
            assert!(v[field].is_string(), "{field} in {line}");
        }
        levels.push(v["level"].as_str().unwrap().to_owned());
        assert!(!line.contains("wrong"), "no token in {line}");
    }
    assert!(levels.iter().any(|l| l == "ERROR"), "{err}");
}

/// A fake job server: answers startup like zndraw-joblib, then `later`
/// for every heartbeat and claim (`None`: close the listener, as a server
/// that went away).
fn scripted_server(later: Option<&'static str>) -> (String, std::sync::Arc<std::sync::atomic::AtomicBool>) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let gone = std::sync::Arc::new(AtomicBool::new(false));
    let flag = gone.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(200) {
            let Ok(mut s) = stream else { continue };
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buf = [0u8; 8192];
            let n = s.read(&mut buf).unwrap_or(0);
            let head = String::from_utf8_lossy(&buf[..n]).into_owned();
            let (status, body) = if head.starts_with("POST /v1/joblib/workers ") {
                (
                    "201 Created",
                    r#"{"id":"11111111-2222-3333-4444-555555555555","last_heartbeat":null}"#.to_owned(),
                )
            } else if head.starts_with("PUT ") {
                ("201 Created", r#"{"id":"j","full_name":"@global:modifiers:Echo","worker_id":"11111111-2222-3333-4444-555555555555"}"#.to_owned())
            } else if head.starts_with("DELETE ") {
                ("204 No Content", String::new())
            } else {
                match later {
                    Some(answer) => ("404 Not Found", answer.to_owned()),
                    None => {
                        // Gone: stop listening; every later connect is refused.
                        flag.store(true, Ordering::SeqCst);
                        return;
                    }
                }
            };
            let _ = write!(
                s,
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (url, gone)
}

#[test]
fn a_lost_registration_exits_4() {
    let (url, _) = scripted_server(Some(
        r#"{"type":"/v1/problems/worker-not-found","title":"Not Found","status":404,"detail":"Worker not found"}"#,
    ));
    let out = worker(
        &["--server", &url, "--token", "t", "--job", JOB, "--poll", "100ms"],
        &[],
    );
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("Registration lost, shutting down"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_server_gone_too_long_exits_1() {
    let (url, _) = scripted_server(None);
    let t0 = std::time::Instant::now();
    let out = worker(
        &[
            "--server",
            &url,
            "--token",
            "t",
            "--job",
            JOB,
            "--poll",
            "100ms",
            "--backoff-cap",
            "200ms",
            "--max-unreachable",
            "1s",
            "--request-timeout",
            "1s",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("Server unreachable for >1s, shutting down"),
        "{}",
        stderr(&out)
    );
    assert!(t0.elapsed() < Duration::from_secs(30));
}

/// A stop signal during the startup retries (the server is not up yet)
/// stops the worker as asked: exit 0 at once, one line, not 143.
#[test]
fn a_stop_signal_during_startup_exits_0() {
    use std::io::BufRead;
    let mut child = Command::new(env!("CARGO_BIN_EXE_outage-worker"))
        .args(["--server", NOWHERE, "--token", "t", "--job", JOB])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run outage-worker");
    let stderr = child.stderr.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut lines = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !lines
        .iter()
        .any(|l: &String| l.contains("Startup: create worker failed"))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no startup retry: {lines:?}"
        );
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(100)) {
            lines.push(l);
        }
    }
    let t0 = std::time::Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("signal");
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(0), "{lines:?}");
    assert!(t0.elapsed() < Duration::from_secs(5), "stopped at once");
    lines.extend(rx.try_iter());
    assert!(
        lines.iter().any(|l| l.contains("SIGTERM received: stopping")),
        "{lines:?}"
    );
    assert!(!lines.iter().any(|l| l.contains("ERROR")), "{lines:?}");
}
