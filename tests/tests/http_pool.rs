//! The host worker's HTTP client (`SurfHttp` over `h1::H1Client`) against
//! the test job server's faults and a few raw TCP servers: an answer that
//! comes late, or a connection an exchange did not finish on, is never read
//! as another request's answer; the response head and body stay within
//! their limits; idle connections are reused only while young and quiet.
//!
//! Each test proves it with what the server saw: the journal's connection
//! ids (or the raw server's own connection numbers) and the bodies, which
//! name the request they answer.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use outage_core::protocol::Method;
use outage_core::{Failure, Transport};
use outage_runtime_std::http::{Http, Outgoing, Response, SurfHttp};
use outage_tests::http as plain;
use outage_tests::server::{Entry, Fault, TestServer};
use serde_json::{Value, json};

/// Time for requests that should succeed: generous, the machine is loaded.
const OK: Duration = Duration::from_secs(10);
/// The client timeout in the tests where the server is too slow.
const SHORT: Duration = Duration::from_millis(500);

/// A test server with one registered worker, a job and `tasks` tasks, and
/// the client under test. The journal starts empty.
struct Fixture {
    server: TestServer,
    http: SurfHttp,
    worker: String,
    tasks: Vec<String>,
}

impl Fixture {
    fn new(server: TestServer, http: SurfHttp, tasks: usize) -> Fixture {
        // Set up with the plain test client (one connection per request),
        // so the client under test starts with an empty pool.
        let addr = server.addr();
        let created = plain::api(addr, server.token(), "POST", "/workers", None).unwrap();
        assert_eq!(created.status, 201, "{}", created.text());
        let worker = created.json()["id"].as_str().unwrap().to_owned();
        let reg = json!({"category": "modifiers", "name": "Echo", "schema": {}, "worker_id": worker});
        let reg = serde_json::to_vec(&reg).unwrap();
        let r = plain::api(addr, server.token(), "PUT", "/rooms/@global/jobs", Some(&reg)).unwrap();
        assert!(r.status == 200 || r.status == 201, "{}", r.text());
        let tasks = (0..tasks)
            .map(|i| {
                server
                    .submit("room1", "@global:modifiers:Echo", json!({ "i": i }))
                    .unwrap()
                    .to_string()
            })
            .collect();
        server.clear_journal();
        Fixture {
            server,
            http,
            worker,
            tasks,
        }
    }

    fn call(&self, method: Method, path: &str, timeout: Duration) -> Result<Response, Failure> {
        let url = format!("{}/v1/joblib{path}", self.server.url());
        let req = Outgoing {
            method,
            url: &url,
            json: None,
            form: false,
            timeout,
        };
        async_std::task::block_on(self.http.send(req, self.server.token()))
    }

    /// `PATCH /workers/{id}`
    fn heartbeat(&self, timeout: Duration) -> Result<Response, Failure> {
        self.call(Method::Patch, &format!("/workers/{}", self.worker), timeout)
    }

    /// `GET /tasks/{id}` of task `i`.
    fn get_task(&self, i: usize, timeout: Duration) -> Result<Response, Failure> {
        self.call(Method::Get, &format!("/tasks/{}", self.tasks[i]), timeout)
    }

    /// A heartbeat that must succeed with the heartbeat's own answer.
    fn heartbeat_ok(&self) {
        let r = self.heartbeat(OK).expect("heartbeat");
        let body = body_json(&r);
        assert_eq!(r.status, 200, "{body}");
        assert_eq!(
            body["id"], self.worker,
            "the heartbeat got another answer: {body}"
        );
        assert!(body.get("last_heartbeat").is_some(), "{body}");
        assert!(body.get("job_name").is_none(), "a task's answer: {body}");
    }

    /// A task read that must succeed with that task's own answer.
    fn get_task_ok(&self, i: usize) {
        let r = self.get_task(i, OK).expect("task read");
        let body = body_json(&r);
        assert_eq!(r.status, 200, "{body}");
        assert_eq!(body["id"], self.tasks[i], "task {i} got another answer: {body}");
        assert_eq!(body["payload"]["i"], i, "{body}");
    }

