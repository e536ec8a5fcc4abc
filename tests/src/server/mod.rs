//! The Rust test job server: zndraw-joblib's worker API over real HTTP/1.1
//! (hyper) on 127.0.0.1, with fault injection and a request journal.
//!
//! ```no_run
//! use outage_tests::server::{Fault, TestServer};
//! use std::time::Duration;
//!
//! let server = TestServer::start().unwrap();
//! println!("{} token {}", server.url(), server.token());
//! // Down from 1 s to 3 s from now: connections refused.
//! server.schedule(Fault::Refuse, Duration::from_secs(1), Duration::from_secs(3));
//! // Stopped (SIGSTOP-like) from 4 s to 5 s: requests held, then processed
//! // in arrival order and answered late.
//! server.schedule(Fault::Pause, Duration::from_secs(4), Duration::from_secs(5));
//! ```
//!
//! The [journal](TestServer::journal) records every request read: whether
//! the API processed it, the status it produced and whether that answer was
//! sent, on which connection.

pub mod api;
mod conn;
pub mod fault;
pub mod journal;

use std::collections::VecDeque;
use std::io;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body as _, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};

pub use fault::{Fault, FaultPlan};
pub use journal::Entry;

use conn::{ConnCtl, CtlStream, Cut};

/// How to start a [`TestServer`].
#[derive(Debug, Clone)]
pub struct Builder {
    token: String,
    port: u16,
    idle_timeout: Duration,
    superuser: bool,
    upstream: Option<SocketAddr>,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            token: format!("test-{}", uuid::Uuid::new_v4().simple()),
            port: 0,
            idle_timeout: Duration::from_secs(5),
            superuser: true,
            upstream: None,
        }
    }
}

impl Builder {
    /// The bearer token (default: a random one).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = token.into();
        self
    }

    /// The port on 127.0.0.1 (default 0: any free port).
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// Close keep-alive connections idle this long (default 5 s, as uvicorn).
    pub fn idle_timeout(mut self, d: Duration) -> Self {
        self.idle_timeout = d;
        self
    }

    /// Whether the token's user may register `@global` jobs (default true).
    pub fn superuser(mut self, yes: bool) -> Self {
        self.superuser = yes;
        self
    }

    /// A fault-injecting proxy in front of another job server (the real
    /// one: `http://127.0.0.1:PORT`) instead of the test server's own API:
    /// every request is forwarded, on a fresh connection, with its method,
    /// path, query, `Authorization`, `Content-Type` and body, and the
    /// upstream's answer (status, `Content-Type`, `Retry-After`,
    /// `Location`, body) is sent back — unless a fault says otherwise,
    /// exactly as in front of the test server's own API (a `Status` fault
    /// then answers without forwarding: the upstream never sees the
    /// request). An upstream that cannot be reached or does not answer
    /// within 30 s is a `502 Bad Gateway`, as a reverse proxy answers. The
    /// token is the upstream's: give it with [`Builder::token`].
    /// [`TestServer::state`] stays empty: ask the upstream.
    pub fn upstream(mut self, url: &str) -> io::Result<Self> {
        self.upstream = Some(crate::http::addr_of(url)?);
        Ok(self)
    }

    /// Bind and start serving on a background thread.
    pub fn start(self) -> io::Result<TestServer> {
        let listener = bind(SocketAddr::from(([127, 0, 0, 1], self.port)))?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            epoch: Instant::now(),
            state: Mutex::new(api::State::default()),
            settings: Mutex::new(api::Settings {
                token: self.token.clone(),
                revoked: false,
                superuser: self.superuser,
            }),
            faults: Mutex::new(Vec::new()),
            journal: Mutex::new(Vec::new()),
            requests: AtomicU64::new(0),
            held: Mutex::new(VecDeque::new()),
            idle_timeout: self.idle_timeout,
            kick: watch::channel(0).0,
            connections: AtomicU64::new(0),
            upstream: self.upstream,
            last_answers: Mutex::new(Vec::new()),
        });
        let (stop_tx, stop_rx) = watch::channel(false);
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("test-job-server".into())
            .spawn(move || {
                if thread_shared.upstream.is_some() {
                    // A proxy forwards with a blocking client (in
                    // `block_in_place`): worker threads keep the others
                    // served meanwhile.
                    let rt = tokio::runtime::Builder::new_multi_thread()
                        .worker_threads(4)
                        .enable_all()
                        .build()
                        .expect("tokio runtime for the test proxy");
                    rt.block_on(async move {
                        let _ = tokio::spawn(serve(thread_shared, listener, addr, stop_rx)).await;
                    });
                } else {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("tokio runtime for the test server");
                    rt.block_on(serve(thread_shared, listener, addr, stop_rx));
                }
            })?;
        Ok(TestServer {
            shared,
            addr,
            token: self.token,
            stop: stop_tx,
            thread: Some(thread),
        })
    }
}

