//! `outage-worker` as an operator runs it: systemd's notifications (on a
//! socket the test owns), credentials from `$CREDENTIALS_DIRECTORY`,
//! `/healthz` and `/readyz` through an outage, completions and man page.
//! Against small scripted servers on loopback; every loop is bounded.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const JOB: &str = "@global:modifiers:Echo=cat";
const WORKER_ID: &str = "11111111-2222-3333-4444-555555555555";

fn command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_outage-worker"));
    cmd.args(args).stdin(Stdio::null());
    for var in [
        "OUTAGE_SERVER",
        "OUTAGE_TOKEN",
        "ZNDRAW_URL",
        "ZNDRAW_TOKEN",
        "ZNDRAW_USER",
        "ZNDRAW_PASSWORD",
        "NOTIFY_SOCKET",
        "WATCHDOG_USEC",
        "WATCHDOG_PID",
        "CREDENTIALS_DIRECTORY",
        "RUST_LOG",
    ] {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("outage-cli-ops-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// What a scripted server does with one request (its head and body).
enum Answer {
    Reply(&'static str, String),
    /// Stop listening: every later connect is refused.
    Gone,
}

/// A job server that answers startup like zndraw-joblib and everything
/// else as `script` says. Records every request.
fn server(script: impl Fn(&str) -> Answer + Send + 'static) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(2_000) {
            let Ok(mut s) = stream else { continue };
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buf = [0u8; 16384];
            let n = s.read(&mut buf).unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]).into_owned();
            log.lock().unwrap().push(req.clone());
            let (status, body) = if req.starts_with("POST /v1/joblib/workers ") {
                (
                    "201 Created",
                    format!(r#"{{"id":"{WORKER_ID}","last_heartbeat":null}}"#),
                )
            } else if req.starts_with("PUT ") {
                (
                    "201 Created",
                    format!(r#"{{"id":"j","full_name":"@global:modifiers:Echo","worker_id":"{WORKER_ID}"}}"#),
                )
            } else if req.starts_with("DELETE ") {
                ("204 No Content", String::new())
            } else {
                match script(&req) {
                    Answer::Reply(status, body) => (status, body),
                    Answer::Gone => return,
                }
            };
            let _ = write!(
                s,
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (url, seen)
}

/// A server with an empty queue.
fn idle(req: &str) -> Answer {
    if req.starts_with("POST /v1/joblib/tasks/claim") {
        Answer::Reply("200 OK", r#"{"task":null}"#.into())
    } else {
        Answer::Reply("200 OK", "{}".into())
    }
}

/// The notification socket a service manager would own; what the worker
/// sends to it, until `until` says enough or 60 s pass.
struct Manager {
    socket: UnixDatagram,
    path: PathBuf,
}

impl Manager {
    fn new(dir: &std::path::Path) -> Manager {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        Manager { socket, path }
    }

    fn path(&self) -> &str {
        self.path.to_str().unwrap()
    }

    /// Datagrams (each split into its lines) until the child exits (and
    /// its last datagrams are read) or `stop` returns true; at most 60 s.
    fn collect(&self, child: &mut Child, mut stop: impl FnMut(&[String]) -> bool) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut lines = Vec::new();
        let mut exited_at = None;
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            if let Ok(n) = self.socket.recv(&mut buf) {
                lines.extend(String::from_utf8_lossy(&buf[..n]).lines().map(str::to_owned));
                if stop(&lines) {
                    break;
                }
                continue;
            }
            if exited_at.is_none() && child.try_wait().unwrap().is_some() {
                exited_at = Some(Instant::now());
            }
            if exited_at.is_some_and(|t| t.elapsed() > Duration::from_millis(500)) {
                break;
            }
        }
        lines
    }
}

fn finish(child: Child) -> Output {
    child.wait_with_output().unwrap()
}

#[test]
fn systemd_hears_ready_the_outage_countdown_the_watchdog_and_stopping() {
    let dir = temp_dir("sd-outage");
    let manager = Manager::new(&dir);
    // Registration works, then the server is gone for good.
    let (url, _) = server(|_| Answer::Gone);
    let mut child = command(
        &[
            "--server",
            &url,
            "--token",
            "t",
            "--job",
            JOB,
            "--poll",
            "200ms",
            "--backoff-cap",
            "300ms",
            "--request-timeout",
            "1s",
            "--log-interval",
            "500ms",
            "--max-unreachable",
            "4s",
            "--log-format",
            "json",
        ],
        &[("NOTIFY_SOCKET", manager.path()), ("WATCHDOG_USEC", "1500000")],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let lines = manager.collect(&mut child, |_| false);
    let out = finish(child);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{err}\n{lines:#?}");
    let at = |l: &str| lines.iter().position(|x| x == l);
    let ready = at("READY=1").unwrap_or_else(|| panic!("no READY=1: {lines:#?}"));
    let stopping = at("STOPPING=1").unwrap_or_else(|| panic!("no STOPPING=1: {lines:#?}"));
    assert!(ready < stopping, "{lines:#?}");
    assert!(lines.contains(&"STATUS=Serving 1 job".to_owned()), "{lines:#?}");
    // The countdown, as the log's warning says it, second by second.
    let countdown: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("STATUS=Server unreachable — retrying (") && l.contains("/4s elapsed)"))
        .collect();
    assert!(countdown.len() >= 2, "{lines:#?}");
    assert!(countdown.windows(2).all(|w| w[0] != w[1]), "{countdown:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("STATUS=Stopped: server unreachable for too long")),
        "{lines:#?}"
    );
    // A watchdog of 1.5 s is pinged every half second while the driver
    // runs: during ~4 s of outage at least a few times.
    let pings = lines.iter().filter(|l| *l == "WATCHDOG=1").count();
    assert!(pings >= 3, "{pings} pings: {lines:#?}");
    // The same outage in the JSON log, with its fields.
    let warning = err
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["event"] == "outage_warning")
        .unwrap_or_else(|| panic!("no outage warning: {err}"));
    assert_eq!(warning["limit_ms"], 4000, "{warning}");
    assert!(warning["elapsed_ms"].is_u64(), "{warning}");
    assert_eq!(warning["worker_id"], WORKER_ID, "{warning}");
    let end = err
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["event"] == "unreachable")
        .unwrap_or_else(|| panic!("no stop line: {err}"));
    assert_eq!(end["error_class"], "transient", "{end}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_stop_on_sigterm_says_stopping_then_the_worker_is_gone() {
    let dir = temp_dir("sd-stop");
    let manager = Manager::new(&dir);
    let (url, seen) = server(idle);
    let mut child = command(
        &["--server", &url, "--token", "t", "--job", JOB, "--poll", "200ms"],
        &[("NOTIFY_SOCKET", manager.path())],
    )
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut signalled = false;
    let pid = child.id();
    let lines = manager.collect(&mut child, |lines| {
        if !signalled && lines.iter().any(|l| l == "READY=1") {
            signalled = true;
            Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .unwrap();
        }
        false
    });
    let out = finish(child);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(signalled, "{lines:#?}");
    let stopping = lines.iter().position(|l| l == "STOPPING=1").expect("STOPPING=1");
    assert!(
        lines[stopping..].iter().any(|l| l.starts_with("STATUS=Stopp")),
        "{lines:#?}"
    );
    assert!(
        !lines.iter().any(|l| l.starts_with("WATCHDOG")),
        "no watchdog asked: {lines:#?}"
    );
    assert!(
        seen.lock()
            .unwrap()
            .iter()
            .any(|r| r.starts_with("DELETE /v1/joblib/workers/")),
        "deregistered"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn credentials_come_from_systemds_credentials_directory() {
    // A token credential: the first request carries it.
    let dir = temp_dir("creds-token");
    std::fs::write(dir.join("token"), "from-credential\n").unwrap();
    let (url, seen) = server(|_| Answer::Gone);
    let out = command(
        &["--server", &url, "--job", JOB],
        &[("CREDENTIALS_DIRECTORY", dir.to_str().unwrap())],
    )
    .args([
        "--max-unreachable",
        "1s",
        "--poll",
        "100ms",
        "--backoff-cap",
        "200ms",
    ])
    .output()
    .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first = seen.lock().unwrap()[0].to_ascii_lowercase();
    assert!(
        first.contains("authorization: bearer from-credential\r\n"),
        "{first}"
    );
    // A password credential with ZNDRAW_USER: the login sends it, also when
    // ZNDRAW_PASSWORD is set (the unit's credential beats a variable the
    // environment may have inherited) — but --password-file beats both.
    std::fs::remove_file(dir.join("token")).unwrap();
    std::fs::write(dir.join("password"), "s3cret-pw\n").unwrap();
    std::fs::write(dir.join("flag-pw"), "fl4g-pw\n").unwrap();
    let creds = dir.to_str().unwrap().to_owned();
    let with_user = [
        ("CREDENTIALS_DIRECTORY", creds.as_str()),
        ("ZNDRAW_USER", "worker@example.com"),
    ];
    let with_variable = [
        ("CREDENTIALS_DIRECTORY", creds.as_str()),
        ("ZNDRAW_USER", "worker@example.com"),
        ("ZNDRAW_PASSWORD", "v4riable-pw"),
    ];
    let flag = dir.join("flag-pw");
    let password_file = [
        "--user",
        "worker@example.com",
        "--password-file",
        flag.to_str().unwrap(),
    ];
    for (args, env, sent) in [
        (&[][..], &with_user[..], "s3cret-pw"),
        (&[][..], &with_variable[..], "s3cret-pw"),
        (&password_file[..], &with_variable[..], "fl4g-pw"),
    ] {
        let (req, stderr) = login_refused(args, env);
        assert!(req.starts_with("POST /v1/auth/jwt/login "), "{req}");
        assert!(
            req.ends_with(&format!("password={sent}")),
            "{env:?} {args:?}: {req}"
        );
        for secret in ["s3cret", "fl4g", "v4riable"] {
            assert!(!stderr.contains(secret), "never logged: {stderr}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Run the worker (with `args` and `env`) against a login that refuses the
/// password: exit 3. The login request (empty if none came within 30 s),
/// and the worker's stderr.
fn login_refused(args: &[&str], env: &[(&str, &str)]) -> (String, String) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    listener.set_nonblocking(true).unwrap();
    let login = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut s = loop {
            match listener.accept() {
                Ok((s, _)) => break s,
                Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
                Err(_) => return String::new(),
            }
        };
        s.set_nonblocking(false).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 8192];
        let n = s.read(&mut buf).unwrap_or(0);
        let body = r#"{"detail":"LOGIN_BAD_CREDENTIALS"}"#;
        let _ = write!(
            s,
            "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        String::from_utf8_lossy(&buf[..n]).into_owned()
    });
    let out = command(&["--server", &url, "--job", JOB], env)
        .args(args)
        .output()
        .unwrap();
    let req = login.join().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    (req, stderr)
}

fn http_get(addr: &str, path: &str) -> (u16, String) {
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return (0, String::new());
    };
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let code = out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned();
    (code, body)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Poll `path` until its status is `code` (at most 30 s); the body then.
fn wait_for(addr: &str, path: &str, code: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (got, body) = http_get(addr, path);
        if got == code {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{path} never answered {code}: last {got} {body}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn readiness_turns_unready_during_an_outage_and_ready_after() {
    let down = Arc::new(AtomicBool::new(false));
    let flag = down.clone();
    let (url, _) = server(move |req| {
        if flag.load(Ordering::SeqCst) {
            Answer::Reply("503 Service Unavailable", r#"{"detail":"down"}"#.into())
        } else {
            idle(req)
        }
    });
    let addr = format!("127.0.0.1:{}", free_port());
    let mut child = command(
        &[
            "--server",
            &url,
            "--token",
            "t",
            "--job",
            JOB,
            "--poll",
            "200ms",
            "--backoff-cap",
            "300ms",
            "--max-unreachable",
            "60s",
            "--metrics-addr",
            &addr,
        ],
        &[],
    )
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let body = wait_for(&addr, "/readyz", 200);
    assert_eq!(body, "ready: Serving 1 job\n");
    assert_eq!(http_get(&addr, "/healthz").0, 200);
    down.store(true, Ordering::SeqCst);
    let body = wait_for(&addr, "/readyz", 503);
    assert!(
        body.starts_with("not ready: Server unreachable — retrying ("),
        "{body}"
    );
    // Alive all the same: the driver runs, only the server is away.
    let (code, body) = http_get(&addr, "/healthz");
    assert_eq!(code, 200, "{body}");
    let metrics = http_get(&addr, "/metrics").1;
    assert!(metrics.contains("\noutage_server_unreachable 1.0\n"), "{metrics}");
    assert!(metrics.contains("\noutage_ready 0.0\n"), "{metrics}");
    assert!(
        metrics.contains(r#"outage_requests_total{route="claim",class="congested"} "#),
        "{metrics}"
    );
    down.store(false, Ordering::SeqCst);
    wait_for(&addr, "/readyz", 200);
    let metrics = http_get(&addr, "/metrics").1;
    assert!(
        metrics.contains("\noutage_outages_survived_total 1\n"),
        "{metrics}"
    );
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the worker did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(finish(child).status.code(), Some(0));
}

#[test]
fn a_metrics_address_in_use_is_a_usage_error() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = command(
        &[
            "--server",
            "http://127.0.0.1:9",
            "--token",
            "t",
            "--job",
            JOB,
            "--metrics-addr",
            &addr,
        ],
        &[],
    )
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--metrics-addr") && err.contains("cannot listen"),
        "{err}"
    );
    let out = command(&["--token", "t", "--job", JOB, "--metrics-addr", "nowhere"], &[])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn completions_and_a_man_page() {
    for (shell, needle) in [
        ("bash", "complete -F _outage__worker"),
        ("zsh", "#compdef outage-worker"),
        ("fish", "complete -c outage-worker"),
    ] {
        let out = command(&["completions", shell], &[]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{shell}");
        assert!(text.contains(needle), "{shell}: {text}");
        assert!(text.contains("metrics-addr"), "{shell}: every flag is completed");
    }
    let out = command(&["man"], &[]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        text.starts_with(".ie") && text.contains(".TH outage-worker 1"),
        "{text}"
    );
    assert!(text.contains("metrics\\-addr"), "{text}");
    // No --job needed for either, and serving flags are refused with them.
    let out = command(&["--token", "t", "man"], &[]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}