    /// The journal entry of the request for task `i` (the first one).
    fn task_entry(&self, i: usize) -> Entry {
        self.server
            .journal()
            .into_iter()
            .find(|e| e.path.ends_with(&self.tasks[i]))
            .unwrap_or_else(|| panic!("task {i} was never requested"))
    }
}

fn body_json(r: &Response) -> Value {
    serde_json::from_slice(&r.body).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&r.body).into()))
}

fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// After a failed exchange on connection `bad`: every later request came on
/// another connection and was answered, and the later requests shared
/// connections (the pool was in use, so the test could have caught reuse).
fn assert_abandoned(journal: &[Entry], failed_at: usize) {
    let bad = journal[failed_at].connection;
    let later = &journal[failed_at + 1..];
    assert!(later.len() >= 4, "{journal:#?}");
    for e in later {
        assert_ne!(
            e.connection, bad,
            "a connection an exchange did not finish on was reused: {journal:#?}"
        );
        assert_eq!(e.status, Some(200), "{journal:#?}");
        assert_eq!(e.fault, None, "{journal:#?}");
    }
    let mut connections: Vec<u64> = later.iter().map(|e| e.connection).collect();
    connections.sort_unstable();
    connections.dedup();
    assert!(
        connections.len() < later.len(),
        "no connection was reused at all: {journal:#?}"
    );
}

/// The slow answer would come long after the client gave up: no later
/// request (heartbeats and task reads alternate, each with its own answer)
/// goes on the slow request's connection, before or after its answer was
/// due. The client closes that connection, so the test server (hyper) drops
/// the slow request unanswered; a client that pooled the connection again
/// would have kept it open and read the late answer as the next one's, as
/// the raw-server tests below show with bytes that do arrive.
#[test]
fn a_late_answer_is_never_read_as_another_requests_answer() {
    let f = Fixture::new(TestServer::start().unwrap(), SurfHttp::new(1 << 20).unwrap(), 9);
    // A pooled connection for the slow request to take.
    f.heartbeat_ok();
    f.server
        .fault_next(Fault::Slow(Duration::from_secs(2)), &f.tasks[0], 1);
    let started = Instant::now();
    assert_eq!(f.get_task(0, SHORT), Err(Failure::Transport(Transport::Timeout)));
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    // While the server still sleeps on the slow request.
    for i in 1..=4 {
        f.heartbeat_ok();
        f.get_task_ok(i);
    }
    // Past the time the slow answer was due.
    let due = f.task_entry(0).at + Duration::from_millis(2300);
    wait_until("the slow answer is due", OK, || f.server.elapsed() >= due);
    for i in 5..=8 {
        f.heartbeat_ok();
        f.get_task_ok(i);
    }
    let journal = f.server.journal();
    let slow = journal.iter().position(|e| e.fault == Some("slow")).unwrap();
    assert_eq!(slow, 1, "{journal:#?}");
    assert_eq!(
        journal[0].connection, journal[slow].connection,
        "the slow request went on a pooled connection"
    );
    assert_eq!(journal[slow].status, None, "dropped with its connection");
    assert_abandoned(&journal, slow);
}

/// Requests into a blackhole time out; once it is gone, requests are
/// answered, each with its own answer, and none goes on a blackholed
/// connection.
#[test]
fn a_blackhole_then_recovery() {
    let f = Fixture::new(TestServer::start().unwrap(), SurfHttp::new(1 << 20).unwrap(), 4);
    f.heartbeat_ok();
    f.server.set_fault(Fault::Blackhole);
    assert_eq!(f.get_task(0, SHORT), Err(Failure::Transport(Transport::Timeout)));
    assert_eq!(f.heartbeat(SHORT), Err(Failure::Transport(Transport::Timeout)));
    f.server.clear_faults();
    for i in 0..4 {
        f.get_task_ok(i);
        f.heartbeat_ok();
    }
    let journal = f.server.journal();
    let holes: Vec<usize> = (0..journal.len())
        .filter(|&i| journal[i].fault == Some("blackhole"))
        .collect();
    assert_eq!(holes, [1, 2], "{journal:#?}");
    assert_eq!(
        journal[0].connection, journal[1].connection,
        "the pooled connection went in first"
    );
    assert_abandoned(&journal, 2);
    assert!(journal[3..].iter().all(|e| e.connection != journal[1].connection));
}

