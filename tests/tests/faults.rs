//! Every fault of the test job server, shown to happen on the wire.

use std::io::ErrorKind;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use outage_tests::http::{self, Connection, Response};
use outage_tests::server::{Fault, TestServer};

const API: &str = "/v1/joblib";

struct Client {
    addr: SocketAddr,
    token: String,
    auth: String,
}

impl Client {
    fn new(server: &TestServer) -> Client {
        Client {
            addr: server.addr(),
            token: server.token().to_owned(),
            auth: format!("Bearer {}", server.token()),
        }
    }

    fn call(&self, method: &str, path: &str, body: Option<&str>) -> std::io::Result<Response> {
        http::api(self.addr, &self.token, method, path, body.map(str::as_bytes))
    }

    fn create_worker(&self) -> String {
        let r = self.call("POST", "/workers", None).expect("create worker");
        assert_eq!(r.status, 201);
        r.json()["id"].as_str().unwrap().to_owned()
    }
}

/// Polls `cond` every 10 ms for up to 2 s (the server reacts to faults
/// within a few ms).
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    // A bound, not a margin: generous for a loaded machine.
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("{what} did not happen within 10 s");
}

fn refused(addr: SocketAddr) -> bool {
    matches!(TcpStream::connect(addr), Err(e) if e.kind() == ErrorKind::ConnectionRefused)
}

#[test]
fn refuse_closes_the_listener_and_open_connections() {
    let server = TestServer::start().unwrap();
    let c = Client::new(&server);
    let mut conn = Connection::open(server.addr()).unwrap();
    let r = conn
        .send(
            "POST",
            &format!("{API}/workers"),
            &[("Authorization", &c.auth)],
            None,
        )
        .unwrap();
    assert_eq!(r.status, 201);
    server.set_fault(Fault::Refuse);
    eventually("connection refused", || refused(server.addr()));
    assert!(
        conn.closed_by_peer_within(Duration::from_secs(2)).unwrap(),
        "open connections are closed too"
    );
    server.clear_faults();
    eventually("listening again", || {
        c.call("POST", "/workers", None).is_ok_and(|r| r.status == 201)
    });
}

#[test]
fn blackhole_accepts_and_never_answers() {
    let server = TestServer::start().unwrap();
    let c = Client::new(&server);
    server.set_fault(Fault::Blackhole);
    let stream = TcpStream::connect(server.addr()).expect("the connection is accepted");
    drop(stream);
    let mut conn = Connection::open(server.addr()).unwrap();
    // The client's own timeout is what ends the wait.
    let started = Instant::now();
    let err = {
        let s = conn.send(
            "POST",
            &format!("{API}/workers"),
            &[("Authorization", &c.auth)],
            None,
        );
        s.expect_err("no answer")
    };
    assert!(
        matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        "{err}"
    );
    assert!(started.elapsed() >= Duration::from_secs(9));
    let j = server.journal();
    assert_eq!(j.last().unwrap().fault, Some("blackhole"));
    assert_eq!(j.last().unwrap().status, None);
    server.clear_faults();
    assert_eq!(c.call("POST", "/workers", None).unwrap().status, 201);
}

#[test]
fn reset_mid_response() {
    let server = TestServer::start().unwrap();
    let c = Client::new(&server);
    server.set_fault(Fault::Reset);
    let err = c.call("POST", "/workers", None).expect_err("reset");
    assert!(err.kind() == ErrorKind::ConnectionReset, "{err:?}");
    assert_eq!(server.journal().last().unwrap().fault, Some("reset"));
}

#[test]
fn error_statuses_with_and_without_retry_after() {
    let server = TestServer::start().unwrap();
    let c = Client::new(&server);
    for (status, retry_after) in [
        (500, None),
        (502, None),
        (503, None),
        (503, Some(7)),
        (429, Some(3)),
        (500, Some(1)),
    ] {
        server.clear_faults();
        server.set_fault(Fault::Status { status, retry_after });
        let r = c.call("POST", "/workers", None).unwrap();
        assert_eq!(r.status, status);
        assert_eq!(
            r.header("retry-after"),
            retry_after.map(|s| s.to_string()).as_deref()
        );
        assert_eq!(server.journal().last().unwrap().status, Some(status));
    }
    assert!(
        server.state().workers.is_empty(),
        "a faulted request never reaches the API"
    );
}