fn bind(addr: SocketAddr) -> io::Result<StdListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

struct Shared {
    epoch: Instant,
    state: Mutex<api::State>,
    settings: Mutex<api::Settings>,
    faults: Mutex<Vec<FaultPlan>>,
    journal: Mutex<Vec<Entry>>,
    /// Requests read so far (the journal's sequence numbers).
    requests: AtomicU64,
    /// Requests held by a pause, in arrival order.
    held: Mutex<VecDeque<Held>>,
    idle_timeout: Duration,
    /// Bumped to drop every open connection (restart, refuse).
    kick: watch::Sender<u64>,
    connections: AtomicU64,
    /// Proxy mode: the job server requests are forwarded to.
    upstream: Option<SocketAddr>,
    /// The last answer to each method and path ([`Fault::Repeat`]).
    last_answers: Mutex<Vec<((String, String), api::Reply)>>,
}

impl Shared {
    fn refusing(&self, t: Instant) -> bool {
        self.faults
            .lock()
            .unwrap()
            .iter()
            .any(|p| p.fault == Fault::Refuse && p.active_at(t))
    }

    /// The fault for this request, spending one use of a counted plan.
    fn fault_for(&self, t: Instant, method: &str, path: &str) -> Option<Fault> {
        let mut faults = self.faults.lock().unwrap();
        let plan = faults
            .iter_mut()
            .find(|p| p.fault != Fault::Refuse && p.applies(t, method, path))?;
        if plan.skip > 0 {
            plan.skip -= 1;
            return None;
        }
        if let Some(n) = plan.times.as_mut() {
            *n -= 1;
        }
        Some(plan.fault.clone())
    }

    /// Whether a blackhole still holds this request (spends nothing).
    fn still_blackholed(&self, t: Instant, method: &str, path: &str) -> bool {
        self.faults
            .lock()
            .unwrap()
            .iter()
            .any(|p| p.fault == Fault::Blackhole && p.active_at(t) && p.applies_ignoring_count(method, path))
    }

    fn kick_all(&self) {
        self.kick.send_modify(|g| *g += 1);
    }
}

/// A running test job server. Stops when dropped.
pub struct TestServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    token: String,
    stop: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
}

impl TestServer {
    /// Start with the defaults: any free port, a random token, 5 s idle close.
    pub fn start() -> io::Result<TestServer> {
        Builder::default().start()
    }

    /// Configure before starting.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The bearer token requests must carry.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Time since the server started (the journal's clock).
    pub fn elapsed(&self) -> Duration {
        self.shared.epoch.elapsed()
    }

    /// Inject `fault` from now until [`TestServer::clear_faults`].
    pub fn set_fault(&self, fault: Fault) {
        self.add_plan(fault, Duration::ZERO, None, None, None);
    }

    /// Inject `fault` for requests whose path contains `path_contains`.
    pub fn set_fault_on(&self, fault: Fault, path_contains: &str) {
        self.add_plan(fault, Duration::ZERO, None, Some(path_contains.into()), None);
    }

    /// Inject `fault` for requests with this method and a path containing
    /// `path_contains`.
    pub fn set_fault_on_request(&self, fault: Fault, method: &str, path_contains: &str) {
        self.add_plan(
            fault,
            Duration::ZERO,
            None,
            Some(path_contains.into()),
            Some(method.into()),
        );
    }

    /// Inject `fault` into the next `times` requests whose path contains
    /// `path_contains` (any path if empty).
    pub fn fault_next(&self, fault: Fault, path_contains: &str, times: u32) {
        let now = Instant::now();
        self.shared.faults.lock().unwrap().push(FaultPlan {
            fault,
            from: now,
            until: None,
            path_contains: (!path_contains.is_empty()).then(|| path_contains.to_owned()),
            method: None,
            times: Some(times),
            skip: 0,
        });
    }