/// One faulted task read, then alternating requests; the faulted exchange's
/// connection is not used again.
fn fault_then_recovery(fault: Fault, http: SurfHttp, expect: Failure) {
    let f = Fixture::new(TestServer::start().unwrap(), http, 4);
    f.heartbeat_ok();
    let name = fault.name();
    f.server.fault_next(fault, &f.tasks[0], 1);
    let started = Instant::now();
    assert_eq!(f.get_task(0, OK), Err(expect));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    for i in 0..4 {
        f.get_task_ok(i);
        f.heartbeat_ok();
    }
    let journal = f.server.journal();
    assert_eq!(journal[1].fault, Some(name), "{journal:#?}");
    assert_eq!(
        journal[0].connection, journal[1].connection,
        "the pooled connection was faulted"
    );
    assert_abandoned(&journal, 1);
}

#[test]
fn a_reset_mid_body_is_truncated_and_the_connection_dropped() {
    fault_then_recovery(
        Fault::Reset,
        SurfHttp::new(1 << 20).unwrap(),
        Failure::Transport(Transport::Truncated),
    );
}

#[test]
fn a_truncated_body_is_truncated_and_the_connection_dropped() {
    fault_then_recovery(
        Fault::TruncatedBody,
        SurfHttp::new(1 << 20).unwrap(),
        Failure::Transport(Transport::Truncated),
    );
}

#[test]
fn an_oversized_body_is_too_large_and_the_connection_dropped() {
    fault_then_recovery(
        Fault::OversizedBody(4 << 20),
        SurfHttp::new(64 * 1024).unwrap(),
        Failure::ResponseTooLarge,
    );
}

/// An idle connection older than the client's idle limit is closed, not
/// reused — though the server would still have served it.
#[test]
fn idle_connections_past_the_idle_limit_are_not_reused() {
    let server = TestServer::builder()
        .idle_timeout(Duration::from_secs(30))
        .start()
        .unwrap();
    let http = SurfHttp::with_idle_limit(1 << 20, Duration::from_millis(1200)).unwrap();
    let f = Fixture::new(server, http, 2);
    f.heartbeat_ok();
    f.get_task_ok(0);
    thread::sleep(Duration::from_millis(2500));
    f.heartbeat_ok();
    f.get_task_ok(1);
    let j = f.server.journal();
    assert_eq!(j.len(), 4, "{j:#?}");
    assert_eq!(j[0].connection, j[1].connection, "reused while young: {j:#?}");
    assert_ne!(
        j[1].connection, j[2].connection,
        "reused past the idle limit: {j:#?}"
    );
    assert_eq!(j[2].connection, j[3].connection, "{j:#?}");
}

/// The server closed an idle connection (younger than the client's idle
/// limit): the client sees that before sending, and sends on a new one.
#[test]
fn an_idle_connection_the_server_closed_is_not_used() {
    let server = TestServer::builder()
        .idle_timeout(Duration::from_millis(300))
        .start()
        .unwrap();
    let f = Fixture::new(server, SurfHttp::new(1 << 20).unwrap(), 1);
    f.heartbeat_ok();
    // The server closes it after 0.3–0.4 s; the client's limit is 4 s.
    thread::sleep(Duration::from_millis(1500));
    f.heartbeat_ok();
    f.get_task_ok(0);
    let j = f.server.journal();
    assert_eq!(j.len(), 3, "{j:#?}");
    assert_ne!(j[0].connection, j[1].connection, "{j:#?}");
    assert_eq!(j[1].connection, j[2].connection, "{j:#?}");
}

// ------------------------------------------------------- raw TCP servers

/// A server on 127.0.0.1 that runs `serve(n, stream)` on a thread for its
/// `n`th connection (from 0). Its threads end with the test process.
fn raw_server(serve: impl Fn(usize, TcpStream) + Send + Sync + 'static) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let serve = Arc::new(serve);
    thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(stream) = stream else { continue };
            let serve = serve.clone();
            thread::spawn(move || serve(n, stream));
        }
    });
    addr
}

