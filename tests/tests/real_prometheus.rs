//! A real Prometheus (Debian's `prometheus`, on loopback, for at most five
//! minutes) scrapes an `outage-worker` that serves the real job server's
//! tasks through an outage (the server killed and started again on the same
//! database while a task runs); its query API then returns the task and
//! outage counts the server's state implies. `promtool check metrics`
//! accepts the worker's exposition, `/readyz` turns unready during the
//! outage and ready after, and the README's dashboard queries parse and
//! match the worker's series.
//!
//! Without `prometheus` on `PATH` the test says so and passes, unless
//! `OUTAGE_REQUIRE_PROMETHEUS=1` (as `.ci/run` sets it), where it fails.

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use outage_tests::real::RealServer;

fn on_path(program: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Kills (and waits for) a child process when dropped.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    match outage_tests::http::request(addr, "GET", path, &[], None) {
        Ok(r) => (r.status, r.text()),
        Err(_) => (0, String::new()),
    }
}

/// Wait (at most `secs`) until `ok` holds of `GET path`; the last answer.
fn wait_until(addr: SocketAddr, path: &str, secs: u64, ok: impl Fn(u16, &str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let (code, body) = get(addr, path);
        if ok(code, &body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "GET {path}: still {code} {body} after {secs} s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Percent-encoding of a query parameter.
fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The value of an instant PromQL query with one result (`None`: no
/// result or not yet ready).
fn query(prom: SocketAddr, q: &str) -> Option<String> {
    let result = results(prom, q)?;
    let [one] = result.as_slice() else { return None };
    one["value"][1].as_str().map(str::to_owned)
}

/// The results of an instant PromQL query (`None`: refused, e.g. a query
/// that does not parse).
fn results(prom: SocketAddr, q: &str) -> Option<Vec<serde_json::Value>> {
    let r = outage_tests::http::request(
        prom,
        "GET",
        &format!("/api/v1/query?query={}", encode(q)),
        &[],
        None,
    )
    .ok()?;
    let v = r.json();
    (r.status == 200 && v["status"] == "success")
        .then(|| v["data"]["result"].as_array().cloned())
        .flatten()
}

/// The PromQL queries of the README's "Dashboard queries" block.
fn readme_queries() -> Vec<&'static str> {
    let readme = include_str!("../../README.md");
    let (_, after) = readme
        .split_once("Dashboard queries:\n\n```promql\n")
        .expect("the README's dashboard queries");
    let (block, _) = after.split_once("```").expect("the block's end");
    block
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

/// Wait until Prometheus answers `q` with `want` (it scrapes every second).
fn expect(prom: SocketAddr, q: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = None;
    while Instant::now() < deadline {
        last = query(prom, q);
        if last.as_deref() == Some(want) {
            return;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!("Prometheus: {q} is {last:?}, wanted {want}");
}

fn wait_status(api: &outage_tests::real::Api, id: &str, want: &[&str], secs: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let s = api.status(id);
        if want.contains(&s.as_str()) {
            return s;
        }
        assert!(Instant::now() < deadline, "task {id} is {s}, wanted {want:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn start_prometheus(dir: &Path, target: SocketAddr, listen: SocketAddr) -> Reaped {
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: outage\n    static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
    // `timeout` bounds it even if this test is killed before its drop.
    let child = Command::new("timeout")
        .args(["-k", "5", "300", "prometheus"])
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address={listen}"))
        .arg("--log.level=warn")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start prometheus");
    Reaped(child)
}

#[test]
fn prometheus_counts_the_tasks_and_the_outage_the_server_saw() {
    if on_path("prometheus").is_none() || on_path("promtool").is_none() {
        assert!(
            std::env::var_os("OUTAGE_REQUIRE_PROMETHEUS").is_none(),
            "prometheus and promtool are required here (apt-get install prometheus)"
        );
        eprintln!("skipped: no prometheus/promtool on PATH (Debian: apt-get install prometheus)");
        return;
    }
    let dir = std::env::temp_dir().join(format!("outage-prometheus-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut server = RealServer::start().expect("the real job server");
    let api = server.api();
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let worker = outage_tests::cli::worker()
        .args(["--server", server.url(), "--token", server.token()])
        .args(["--job", "@global:modifiers:Echo=cat"])
        .args(["--job", "@global:modifiers:Fail=false"])
        .args(["--job", r#"@global:modifiers:Slow=sh -c "sleep 2; cat""#])
        .args([
            "--poll",
            "200ms",
            "--backoff-cap",
            "500ms",
            "--max-unreachable",
            "120s",
        ])
        .args(["--push", "off", "--log-format", "json"])
        .args(["--metrics-addr", &metrics.to_string()])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("worker.log")).unwrap())
        .spawn()
        .expect("start outage-worker");
    let mut worker = Reaped(worker);
    wait_until(metrics, "/readyz", 60, |c, _| c == 200);
    let prom: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let _prometheus = start_prometheus(&dir, metrics, prom);

    // Before the outage: three tasks done, one failed.
    let mut ids = Vec::new();
    for job in ["Echo", "Echo", "Fail", "Echo"] {
        ids.push(api.submit("@global", &format!("@global:modifiers:{job}"), r#"{"n":1}"#));
    }
    for id in &ids {
        wait_status(&api, id, &["completed", "failed"], 60);
    }
    // The outage: the server dies while a slow task runs; the task ends
    // during the outage and its outcome is held.
    let slow = api.submit("@global", "@global:modifiers:Slow", r#"{"n":2}"#);
    wait_status(&api, &slow, &["running"], 60);
    server.crash().unwrap();
    let unready = wait_until(metrics, "/readyz", 60, |c, _| c == 503);
    assert!(
        unready.starts_with("not ready: Server unreachable — retrying ("),
        "{unready}"
    );
    let (code, alive) = get(metrics, "/healthz");
    assert_eq!(code, 200, "alive during the outage: {alive}");
    // Long enough for the task to finish and Prometheus to see the outage.
    std::thread::sleep(Duration::from_secs(4));
    expect(prom, "max_over_time(outage_server_unreachable[5m])", "1");
    let waiting = wait_until(metrics, "/metrics", 30, |_, b| {
        b.contains("\noutage_outcomes_waiting 1.0\n")
    });
    assert!(waiting.contains("\noutage_tasks_running 0.0\n"), "{waiting}");
    server.restart().unwrap();
    wait_until(metrics, "/readyz", 60, |c, _| c == 200);
    assert_eq!(
        wait_status(&api, &slow, &["completed", "failed"], 60),
        "completed"
    );
    ids.push(slow);
    for _ in 0..2 {
        let id = api.submit("@global", "@global:modifiers:Echo", r#"{"n":3}"#);
        wait_status(&api, &id, &["completed", "failed"], 60);
        ids.push(id);
    }

    // What the server holds, and what Prometheus says.
    let statuses: Vec<String> = ids.iter().map(|id| api.status(id)).collect();
    let count = |s: &str| statuses.iter().filter(|x| *x == s).count().to_string();
    assert_eq!(
        (count("completed"), count("failed")),
        ("6".into(), "1".into()),
        "{statuses:?}"
    );
    expect(prom, r#"up{job="outage"}"#, "1");
    expect(
        prom,
        r#"sum(outage_tasks_total{outcome="completed"})"#,
        &count("completed"),
    );
    expect(
        prom,
        r#"sum(outage_tasks_total{outcome="failed"})"#,
        &count("failed"),
    );
    expect(
        prom,
        r#"outage_tasks_total{job_name="@global:modifiers:Slow",outcome="completed"}"#,
        "1",
    );
    expect(prom, "outage_outages_survived_total", "1");
    expect(prom, "outage_outcomes_held_total", "1");
    // Every outcome reached the server: none given up.
    expect(prom, "outage_outcomes_delivered_total", &ids.len().to_string());
    expect(prom, "outage_outcomes_given_up_total", "0");
    expect(
        prom,
        "outage_task_duration_seconds_count{job_name=\"@global:modifiers:Slow\"}",
        "1",
    );
    // The held outcome went out after the outage: two updates per task.
    expect(
        prom,
        r#"sum(outage_requests_total{route="task_status",class="ok"})"#,
        &(2 * ids.len()).to_string(),
    );
    expect(prom, "outage_ready", "1");
    expect(prom, "count(outage_worker_info)", "1");

    // The README's dashboard queries parse and match the worker's series;
    // an alert's comparison may filter everything out (nothing is wrong
    // now), so its left side must match.
    let queries = readme_queries();
    assert!(queries.len() >= 6, "{queries:?}");
    for q in queries {
        let found = results(prom, q).unwrap_or_else(|| panic!("Prometheus refused {q}"));
        let series = match q.split_once(" > ") {
            Some((left, _)) => results(prom, left).unwrap_or_default(),
            None => found,
        };
        assert!(!series.is_empty(), "the README's {q} matches nothing");
    }

    // promtool accepts the exposition as served to it (Prometheus's text).
    let text = get(metrics, "/metrics").1;
    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    check.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // A clean stop, and the worker gone from the server.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(worker.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = worker.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the worker did not stop");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status.code(), Some(0));
    let log = std::fs::read_to_string(dir.join("worker.log")).unwrap();
    assert!(log.contains(r#""event":"disconnected""#), "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}