    /// Inject `fault` into `times` requests with this method and a path
    /// containing `path_contains`, after letting the next `skip` of them
    /// through.
    pub fn fault_after(&self, fault: Fault, method: &str, path_contains: &str, skip: u32, times: u32) {
        self.shared.faults.lock().unwrap().push(FaultPlan {
            fault,
            from: Instant::now(),
            until: None,
            path_contains: Some(path_contains.to_owned()),
            method: Some(method.to_owned()),
            times: Some(times),
            skip,
        });
    }

    /// Inject `fault` from `from` to `to`, both counted from now.
    pub fn schedule(&self, fault: Fault, from: Duration, to: Duration) {
        self.add_plan(fault, from, Some(to), None, None);
    }

    /// Add a fully specified plan.
    pub fn add_plan(
        &self,
        fault: Fault,
        from: Duration,
        to: Option<Duration>,
        path_contains: Option<String>,
        method: Option<String>,
    ) {
        let now = Instant::now();
        self.shared.faults.lock().unwrap().push(FaultPlan {
            fault,
            from: now + from,
            until: to.map(|t| now + t),
            path_contains,
            method,
            times: None,
            skip: 0,
        });
    }

    /// Remove every fault.
    pub fn clear_faults(&self) {
        self.shared.faults.lock().unwrap().clear();
    }

    /// Restart keeping all state: the listener closes, open connections
    /// drop, and it listens again on the same port after `downtime`.
    pub fn restart(&self, downtime: Duration) {
        self.schedule(Fault::Refuse, Duration::ZERO, downtime);
        self.shared.kick_all();
    }

    /// Restart losing all state (every worker, job and task is forgotten:
    /// workers get 404 from then on). Open connections drop: a claim cut
    /// off then may have been acted on, and a worker registers afresh for
    /// it (on the empty server: it never hears 404).
    pub fn forget_state(&self) {
        *self.shared.state.lock().unwrap() = api::State::default();
        self.shared.kick_all();
    }

    /// Forget every worker, job and task while staying up (what deleting
    /// or sweeping the workers does): every request in flight is answered,
    /// a worker's next one with 404.
    pub fn forget_workers(&self) {
        *self.shared.state.lock().unwrap() = api::State::default();
    }

    /// Refuse the token from now on (every request: 401).
    pub fn revoke_token(&self) {
        self.shared.settings.lock().unwrap().revoked = true;
    }

    /// Accept the token again.
    pub fn restore_token(&self) {
        self.shared.settings.lock().unwrap().revoked = false;
    }

    /// Every request so far.
    pub fn journal(&self) -> Vec<Entry> {
        self.shared.journal.lock().unwrap().clone()
    }

    /// Forget the journal.
    pub fn clear_journal(&self) {
        self.shared.journal.lock().unwrap().clear();
    }

    /// The server's memory, for inspection and direct changes.
    pub fn state(&self) -> MutexGuard<'_, api::State> {
        self.shared.state.lock().unwrap()
    }

    /// Submit a task to `job` (full name) in `room` without HTTP.
    pub fn submit(&self, room: &str, job: &str, payload: serde_json::Value) -> Option<uuid::Uuid> {
        self.state().submit(room, job, payload)
    }

    /// Submit a task whose payload is this JSON text; claims and task
    /// answers carry it byte for byte. `None` if the job is unknown or the
    /// text is not one JSON value.
    pub fn submit_raw(&self, room: &str, job: &str, payload: &str) -> Option<uuid::Uuid> {
        let raw = serde_json::value::RawValue::from_string(payload.to_owned()).ok()?;
        self.state().submit_raw(room, job, raw)
    }

    /// Stop the server and wait for its thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

async fn serve(
    shared: Arc<Shared>,
    listener: StdListener,
    addr: SocketAddr,
    mut stop: watch::Receiver<bool>,
) {
    let mut listener = TcpListener::from_std(listener).ok();
    loop {
        let refuse = shared.refusing(Instant::now());
        if refuse && listener.is_some() {
            listener = None;
            shared.kick_all();
        } else if !refuse && listener.is_none() {
            listener = bind(addr).and_then(TcpListener::from_std).ok();
        }
        tokio::select! {
            accepted = accept(listener.as_ref()) => {
                if let Ok((stream, _)) = accepted {
                    let generation = *shared.kick.borrow();
                    tokio::spawn(connection(shared.clone(), stream, generation));
                }
            }
            _ = tokio::time::sleep(Duration::from_millis(5)) => shared.release_held(),
            _ = stop.changed() => break,
        }
    }
    shared.kick_all();
}