/// Read one request head (the raw-server tests send bodiless GETs).
fn read_request(r: &mut BufReader<TcpStream>) -> bool {
    loop {
        let mut line = String::new();
        match r.read_line(&mut line) {
            Ok(0) | Err(_) => return false,
            Ok(_) if line == "\r\n" => return true,
            Ok(_) => {}
        }
    }
}

/// A chunked answer naming its connection and request: `c{n}r{k}`.
fn chunked_answer(n: usize, k: usize) -> Vec<u8> {
    let body = format!("c{n}r{k}");
    format!(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n{}\r\n{:x}\r\n{}\r\n0\r\n\r\n",
        &body[..1],
        body.len() - 1,
        &body[1..]
    )
    .into_bytes()
}

/// Answer every request on the connection with [`chunked_answer`].
fn answer_all(n: usize, stream: TcpStream) {
    let mut w = stream.try_clone().unwrap();
    let mut r = BufReader::new(stream);
    let mut k = 0;
    while read_request(&mut r) {
        k += 1;
        if w.write_all(&chunked_answer(n, k)).is_err() {
            return;
        }
    }
}

fn get(http: &SurfHttp, addr: SocketAddr, timeout: Duration) -> Result<Response, Failure> {
    let url = format!("http://{addr}/x");
    let req = Outgoing {
        method: Method::Get,
        url: &url,
        json: None,
        form: false,
        timeout,
    };
    async_std::task::block_on(http.send(req, "t"))
}

fn body_of(r: Result<Response, Failure>) -> String {
    let r = r.expect("an answer");
    assert_eq!(r.status, 200);
    String::from_utf8(r.body).unwrap()
}

#[test]
fn chunked_answers_keep_the_connection() {
    let addr = raw_server(answer_all);
    let http = SurfHttp::new(1 << 20).unwrap();
    assert_eq!(body_of(get(&http, addr, OK)), "c0r1");
    assert_eq!(body_of(get(&http, addr, OK)), "c0r2");
    assert_eq!(body_of(get(&http, addr, OK)), "c0r3");
}

/// Bytes that arrive on an idle connection, unasked (what a late answer is),
/// make it unusable: the next request goes on a new connection.
#[test]
fn unasked_bytes_on_an_idle_connection_are_never_read_as_an_answer() {
    let addr = raw_server(|n, stream| {
        if n > 0 {
            return answer_all(n, stream);
        }
        let mut w = stream.try_clone().unwrap();
        let mut r = BufReader::new(stream);
        assert!(read_request(&mut r));
        w.write_all(&chunked_answer(0, 1)).unwrap();
        thread::sleep(Duration::from_millis(300));
        let _ = w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nLATE");
        // Keep the connection open, and answer anything sent on it.
        let mut k = 1;
        while read_request(&mut r) {
            k += 1;
            let _ = w.write_all(&chunked_answer(0, k));
        }
    });
    let http = SurfHttp::new(1 << 20).unwrap();
    assert_eq!(body_of(get(&http, addr, OK)), "c0r1");
    thread::sleep(Duration::from_millis(1300));
    assert_eq!(body_of(get(&http, addr, OK)), "c1r1");
    assert_eq!(body_of(get(&http, addr, OK)), "c1r2");
}

/// The client gives up half-way through a body; the rest arrives later on
/// that connection, which is gone: later requests get their own answers.
#[test]
fn a_timeout_mid_body_drops_the_connection() {
    let (sent, rest_sent) = mpsc::channel();
    let addr = raw_server(move |n, stream| {
        if n > 0 {
            return answer_all(n, stream);
        }
        let mut w = stream.try_clone().unwrap();
        let mut r = BufReader::new(stream);
        assert!(read_request(&mut r));
        w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nfirst")
            .unwrap();
        thread::sleep(Duration::from_millis(1500));
        let _ = w.write_all(b"-half");
        let _ = sent.send(());
        let mut k = 1;
        while read_request(&mut r) {
            k += 1;
            let _ = w.write_all(&chunked_answer(0, k));
        }
    });
    let http = SurfHttp::new(1 << 20).unwrap();
    assert_eq!(
        get(&http, addr, SHORT),
        Err(Failure::Transport(Transport::Timeout))
    );
    assert_eq!(body_of(get(&http, addr, OK)), "c1r1");
    rest_sent.recv_timeout(OK).unwrap();
    thread::sleep(Duration::from_millis(200));
    assert_eq!(body_of(get(&http, addr, OK)), "c1r2");
}