#[test]
fn malformed_json() {
    let server = TestServer::start().unwrap();
    let c = Client::new(&server);
    let w = c.create_worker();
    server.set_fault(Fault::MalformedJson);
    let r = c
        .call("POST", "/tasks/claim", Some(&format!(r#"{{"worker_id":"{w}"}}"#)))
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert!(
        serde_json::from_slice::<serde_json::Value>(&r.body).is_err(),
        "{}",
        r.text()
    );
}

#[test]
fn truncated_body() {
    let server = TestServer::start().unwrap();
    let c = Client::new(&server);
    server.set_fault(Fault::TruncatedBody);
    let err = c.call("POST", "/workers", None).expect_err("body cut short");
    assert_eq!(err.kind(), ErrorKind::UnexpectedEof, "{err:?}");
}

#[test]
fn oversized_body() {
    let server = TestServer::start().unwrap();
    let c = Client::new(&server);
    server.set_fault(Fault::OversizedBody(1 << 20));
    let r = c.call("POST", "/workers", None).unwrap();
    assert_eq!(r.status, 200);
    assert!(r.body.len() > 1 << 20);
    assert!(r.json().is_object(), "valid JSON, just large");
}

#[test]
fn slow_answers() {
    let server = TestServer::start().unwrap();
    let c = Client::new(&server);
    server.set_fault(Fault::Slow(Duration::from_millis(300)));
    let started = Instant::now();
    let r = c.call("POST", "/workers", None).unwrap();
    assert_eq!(r.status, 201, "slow, but the real answer");
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[test]
fn forget_state_loses_every_worker() {
    let server = TestServer::start().unwrap();
    let c = Client::new(&server);
    let w = c.create_worker();
    server.forget_state();
    let r = c.call("PATCH", &format!("/workers/{w}"), None).unwrap();
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["type"], "/v1/problems/worker-not-found");
}

#[test]
fn revoked_token_gets_401() {
    let server = TestServer::start().unwrap();
    let c = Client::new(&server);
    let w = c.create_worker();
    server.revoke_token();
    let r = c.call("PATCH", &format!("/workers/{w}"), None).unwrap();
    assert_eq!(r.status, 401);
    assert_eq!(r.text(), r#"{"detail":"Unauthorized"}"#);
    server.restore_token();
    assert_eq!(
        c.call("PATCH", &format!("/workers/{w}"), None).unwrap().status,
        200
    );
}

#[test]
fn restart_keeps_state() {
    let server = TestServer::start().unwrap();
    let c = Client::new(&server);
    let w = c.create_worker();
    server.restart(Duration::from_millis(400));
    eventually("down during the restart", || refused(server.addr()));
    eventually("back after the restart", || {
        c.call("PATCH", &format!("/workers/{w}"), None)
            .is_ok_and(|r| r.status == 200)
    });
}

#[test]
fn faults_on_a_schedule() {
    let server = TestServer::start().unwrap();
    let c = Client::new(&server);
    // A window from 2 s to 4 s: wide margins for a loaded machine; the
    // inside and after are polled for, not timed.
    server.schedule(
        Fault::Status {
            status: 503,
            retry_after: Some(1),
        },
        Duration::from_secs(2),
        Duration::from_secs(4),
    );
    assert_eq!(
        c.call("POST", "/workers", None).unwrap().status,
        201,
        "before the window"
    );
    let status = || c.call("POST", "/workers", None).map_or(0, |r| r.status);
    eventually("503 inside the window", || status() == 503);
    eventually("201 after the window", || status() == 201);

    // A refusal on a schedule, too.
    server.schedule(
        Fault::Refuse,
        Duration::from_millis(100),
        Duration::from_millis(500),
    );
    eventually("refused inside the window", || refused(server.addr()));
    eventually("accepting after the window", || !refused(server.addr()));
}

#[test]
fn faults_can_target_one_endpoint() {
    let server = TestServer::start().unwrap();
    let c = Client::new(&server);
    let w = c.create_worker();
    server.set_fault_on(
        Fault::Status {
            status: 502,
            retry_after: None,
        },
        "/tasks/claim",
    );
    assert_eq!(
        c.call("PATCH", &format!("/workers/{w}"), None).unwrap().status,
        200
    );
    let claim = format!(r#"{{"worker_id":"{w}"}}"#);
    assert_eq!(c.call("POST", "/tasks/claim", Some(&claim)).unwrap().status, 502);
}

#[test]
fn journal_records_every_request() {
    let server = TestServer::start().unwrap();
    let c = Client::new(&server);
    let w = c.create_worker();
    for _ in 0..3 {
        c.call("PATCH", &format!("/workers/{w}"), None).unwrap();
    }
    let j = server.journal();
    assert_eq!(j.len(), 4);
    assert_eq!(j[0].method, "POST");
    assert_eq!(j[0].path, "/v1/joblib/workers");
    assert_eq!(j[0].status, Some(201));
    let beats: Vec<_> = j.iter().filter(|e| e.method == "PATCH").collect();
    assert_eq!(beats.len(), 3);
    assert!(
        beats.windows(2).all(|w| w[0].at <= w[1].at),
        "arrival times are ordered"
    );
    assert_eq!(beats[0].header("authorization"), Some(c.auth.as_str()));
    assert!(beats[0].header("host").is_some());
    server.clear_journal();
    assert!(server.journal().is_empty());
}

#[test]
fn drop_closes_without_an_answer_for_the_next_requests_only() {
    let server = TestServer::start().unwrap();
    let c = Client::new(&server);
    server.fault_next(Fault::Drop, "/workers", 1);
    let err = c
        .call("POST", "/workers", None)
        .expect_err("closed without an answer");
    assert_eq!(err.kind(), ErrorKind::UnexpectedEof, "{err:?}");
    assert_eq!(
        c.call("POST", "/workers", None).unwrap().status,
        201,
        "the plan is spent"
    );
    assert_eq!(server.journal()[0].fault, Some("drop"));
}

/// A worker linked to `@global:modifiers:F` with `n` tasks pending, whose
/// ids are returned in submission order.
fn worker_with_tasks(server: &TestServer, c: &Client, n: usize) -> (String, Vec<String>) {
    let w = c.create_worker();
    let reg = format!(r#"{{"category":"modifiers","name":"F","schema":{{}},"worker_id":"{w}"}}"#);
    assert_eq!(
        c.call("PUT", "/rooms/@global/jobs", Some(&reg)).unwrap().status,
        201
    );
    let ids = (0..n)
        .map(|i| {
            server
                .submit_raw("room1", "@global:modifiers:F", &format!(r#"{{"i":{i}}}"#))
                .unwrap()
                .to_string()
        })
        .collect();
    (w, ids)
}

/// A claim on its own connection that gives up after `wait`; returns the
/// error (the client's timeout) and drops the connection.
fn claim_giving_up(c: &Client, w: &str, wait: Duration) -> std::io::Error {
    let mut conn = Connection::open(c.addr).unwrap();
    conn.set_read_timeout(wait).unwrap();
    let body = format!(r#"{{"worker_id":"{w}"}}"#);
    conn.send(
        "POST",
        &format!("{API}/tasks/claim"),
        &[
            ("Authorization", c.auth.as_str()),
            ("Content-Type", "application/json"),
        ],
        Some(body.as_bytes()),
    )
    .expect_err("the client gives up first")
}

fn status_of(server: &TestServer, id: &str) -> &'static str {
    server.state().tasks[&id.parse().unwrap()].status.as_str()
}

#[test]
fn late_commits_at_once_and_answers_after_the_delay() {
    let server = TestServer::start().unwrap();
    let c = Client::new(&server);
    let (w, ids) = worker_with_tasks(&server, &c, 2);
    server.set_fault_on(Fault::Late(Duration::from_millis(800)), "/tasks/claim");

    // A client that gives up after 200 ms: the claim is committed anyway.
    let err = claim_giving_up(&c, &w, Duration::from_millis(200));
    assert!(
        matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        "{err}"
    );
    assert_eq!(status_of(&server, &ids[0]), "claimed", "processed at once");
    let j = server.journal();
    let lost = j.last().unwrap();
    assert_eq!(lost.fault, Some("late"));
    assert!(lost.processed);
    assert_eq!(lost.reply, Some(200));
    assert_eq!(lost.claimed_task().as_deref(), Some(ids[0].as_str()));
    // Once the delay is over, the journal knows the answer found nobody.
    eventually("the late answer is given up", || {
        server.journal()[lost.seq as usize].status.is_none()
            && server.elapsed() > lost.at + Duration::from_millis(900)
    });
    assert!(server.journal()[lost.seq as usize].answer_lost());

    // A patient client gets the real answer, late.
    let started = Instant::now();
    let body = format!(r#"{{"worker_id":"{w}"}}"#);
    let r = c.call("POST", "/tasks/claim", Some(&body)).unwrap();
    assert!(started.elapsed() >= Duration::from_millis(800));
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["task"]["id"], ids[1].as_str());
    let e = server.journal().last().unwrap().clone();
    assert_eq!((e.processed, e.reply, e.status), (true, Some(200), Some(200)));
    assert_ne!(e.connection, lost.connection);
    let (processed, answered) = (e.processed_at.unwrap(), e.answered_at.unwrap());
    assert!(processed - e.at < Duration::from_millis(100), "processed at once");
    assert!(
        answered - processed >= Duration::from_millis(800),
        "answered late"
    );
}

#[test]
fn slow_is_cancelled_when_the_client_leaves() {
    let server = TestServer::start().unwrap();
    let c = Client::new(&server);
    let (w, ids) = worker_with_tasks(&server, &c, 1);
    server.set_fault_on(Fault::Slow(Duration::from_millis(600)), "/tasks/claim");
    claim_giving_up(&c, &w, Duration::from_millis(150));
    // Well past the delay: the request was never processed.
    std::thread::sleep(Duration::from_millis(1_000));
    assert_eq!(status_of(&server, &ids[0]), "pending");
    let e = server.journal().last().unwrap().clone();
    assert_eq!(e.fault, Some("slow"));
    assert_eq!((e.processed, e.reply, e.status), (false, None, None));
}

#[test]
fn pause_holds_requests_then_processes_them_in_arrival_order() {
    let server = TestServer::start().unwrap();
    let c = Client::new(&server);
    let (w, ids) = worker_with_tasks(&server, &c, 2);
    let pause = Duration::from_secs(4);
    server.schedule(Fault::Pause, Duration::ZERO, pause);
    let paused_at = Instant::now();

    // An impatient claim, then a patient one on another connection.
    claim_giving_up(&c, &w, Duration::from_millis(200));
    let patient = {
        let c = Client::new(&server);
        let w = w.clone();
        std::thread::spawn(move || {
            let body = format!(r#"{{"worker_id":"{w}"}}"#);
            let r = c.call("POST", "/tasks/claim", Some(&body));
            (r, Instant::now())
        })
    };
    let claims_read = || {
        server
            .journal()
            .into_iter()
            .filter(|e| e.path.ends_with("/tasks/claim"))
            .collect::<Vec<_>>()
    };
    eventually("both claims read", || claims_read().len() == 2);
    // Paused: connections are accepted, requests read, nothing processed.
    assert!(TcpStream::connect(server.addr()).is_ok(), "still accepting");
    assert_eq!(status_of(&server, &ids[0]), "pending");
    assert_eq!(status_of(&server, &ids[1]), "pending");
    let claims = claims_read();
    assert!(paused_at.elapsed() < pause, "checked during the pause");
    assert!(claims.iter().all(|e| e.fault == Some("pause") && !e.processed));

    let (r, answered_at) = patient.join().unwrap();
    let r = r.unwrap();
    // (The pause was scheduled a moment before `paused_at`.)
    assert!(
        answered_at - paused_at >= pause - Duration::from_millis(50),
        "answered only after the pause"
    );
    // The first claim (whose client had gone) took the first task.
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["task"]["id"], ids[1].as_str(), "{}", r.text());
    assert_eq!(status_of(&server, &ids[0]), "claimed");
    let j = server.journal();
    let (first, second) = (&j[claims[0].seq as usize], &j[claims[1].seq as usize]);
    assert_eq!(first.claimed_task().as_deref(), Some(ids[0].as_str()));
    assert!(first.answer_lost(), "its client had gone: {first:?}");
    assert_eq!(second.claimed_task().as_deref(), Some(ids[1].as_str()));
    assert_eq!(second.status, Some(200));
    assert_ne!(first.connection, second.connection);
    assert!(first.processed_at <= second.processed_at, "arrival order");
}

#[test]
fn pause_closes_no_idle_connection() {
    let server = TestServer::builder()
        .idle_timeout(Duration::from_millis(200))
        .start()
        .unwrap();
    let c = Client::new(&server);
    server.set_fault(Fault::Pause);
    let mut conn = Connection::open(server.addr()).unwrap();
    let auth = [("Authorization", c.auth.as_str())];
    assert!(
        !conn.closed_by_peer_within(Duration::from_millis(700)).unwrap(),
        "a paused server closes nothing"
    );
    server.clear_faults();
    assert!(
        conn.closed_by_peer_within(Duration::from_secs(2)).unwrap(),
        "idle past the limit: closed once the pause ends"
    );
    let mut conn = Connection::open(server.addr()).unwrap();
    assert_eq!(
        conn.send("POST", &format!("{API}/workers"), &auth, None)
            .unwrap()
            .status,
        201
    );
}