async fn accept(listener: Option<&TcpListener>) -> io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

/// Serves one connection until it closes or every connection is kicked;
/// `generation` is the kick count when it was accepted.
async fn connection(shared: Arc<Shared>, stream: TcpStream, generation: u64) {
    // Subscribed only now: a kick between the accept and here would be
    // missed, and the connection would outlive a restart (a worker reusing
    // it saw no outage at all). Dropped as that kick would have dropped it.
    let mut kick = shared.kick.subscribe();
    if *kick.borrow_and_update() != generation || shared.refusing(Instant::now()) {
        return;
    }
    let _ = stream.set_nodelay(true);
    let id = shared.connections.fetch_add(1, Ordering::SeqCst);
    let ctl = Arc::new(ConnCtl::new());
    let io = TokioIo::new(CtlStream::new(stream, ctl.clone()));
    let svc_shared = shared.clone();
    let svc_ctl = ctl.clone();
    let service = service_fn(move |req| {
        let shared = svc_shared.clone();
        let ctl = svc_ctl.clone();
        async move { respond(shared, ctl, id, req).await }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .keep_alive(true)
        .serve_connection(io, service);
    tokio::pin!(conn);
    let mut closing = false;
    loop {
        tokio::select! {
            _ = conn.as_mut() => break,
            _ = kick.changed() => break,
            _ = tokio::time::sleep(Duration::from_millis(100)), if !closing => {
                // A paused (stopped) server closes nothing.
                if ctl.idle_for() >= shared.idle_timeout && !shared.paused(Instant::now()) {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

type Response = hyper::Response<Full<Bytes>>;

fn text(status: u16, body: &str) -> Response {
    hyper::Response::builder()
        .status(status)
        .header("content-type", "text/plain; charset=utf-8")
        .body(Full::new(Bytes::copy_from_slice(body.as_bytes())))
        .expect("valid response")
}

/// One request as the API sees it, owned: it may be processed later (a
/// pause) or away from its connection's service (a late answer).
#[derive(Debug, Clone)]
struct Call {
    method: String,
    path: String,
    query: Option<String>,
    host: Option<String>,
    authorization: Option<String>,
    content_type: Option<String>,
    body: Bytes,
}

/// A request held by a pause, and the way back to its connection.
struct Held {
    seq: u64,
    call: Call,
    answer: oneshot::Sender<Response>,
}

impl Shared {
    /// Change the journal entry of request `seq` (if the journal still has it).
    fn note(&self, seq: u64, f: impl FnOnce(&mut Entry)) {
        let mut journal = self.journal.lock().unwrap();
        if let Ok(i) = journal.binary_search_by_key(&seq, |e| e.seq) {
            f(&mut journal[i]);
        }
    }

    /// Run `call` through the API: its state changes commit now. The
    /// journal records it as processed, with the status and body produced.
    fn process(&self, seq: u64, call: &Call) -> Response {
        let reply = self.reply(call);
        let key = (call.method.clone(), call.path.clone());
        let mut last = self.last_answers.lock().unwrap();
        last.retain(|(k, _)| *k != key);
        last.push((key, reply.clone()));
        drop(last);
        self.respond_with(seq, reply)
    }

    /// [`Shared::process`], answered with the last answer to the same
    /// method and path, if any ([`Fault::Repeat`]).
    fn process_repeating(&self, seq: u64, call: &Call) -> Response {
        let key = (call.method.clone(), call.path.clone());
        let before = self
            .last_answers
            .lock()
            .unwrap()
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, r)| r.clone());
        let own = self.process(seq, call);
        match before {
            Some(reply) => self.respond_with(seq, reply),
            None => own,
        }
    }

    /// The API's answer to `call`: the test server's own, or the upstream's.
    fn reply(&self, call: &Call) -> api::Reply {
        if let Some(addr) = self.upstream {
            return forward(addr, call);
        }
        let settings = self.settings.lock().unwrap().clone();
        let request = api::Request {
            method: &call.method,
            path: &call.path,
            query: call.query.as_deref(),
            host: call.host.as_deref(),
            authorization: call.authorization.as_deref(),
            content_type: call.content_type.as_deref(),
            body: &call.body,
        };
        api::handle(&mut self.state.lock().unwrap(), &settings, &request)
    }

    /// Journal `reply` as request `seq`'s, and make it a response.
    fn respond_with(&self, seq: u64, reply: api::Reply) -> Response {
        let at = self.epoch.elapsed();
        self.note(seq, |e| {
            e.processed = true;
            e.processed_at = Some(at);
            e.reply = Some(reply.status);
            e.reply_body = Some(String::from_utf8_lossy(&reply.body).into_owned());
        });
        let mut builder = hyper::Response::builder().status(reply.status);
        if let Some(ct) = reply.content_type {
            builder = builder.header("content-type", ct);
        }
        for (name, value) in &reply.headers {
            builder = builder.header(*name, value.as_str());
        }
        builder
            .body(Full::new(Bytes::from(reply.body)))
            .expect("valid response")
    }

    /// Record the answer to request `seq` as sent (`Some(status)`) or not.
    fn note_answer(&self, seq: u64, status: Option<u16>) {
        let at = self.epoch.elapsed();
        self.note(seq, |e| {
            e.status = status;
            e.reply = e.reply.or(status);
            e.answered_at = status.map(|_| at);
        });
    }

    /// Is any pause plan active at `t`?
    fn paused(&self, t: Instant) -> bool {
        self.faults
            .lock()
            .unwrap()
            .iter()
            .any(|p| p.fault == Fault::Pause && p.active_at(t))
    }

    /// Once no pause is active: process every held request in arrival
    /// order and send each its answer (late), also when its client has gone.
    fn release_held(&self) {
        if self.paused(Instant::now()) {
            return;
        }
        let mut held = self.held.lock().unwrap();
        while let Some(h) = held.pop_front() {
            let response = self.process(h.seq, &h.call);
            let status = response.status().as_u16();
            // The service future is gone when the client went (hyper drops
            // it with the connection): nothing was sent.
            let sent = h.answer.send(response).is_ok();
            self.note_answer(h.seq, sent.then_some(status));
        }
    }
}

/// Send `response` for request `seq` and record the status as sent.
fn answered(shared: &Shared, seq: u64, response: Response) -> Result<Response, io::Error> {
    shared.note_answer(seq, Some(response.status().as_u16()));
    Ok(response)
}

async fn respond(
    shared: Arc<Shared>,
    ctl: Arc<ConnCtl>,
    connection: u64,
    req: hyper::Request<Incoming>,
) -> Result<Response, io::Error> {
    let _in_flight = ctl.request();
    let method = req.method().as_str().to_owned();
    let path_and_query = req.uri().path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().map(str::to_owned);
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let header = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
    let body = req
        .into_body()
        .collect()
        .await
        .map_err(io::Error::other)?
        .to_bytes();
    let call = Call {
        method: method.clone(),
        path: path.clone(),
        query,
        host: header("host"),
        authorization: header("authorization"),
        content_type: header("content-type"),
        body: body.clone(),
    };

    // Held requests go first: a request never overtakes one held by a
    // pause that has just ended.
    shared.release_held();
    // The request has arrived (its body is read).
    let arrival = Instant::now();
    let fault = shared.fault_for(arrival, &method, &path);
    let seq = {
        let mut journal = shared.journal.lock().unwrap();
        let seq = shared.requests.fetch_add(1, Ordering::SeqCst);
        journal.push(Entry {
            seq,
            at: arrival - shared.epoch,
            method: method.clone(),
            path: path_and_query,
            status: None,
            reply: None,
            processed: false,
            processed_at: None,
            answered_at: None,
            reply_body: None,
            body: String::from_utf8_lossy(&body).into_owned(),
            headers: headers.clone(),
            fault: fault.as_ref().map(Fault::name),
            connection,
        });
        seq
    };

    let response = match fault {
        // Refuse is handled at the listener; fault_for never returns it.
        None | Some(Fault::Refuse) => shared.process(seq, &call),
        Some(Fault::Repeat) => shared.process_repeating(seq, &call),
        Some(Fault::Pause) => return hold(&shared, seq, call).await,
        Some(Fault::Blackhole) => {
            // Never answer: hold the request until the fault ends (or the
            // server drops the connection), then close without a word.
            let mut kick = shared.kick.subscribe();
            while shared.still_blackholed(Instant::now(), &method, &path) {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                    _ = kick.changed() => break,
                }
            }
            return Err(io::Error::new(io::ErrorKind::TimedOut, "blackholed request"));
        }
        Some(Fault::Drop) => {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "dropped by fault injection",
            ));
        }
        Some(Fault::Slow(delay)) => {
            // Cancelled with the service future if the client goes.
            tokio::time::sleep(delay).await;
            shared.process(seq, &call)
        }
        Some(Fault::Late(delay)) => {
            // Answered by a task of its own, so that the journal learns
            // whether the answer found its client even when hyper drops
            // this future because the client went.
            // Processed here, before any await: nothing can cancel it.
            let response = shared.process(seq, &call);
            let status = response.status().as_u16();
            let (tx, rx) = oneshot::channel();
            let late = shared.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let sent = tx.send(response).is_ok();
                late.note_answer(seq, sent.then_some(status));
            });
            return rx.await.map_err(|_| io::Error::other("late answer abandoned"));
        }
        Some(Fault::Status { status, retry_after }) => {
            let reason = hyper::StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("Error");
            let mut r = text(status, reason);
            *r.status_mut() =
                hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
            if let Some(s) = retry_after {
                r.headers_mut().insert("retry-after", s.into());
            }
            r
        }
        Some(Fault::MalformedJson) => {
            let mut r = text(200, r#"{"task": {"id": "#);
            r.headers_mut()
                .insert("content-type", "application/json".parse().expect("valid"));
            r
        }
        Some(Fault::OversizedBody(size)) => {
            let body = format!(r#"{{"task":null,"padding":"{}"}}"#, "x".repeat(size));
            let mut r = text(200, &body);
            r.headers_mut()
                .insert("content-type", "application/json".parse().expect("valid"));
            r
        }
        Some(Fault::TruncatedBody) => {
            let r = shared.process(seq, &call);
            let len = r.body().size_hint().exact().unwrap_or(0) as usize;
            ctl.cut_next(Cut::after_body_bytes(len / 2, false));
            return Ok(r);
        }
        Some(Fault::Reset) => {
            let r = shared.process(seq, &call);
            let len = r.body().size_hint().exact().unwrap_or(0) as usize;
            ctl.cut_next(Cut::after_body_bytes(len / 2, true));
            return Ok(r);
        }
    };
    answered(&shared, seq, response)
}

/// Forward `call` to the job server at `addr` (proxy mode) and read its
/// answer; 502 when it cannot be reached or does not answer in 30 s. The
/// blocking client runs in `block_in_place` (a multi-thread runtime).
fn forward(addr: SocketAddr, call: &Call) -> api::Reply {
    let path = match &call.query {
        Some(q) => format!("{}?{q}", call.path),
        None => call.path.clone(),
    };
    let mut headers: Vec<(&str, &str)> = Vec::new();
    if let Some(a) = &call.authorization {
        headers.push(("Authorization", a));
    }
    if let Some(c) = &call.content_type {
        headers.push(("Content-Type", c));
    }
    let body = (!call.body.is_empty() || matches!(call.method.as_str(), "POST" | "PUT" | "PATCH"))
        .then_some(&call.body[..]);
    let sent = tokio::task::block_in_place(|| {
        let mut conn = crate::http::Connection::open(addr)?;
        conn.set_read_timeout(Duration::from_secs(30))?;
        let mut all = headers.clone();
        all.push(("Connection", "close"));
        conn.send(&call.method, &path, &all, body)
    });
    match sent {
        Ok(r) => {
            let content_type = r.header("content-type").map(|c| {
                if c.starts_with("application/problem+json") {
                    "application/problem+json"
                } else if c.starts_with("application/json") {
                    "application/json"
                } else {
                    "text/plain; charset=utf-8"
                }
            });
            let headers = ["retry-after", "location"]
                .into_iter()
                .filter_map(|h| Some((h, r.header(h)?.to_owned())))
                .collect();
            api::Reply {
                status: r.status,
                content_type,
                headers,
                body: r.body,
            }
        }
        Err(e) => api::Reply {
            status: 502,
            content_type: Some("text/plain; charset=utf-8"),
            headers: Vec::new(),
            body: format!("Bad Gateway: {e}").into_bytes(),
        },
    }
}

/// Hold a request until no pause is active; it is then processed in
/// arrival order (by [`Shared::release_held`]) and answered.
async fn hold(shared: &Arc<Shared>, seq: u64, call: Call) -> Result<Response, io::Error> {
    let (tx, rx) = oneshot::channel();
    shared.held.lock().unwrap().push_back(Held {
        seq,
        call,
        answer: tx,
    });
    // The server's tick releases held requests within a few ms of the
    // pause's end; release now if it has already ended.
    shared.release_held();
    rx.await.map_err(|_| io::Error::other("held request dropped"))
}