/// A server that sends `prefix`, then `line` over and over (up to 256 MiB)
/// until the client stops reading; the bytes it managed to send, and
/// whether it stopped on an error (the client closed) or at the cap.
fn flood(prefix: &'static [u8], line: &'static [u8]) -> (SocketAddr, mpsc::Receiver<(usize, bool)>) {
    const CAP: usize = 256 << 20;
    let (done, result) = mpsc::channel();
    let addr = raw_server(move |_, stream| {
        let mut w = stream.try_clone().unwrap();
        let mut r = BufReader::new(stream);
        if !read_request(&mut r) {
            return;
        }
        let chunk: Vec<u8> = line.iter().copied().cycle().take(64 * 1024).collect();
        let mut sent = 0;
        let mut failed = w.write_all(prefix).is_err();
        while !failed && sent < CAP {
            match w.write(&chunk) {
                Ok(n) => sent += n,
                Err(_) => failed = true,
            }
        }
        let _ = done.send((sent, failed));
    });
    (addr, result)
}

fn assert_bounded(prefix: &'static [u8], line: &'static [u8]) {
    let (addr, result) = flood(prefix, line);
    let http = SurfHttp::new(1 << 20).unwrap();
    let started = Instant::now();
    assert_eq!(get(&http, addr, OK), Err(Failure::ResponseTooLarge));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let (sent, failed) = result.recv_timeout(OK).expect("the server stops sending");
    // The client stopped reading at its head limit and closed; what the
    // server got out is that plus the socket buffers, not the 256 MiB.
    assert!(
        failed,
        "the server sent all {sent} bytes: the client kept reading"
    );
    assert!(sent < 64 << 20, "{sent}");
}

#[test]
fn an_endless_header_line_is_a_bounded_error() {
    assert_bounded(b"HTTP/1.1 200 OK\r\nX: ", b"a");
}

#[test]
fn an_endless_head_of_short_lines_is_a_bounded_error() {
    assert_bounded(
        b"HTTP/1.1 200 OK\r\n",
        b"X-Filler: abcdefghijklmnopqrstuvwxyz\r\n",
    );
}

/// A pooled connection closed before any answer (what a server restart or
/// an idle close looks like) takes the other idle connections with it: the
/// re-send the core asks for goes on a fresh connection.
#[test]
fn a_connection_closed_before_an_answer_empties_the_pool() {
    let f = Fixture::new(TestServer::start().unwrap(), SurfHttp::new(1 << 20).unwrap(), 1);
    // Two idle connections: two requests at once.
    let (a, b) = async_std::task::block_on(futures_lite::future::zip(
        f.http.send(
            Outgoing {
                method: Method::Patch,
                url: &format!("{}/v1/joblib/workers/{}", f.server.url(), f.worker),
                json: None,
                form: false,
                timeout: OK,
            },
            f.server.token(),
        ),
        f.http.send(
            Outgoing {
                method: Method::Get,
                url: &format!("{}/v1/joblib/tasks/{}", f.server.url(), f.tasks[0]),
                json: None,
                form: false,
                timeout: OK,
            },
            f.server.token(),
        ),
    ));
    assert_eq!((a.unwrap().status, b.unwrap().status), (200, 200));
    f.server.fault_next(Fault::Drop, "/workers/", 1);
    assert_eq!(
        f.heartbeat(OK),
        Err(Failure::Transport(Transport::ConnectionClosed))
    );
    f.heartbeat_ok();
    f.get_task_ok(0);
    let j = f.server.journal();
    assert_eq!(j.len(), 5, "{j:#?}");
    assert_ne!(j[0].connection, j[1].connection, "two connections: {j:#?}");
    assert_eq!(j[2].fault, Some("drop"), "{j:#?}");
    assert!(
        [j[0].connection, j[1].connection].contains(&j[2].connection),
        "the dropped request went on a pooled connection: {j:#?}"
    );
    for e in &j[3..] {
        assert!(
            e.connection > j[1].connection.max(j[0].connection),
            "a fresh connection: {j:#?}"
        );
    }
    assert_eq!(j[3].connection, j[4].connection, "{j:#?}");
}
