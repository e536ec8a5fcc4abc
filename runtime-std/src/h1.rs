//! Our HTTP/1.1 client under surf: [`H1Client`], an
//! [`http_client::HttpClient`] whose connection pool takes back only
//! connections whose last exchange finished.
//!
//! # Why not surf's own async-h1 backend
//!
//! surf 2.3's `h1-client` backend (http-client 6.5 over async-h1 2.3) is
//! unsound for a worker that gives up on slow requests:
//!
//! - **A late answer is read as the answer to the next request.** A
//!   checked-out connection is a deadpool object that goes back to the pool
//!   when it is dropped — also when the request future is dropped half-way
//!   through an exchange, which is what our timeout does. Before handing a
//!   pooled connection out again, the backend's `recycle` check does one
//!   non-blocking `read` of up to 4 bytes and rejects the connection only on
//!   EOF or an error. An answer that is still on its way passes the check;
//!   bytes that are already there are swallowed and the connection accepted.
//!   Either way the rest of the abandoned request's answer is then read as
//!   the answer to the next request sent on that connection.
//! - **The response head is bounded per line, not in total.** async-h1
//!   reads the head with `read_until(b'\n')` and compares the buffer with
//!   its 8 KiB limit only after each complete line: a header line that never
//!   ends grows the buffer without bound.
//!
//! # This client
//!
//! - `http://` and `https://`, HTTP/1.1 over TCP with `TCP_NODELAY`
//!   (async-io's `Async<TcpStream>`: the reactor async-std runs on), and
//!   for `https://` TLS over it ([`crate::tls`]: rustls), in the same pool
//!   under the same rules (an https and an http connection to one host and
//!   port are never mixed up).
//! - The answer is waited for (readiness from the reactor) before it is
//!   read: no read that finds nothing yet (over TLS, rustls reads as it
//!   needs: it may hold decrypted bytes already).
//! - The request (head and body) goes out in one `write_all`. A failure to
//!   connect or to write means the server has no complete request
//!   ([`H1Error::Refused`], [`H1Error::Dns`], [`H1Error::Connect`],
//!   [`H1Error::Send`]).
//! - The bytes are the core's ([`outage_core::wire`], as on a device): its
//!   [`RequestHead`] writes the request, its [`Reader`] reads the answer.
//!   The response head is read into a fixed [`HEAD_LIMIT`] buffer, interim
//!   `1xx` heads included, whether or not its lines end (each byte is
//!   scanned once). The body is framed by `Content-Length`,
//!   `Transfer-Encoding: chunked` or the end of the connection, and read
//!   whole, up to the client's body limit, before the response is handed
//!   to surf.
//! - **The pool.** A connection is owned by the request future while it is
//!   in use — never by the pool — so dropping the future at any `.await`
//!   (timeout, halt, cancellation) closes it. It goes back to the pool only
//!   after a complete exchange: the whole head and body read, HTTP/1.1,
//!   no `Connection: close`, a framed body and no byte beyond it. Any error
//!   discards it. Idle connections older than the idle limit
//!   ([`DEFAULT_IDLE_LIMIT`], below uvicorn's 5 s) are closed, not reused;
//!   a younger one is checked without waiting before reuse, and discarded if
//!   it is readable at all (EOF, an error, or bytes nobody asked for): a
//!   `recvfrom` per request, kept even for a connection used a moment ago,
//!   because a claim sent on a connection the server had already closed
//!   fails before any byte of an answer, and for a `POST` that is ambiguous
//!   (the core then registers afresh); caught before sending, it is a fresh
//!   connection and no ambiguity. At
//!   most [`MAX_IDLE_PER_HOST`] idle connections are kept per host and port.
//!   When a connection fails before any byte of an answer (closed, reset,
//!   or the write failed) — a server restart or an idle close — the other
//!   idle connections to that host are closed too, so a re-send goes on a
//!   fresh connection.
//!
//! Failures are [`H1Error`]s inside the `http_types::Error` surf passes on;
//! [`crate::http::SurfHttp`] downcasts them and takes [`H1Error::failure`],
//! so nothing from this client is classified from message text.

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use std::io::Read as _;

use async_io::Async;
use async_std::net::ToSocketAddrs;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use http_client::http_types::headers::{HeaderName, HeaderValue};
use http_client::http_types::url::{Host, Position};
use http_client::http_types::{self, Body, Method, StatusCode, Version};
use http_client::{Config, HttpClient, Request, Response};
use outage_core::wire::{self, Limits, Read as Got, Reader, RequestHead, Target};
use outage_core::{Failure, Transport};

use crate::tls::MaybeTls;

/// The most bytes of response head read, interim `1xx` heads included.
pub const HEAD_LIMIT: usize = 16 * 1024;
/// Idle connections older than this are closed, not reused: below the 5 s
/// after which uvicorn closes idle keep-alive connections.
pub const DEFAULT_IDLE_LIMIT: Duration = Duration::from_secs(4);
/// Idle connections kept per host and port.
pub const MAX_IDLE_PER_HOST: usize = 4;

/// How far an exchange got, for a caller whose timeout may cut it short:
/// put one in the request's extensions and read it after the timeout.
/// This client marks [`Progress::CONNECTING`] as it starts (name lookup,
/// pool, connect) and [`Progress::SENDING`] just before the request's first
/// byte goes out (after a TLS handshake); a client that does not mark it
/// (another `HttpClient`) leaves [`Progress::UNKNOWN`], which a caller must
/// take as "maybe sent".
#[derive(Clone, Debug, Default)]
pub struct Progress(Arc<AtomicU8>);

impl Progress {
    /// Not marked by the client.
    pub const UNKNOWN: u8 = 0;
    /// Looking the host up, taking a connection or connecting: nothing sent.
    pub const CONNECTING: u8 = 1;
    /// Writing the request, or waiting for its answer.
    pub const SENDING: u8 = 2;

    /// Where the exchange is.
    pub fn get(&self) -> u8 {
        self.0.load(Ordering::Relaxed)
    }

    fn set(&self, stage: u8) {
        self.0.store(stage, Ordering::Relaxed);
    }
}

/// Why an exchange failed. `Copy`; [`H1Error::failure`] is the core's view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum H1Error {
    /// The host name did not resolve.
    Dns,
    /// Connecting was refused: nothing listens.
    Refused,
    /// Connecting failed otherwise (unreachable network, …). Nothing was sent.
    Connect(io::ErrorKind),
    /// Writing the request failed: the server cannot have all of it.
    Send(io::ErrorKind),
    /// The connection closed before any byte of a response.
    Closed,
    /// The connection was reset before any byte of a response.
    Reset,
    /// Reading failed otherwise before any byte of a response.
    Read(io::ErrorKind),
    /// The response was cut short: closed, reset or failed after some of
    /// its bytes arrived.
    Truncated,
    /// The response head (or the chunked body's trailer section) exceeded
    /// [`HEAD_LIMIT`], or had more than 64 header lines.
    HeadTooLarge,
    /// The body exceeded the client's limit.
    BodyTooLarge,
    /// The response is not HTTP/1.x this client can read.
    Malformed,
    /// A request this client will not write: a scheme other than `http`
    /// and `https`, no host, or a header that is not a token name with a
    /// value free of CR, LF and NUL.
    InvalidRequest,
    /// The TLS handshake failed (nothing was sent): why, in words.
    Tls(&'static str),
}

impl H1Error {
    /// The core's [`Failure`] for this error.
    ///
    /// - Connecting or writing failed — the server has no complete request:
    ///   [`Transport::Dns`], [`Transport::ConnectionRefused`], a connect
    ///   that timed out ([`Failure::connect_failed`]), or
    ///   [`Transport::SendFailed`] for any other failure to connect or write.
    /// - Closed or reset before any response byte: [`Transport::ConnectionClosed`],
    ///   [`Transport::ConnectionReset`] (a stale keep-alive connection looks so).
    /// - Anything after a response byte: [`Transport::Truncated`].
    /// - Head or body over its limit: [`Failure::ResponseTooLarge`];
    ///   unparsable: [`Failure::MalformedResponse`].
    /// - Other read errors before any byte: [`Transport::Timeout`] for
    ///   `TimedOut`, else [`Transport::Network`], as is a request we refuse
    ///   to write (a configuration error, not an outage).
    pub const fn failure(self) -> Failure {
        let t = match self {
            H1Error::Dns => Transport::Dns,
            H1Error::Refused => Transport::ConnectionRefused,
            H1Error::Connect(kind) => {
                return Failure::connect_failed(false, matches!(kind, io::ErrorKind::TimedOut));
            }
            H1Error::Send(_) => Transport::SendFailed,
            H1Error::Closed => Transport::ConnectionClosed,
            H1Error::Reset => Transport::ConnectionReset,
            H1Error::Read(io::ErrorKind::TimedOut) => Transport::Timeout,
            H1Error::Read(_) | H1Error::InvalidRequest => Transport::Network,
            H1Error::Truncated => Transport::Truncated,
            H1Error::HeadTooLarge | H1Error::BodyTooLarge => return Failure::ResponseTooLarge,
            H1Error::Malformed => return Failure::MalformedResponse,
            // Before any byte of the request: it never arrived.
            H1Error::Tls(_) => Transport::Tls,
        };
        Failure::Transport(t)
    }
}

impl fmt::Display for H1Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            H1Error::Dns => f.write_str("host name did not resolve"),
            H1Error::Refused => f.write_str("connection refused"),
            H1Error::Connect(kind) => write!(f, "could not connect: {kind}"),
            H1Error::Send(kind) => write!(f, "could not write the request: {kind}"),
            H1Error::Closed => f.write_str("connection closed before any byte of a response"),
            H1Error::Reset => f.write_str("connection reset before any byte of a response"),
            H1Error::Read(kind) => write!(f, "reading the response failed: {kind}"),
            H1Error::Truncated => f.write_str("response cut short"),
            H1Error::HeadTooLarge => write!(f, "response head over {HEAD_LIMIT} bytes"),
            H1Error::BodyTooLarge => f.write_str("response body over the limit"),
            H1Error::Malformed => f.write_str("malformed response"),
            H1Error::InvalidRequest => f.write_str("request not sendable by this client"),
            H1Error::Tls(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for H1Error {}

/// The status code as received, in every response's extensions:
/// `http_types::StatusCode` knows only registered codes, so a response with
/// another one (say 299 or 599) carries the nearest of its class there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawStatus(pub u16);

/// The client: `http://` over pooled TCP connections (see the module docs).
pub struct H1Client {
    pool: Pool,
    max_body: usize,
    config: Config,
}

impl fmt::Debug for H1Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("H1Client")
            .field("max_body", &self.max_body)
            .field("idle_limit", &self.pool.idle_limit)
            .field("max_idle_per_host", &self.pool.max_idle)
            .finish_non_exhaustive()
    }
}

impl H1Client {
    /// A client accepting response bodies up to `max_body` bytes, with the
    /// default idle limit.
    pub fn new(max_body: usize) -> H1Client {
        let config = Config::new()
            .set_http_keep_alive(true)
            .set_tcp_no_delay(true)
            .set_timeout(None)
            .set_max_connections_per_host(MAX_IDLE_PER_HOST);
        H1Client {
            pool: Pool {
                hosts: Mutex::new(Vec::new()),
                idle_limit: DEFAULT_IDLE_LIMIT,
                max_idle: MAX_IDLE_PER_HOST,
            },
            max_body,
            config,
        }
    }

    /// Close idle connections older than `limit` instead of reusing them.
    pub fn idle_limit(mut self, limit: Duration) -> H1Client {
        self.pool.idle_limit = limit;
        self
    }

    /// Keep at most `n` idle connections per host and port (0: no reuse).
    pub fn max_idle_per_host(mut self, n: usize) -> H1Client {
        self.pool.max_idle = n;
        self
    }

    async fn send_http(&self, mut req: Request) -> Result<Response, H1Error> {
        let progress = req.ext().get::<Progress>().cloned();
        if let Some(p) = &progress {
            p.set(Progress::CONNECTING);
        }
        let body = req
            .take_body()
            .into_bytes()
            .await
            .map_err(|_| H1Error::InvalidRequest)?;
        let url = req.url();
        let (Some(host), Some(host_str), Some(port)) =
            (url.host(), url.host_str(), url.port_or_known_default())
        else {
            return Err(H1Error::InvalidRequest);
        };
        let authority = match url.port() {
            Some(port) => format!("{host_str}:{port}"),
            None => host_str.to_owned(),
        };
        let headers: Vec<(&[u8], &[u8])> = req
            .iter()
            .flat_map(|(name, values)| {
                values
                    .iter()
                    .map(move |v| (name.as_str().as_bytes(), v.as_str().as_bytes()))
            })
            .collect();
        let method = req.method();
        let head = RequestHead {
            method: method.as_ref(),
            target: Target::Raw(url[Position::BeforePath..Position::AfterQuery].as_bytes()),
            host: authority.as_bytes(),
            bearer: None,
            headers: &headers,
            body_len: body.len(),
        };
        if !head.is_valid() {
            return Err(H1Error::InvalidRequest);
        }
        let head_request = method == Method::Head;
        let tls = url.scheme() == "https";
        let mut conn = match self.pool.checkout(tls, host_str, port) {
            Some(conn) => conn,
            None => {
                let tcp = connect(host, port).await?;
                let stream = if tls {
                    crate::tls::connect(host_str, tcp).await.map_err(H1Error::Tls)?
                } else {
                    MaybeTls::Plain(tcp)
                };
                Conn::new(stream)
            }
        };
        encode_request(&mut conn.wbuf, &head, &body);
        if let Some(p) = &progress {
            p.set(Progress::SENDING);
        }
        let exchanged = match conn.write_request().await {
            Ok(()) => read_response(&mut conn, head_request, self.max_body).await,
            Err(e) => Err(e),
        };
        match exchanged {
            Ok((response, reusable)) => {
                if reusable {
                    self.pool.checkin(tls, host_str, port, conn);
                }
                Ok(response)
            }
            Err(e @ (H1Error::Send(_) | H1Error::Closed | H1Error::Reset)) => {
                // What a server restart or an idle close looks like: the
                // other idle connections there are as old, so the re-send
                // the core may ask for goes on a fresh one.
                self.pool.forget(tls, host_str, port);
                Err(e)
            }
            Err(e) => Err(e),
        }
    }
}

#[http_client::async_trait]
impl HttpClient for H1Client {
    async fn send(&self, req: Request) -> Result<Response, http_types::Error> {
        match req.url().scheme() {
            "http" | "https" => {}
            _ => return Err(into_error(H1Error::InvalidRequest)),
        }
        self.send_http(req).await.map_err(into_error)
    }

    /// Refused: this client is configured by its constructor.
    fn set_config(&mut self, _config: Config) -> http_types::Result<()> {
        Err(http_types::Error::from_str(
            StatusCode::InternalServerError,
            "H1Client is configured when it is built",
        ))
    }

    fn config(&self) -> &Config {
        &self.config
    }
}

fn into_error(e: H1Error) -> http_types::Error {
    http_types::Error::new(StatusCode::InternalServerError, e)
}

// ---------------------------------------------------------------- the pool

/// Idle connections per host and port. A connection in use is owned by its
/// request future, never by the pool.
struct Pool {
    hosts: Mutex<Vec<HostIdle>>,
    idle_limit: Duration,
    max_idle: usize,
}

struct HostIdle {
    tls: bool,
    host: String,
    port: u16,
    /// Oldest first.
    idle: Vec<Idle>,
}

struct Idle {
    conn: Conn,
    since: Instant,
}

impl HostIdle {
    fn is(&self, tls: bool, host: &str, port: u16) -> bool {
        self.tls == tls && self.port == port && self.host == host
    }
}

impl Pool {
    /// An idle connection to `host:port` that is still quiet, if any.
    fn checkout(&self, tls: bool, host: &str, port: u16) -> Option<Conn> {
        loop {
            let conn = self.take(tls, host, port)?;
            if conn.quiet() {
                return Some(conn);
            }
            // Readable while idle: closed by the server, failed, or bytes no
            // request asked for. Dropped here, closed.
        }
    }

    /// The most recently used idle connection under the idle limit; older
    /// ones are dropped (closed).
    fn take(&self, tls: bool, host: &str, port: u16) -> Option<Conn> {
        let mut hosts = self.hosts.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = hosts.iter_mut().find(|h| h.is(tls, host, port))?;
        let now = Instant::now();
        entry
            .idle
            .retain(|i| now.saturating_duration_since(i.since) < self.idle_limit);
        entry.idle.pop().map(|i| i.conn)
    }

    /// Close every idle connection to `host:port`.
    fn forget(&self, tls: bool, host: &str, port: u16) {
        let mut hosts = self.hosts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = hosts.iter_mut().find(|h| h.is(tls, host, port)) {
            entry.idle.clear();
        }
    }

    /// Keep `conn`, which has just finished a complete exchange.
    fn checkin(&self, tls: bool, host: &str, port: u16, conn: Conn) {
        if self.max_idle == 0 {
            return;
        }
        let mut hosts = self.hosts.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let at = match hosts.iter().position(|h| h.is(tls, host, port)) {
            Some(at) => at,
            None => {
                hosts.push(HostIdle {
                    tls,
                    host: host.to_owned(),
                    port,
                    idle: Vec::with_capacity(self.max_idle),
                });
                hosts.len() - 1
            }
        };
        let idle = &mut hosts[at].idle;
        idle.retain(|i| now.saturating_duration_since(i.since) < self.idle_limit);
        if idle.len() >= self.max_idle {
            idle.remove(0);
        }
        idle.push(Idle { conn, since: now });
    }
}

// ------------------------------------------------------------ a connection

/// A TCP stream on async-std's reactor (async-io's, which async-std runs
/// on): it can wait for readiness before reading, so an answer that is not
/// there yet costs no failed read.
type TcpStream = Async<std::net::TcpStream>;

/// One connection (TCP, or TLS over it) with its buffers, reused with it.
struct Conn {
    stream: MaybeTls<TcpStream>,
    /// Response bytes read and not yet used: `rbuf[..rlen]`. Empty between
    /// exchanges (a connection with bytes left over is not reused).
    rbuf: Box<[u8]>,
    rlen: usize,
    /// The request being written.
    wbuf: Vec<u8>,
}

impl Conn {
    fn new(stream: MaybeTls<TcpStream>) -> Conn {
        Conn {
            stream,
            rbuf: vec![0; HEAD_LIMIT].into_boxed_slice(),
            rlen: 0,
            wbuf: Vec::new(),
        }
    }

    /// Nothing to read right now (checked without waiting, and without
    /// registering interest in the reactor): an idle connection that is
    /// readable is closed, failed or out of step.
    fn quiet(&self) -> bool {
        let mut probe = [0u8; 1];
        loop {
            match self.stream.tcp().get_ref().peek(&mut probe) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return e.kind() == io::ErrorKind::WouldBlock,
                Ok(_) => return false,
            }
        }
    }

    async fn write_request(&mut self) -> Result<(), H1Error> {
        let mut written = self.stream.write_all(&self.wbuf).await;
        if written.is_ok() {
            // TLS holds the last record until flushed.
            written = self.stream.flush().await;
        }
        // Keep the buffer for the next request, not a large one's capacity.
        if self.wbuf.capacity() > 64 * 1024 {
            self.wbuf = Vec::new();
        }
        written.map_err(|e| H1Error::Send(e.kind()))
    }

    /// Read more into `rbuf[rlen..cap]`; the number of bytes read. With
    /// `wait_first`, wait for readiness before the first read (the answer to
    /// a request just sent is not there yet: no read that finds nothing).
    async fn fill(&mut self, cap: usize, wait_first: bool) -> io::Result<usize> {
        let buf = &mut self.rbuf[self.rlen..cap];
        let n = match &mut self.stream {
            MaybeTls::Plain(tcp) => {
                if wait_first {
                    tcp.readable().await?;
                }
                tcp.read_with(|s| (&*s).read(buf)).await?
            }
            // rustls may hold decrypted bytes already: no readiness wait.
            tls => tls.read(buf).await?,
        };
        self.rlen += n;
        Ok(n)
    }

    /// Drop the first `n` buffered bytes.
    fn consume(&mut self, n: usize) {
        self.rbuf.copy_within(n..self.rlen, 0);
        self.rlen -= n;
    }
}

async fn connect(host: Host<&str>, port: u16) -> Result<TcpStream, H1Error> {
    let addrs: Vec<std::net::SocketAddr> = match host {
        Host::Domain(name) => (name, port)
            .to_socket_addrs()
            .await
            .map_err(|_| H1Error::Dns)?
            .collect(),
        Host::Ipv4(ip) => vec![(ip, port).into()],
        Host::Ipv6(ip) => vec![(ip, port).into()],
    };
    let mut last = H1Error::Dns;
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(stream) => {
                stream
                    .get_ref()
                    .set_nodelay(true)
                    .map_err(|e| H1Error::Connect(e.kind()))?;
                return Ok(stream);
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => last = H1Error::Refused,
            Err(e) => last = H1Error::Connect(e.kind()),
        }
    }
    Err(last)
}

// ---------------------------------------------------------------- requests

/// The request's bytes into `out` (cleared first): the core's head, then
/// the body.
fn encode_request(out: &mut Vec<u8>, head: &RequestHead<'_>, body: &[u8]) {
    out.clear();
    out.reserve(256 + body.len());
    let _ = head.write(&mut |piece: &[u8]| {
        out.extend_from_slice(piece);
        Ok(())
    });
    out.extend_from_slice(body);
}

// ------------------------------------------------------------ the response

impl From<wire::Error> for H1Error {
    fn from(e: wire::Error) -> H1Error {
        match e {
            wire::Error::Closed => H1Error::Closed,
            wire::Error::Truncated => H1Error::Truncated,
            wire::Error::Malformed => H1Error::Malformed,
            wire::Error::HeadTooLarge => H1Error::HeadTooLarge,
            wire::Error::BodyTooLarge => H1Error::BodyTooLarge,
        }
    }
}

/// The registered status, or the first of `code`'s class ([`RawStatus`]
/// keeps the real one).
fn status_code(code: u16) -> StatusCode {
    StatusCode::try_from(code).unwrap_or(match code / 100 {
        2 => StatusCode::Ok,
        3 => StatusCode::MultipleChoice,
        4 => StatusCode::BadRequest,
        _ => StatusCode::InternalServerError,
    })
}

/// surf's response for a head the core's reader accepted (`bytes`): its
/// status, version and headers (those http-types cannot hold — non-ASCII
/// values — left out, and the framing ones, which this client used up).
fn response_for(head: &wire::Head, bytes: &[u8]) -> Response {
    let mut response = Response::new(status_code(head.status));
    for (name, value) in wire::header_lines(bytes) {
        if name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"transfer-encoding") {
            continue;
        }
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.to_vec()),
            HeaderValue::from_bytes(value.to_vec()),
        ) {
            response.append_header(n, v);
        }
    }
    response.set_version(Some(if head.http11 {
        Version::Http1_1
    } else {
        Version::Http1_0
    }));
    response.ext_mut().insert(RawStatus(head.status));
    response
}

/// Read one response through the core's [`Reader`]: interim heads
/// skipped, the head within [`HEAD_LIMIT`], the whole body within
/// `max_body`. The flag: may the connection be reused (the core's
/// [`wire::Head::reusable`], and no byte beyond the response).
async fn read_response(
    conn: &mut Conn,
    head_request: bool,
    max_body: usize,
) -> Result<(Response, bool), H1Error> {
    let mut reader = Reader::new(Limits {
        head: HEAD_LIMIT,
        body: max_body,
    });
    if head_request {
        reader = reader.for_head_request();
    }
    let mut head = None;
    let mut body = Vec::new();
    loop {
        let (used, got) = reader.feed(&conn.rbuf[..conn.rlen])?;
        match got {
            Got::Head(h) => {
                head = Some((response_for(&h, &conn.rbuf[used - h.len..used]), h.reusable));
                if let wire::Framing::Length(n) = h.framing {
                    // Within `max_body`: the reader checked.
                    body.reserve_exact(n);
                }
                conn.consume(used);
                continue;
            }
            Got::Body(run) => {
                body.extend_from_slice(&conn.rbuf[run]);
                conn.consume(used);
                continue;
            }
            Got::Done => {
                conn.consume(used);
                break;
            }
            Got::More => conn.consume(used),
        }
        if conn.rlen == conn.rbuf.len() {
            return Err(H1Error::HeadTooLarge);
        }
        // The first read of an answer waits for it; later ones try first.
        let first = !reader.started() && conn.rlen == 0;
        match conn.fill(conn.rbuf.len(), first).await {
            Ok(0) => {
                reader.finish()?;
                break;
            }
            Ok(_) => {}
            Err(e) if first => return Err(first_read_error(&e)),
            // After some bytes, cut short — unless it timed out (the
            // core's rule, `Reader::read_failed`, as on a device).
            Err(e) if e.kind() == io::ErrorKind::TimedOut => return Err(H1Error::Read(e.kind())),
            Err(_) => return Err(H1Error::Truncated),
        }
    }
    let (mut response, reusable) = head.ok_or(H1Error::Malformed)?;
    response.set_body(Body::from_bytes(body));
    // Bytes beyond the response (in the buffer, or held by TLS): out of
    // step, not reusable.
    let reusable = reusable && conn.rlen == 0 && !conn.stream.holds_plaintext();
    Ok((response, reusable))
}

fn first_read_error(e: &io::Error) -> H1Error {
    match e.kind() {
        io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted => H1Error::Reset,
        io::ErrorKind::UnexpectedEof | io::ErrorKind::BrokenPipe | io::ErrorKind::NotConnected => {
            H1Error::Closed
        }
        kind => H1Error::Read(kind),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    /// surf's response for a whole head, as `read_response` makes it.
    fn response(bytes: &[u8]) -> Response {
        let mut r = Reader::new(Limits {
            head: HEAD_LIMIT,
            body: 1 << 20,
        });
        match r.feed(bytes).unwrap() {
            (used, Got::Head(h)) => response_for(&h, &bytes[used - h.len..used]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn responses_keep_their_status_number_and_headers_surf_can_hold() {
        let h = response(b"HTTP/1.1 299 Odd\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(h.ext().get::<RawStatus>(), Some(&RawStatus(299)));
        assert_eq!(h.status(), StatusCode::Ok);
        let h = response(b"HTTP/1.1 599 Odd\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(h.ext().get::<RawStatus>(), Some(&RawStatus(599)));
        assert_eq!(h.status(), StatusCode::InternalServerError);
        let h = response(
            b"HTTP/1.1 200 OK\r\nX-Name: caf\xc3\xa9\r\nRetry-After: 3\r\nContent-Length: 0\r\n\r\n",
        );
        assert!(h.header("x-name").is_none());
        assert!(
            h.header("content-length").is_none(),
            "the framing is this client's"
        );
        assert_eq!(h.header("retry-after").unwrap().as_str(), "3");
        assert_eq!(h.version(), Some(Version::Http1_1));
    }

    #[test]
    fn requests_are_one_buffer_with_host_and_length() {
        let mut out = b"stale".to_vec();
        let head = RequestHead {
            method: "PATCH",
            target: Target::Raw(b"/v1/x?a=1"),
            host: b"example.org:8123",
            bearer: None,
            headers: &[(b"authorization", b"Bearer t")],
            body_len: 2,
        };
        encode_request(&mut out, &head, b"{}");
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "PATCH /v1/x?a=1 HTTP/1.1\r\nHost: example.org:8123\r\nauthorization: Bearer t\r\nContent-Length: 2\r\n\r\n{}"
        );
    }

    #[test]
    fn errors_map_to_the_cores_failures() {
        use Transport as T;
        let cases = [
            (H1Error::Dns, Failure::Transport(T::Dns)),
            (H1Error::Refused, Failure::Transport(T::ConnectionRefused)),
            (
                H1Error::Connect(io::ErrorKind::HostUnreachable),
                Failure::Transport(T::SendFailed),
            ),
            (
                H1Error::Send(io::ErrorKind::BrokenPipe),
                Failure::Transport(T::SendFailed),
            ),
            (H1Error::Closed, Failure::Transport(T::ConnectionClosed)),
            (H1Error::Reset, Failure::Transport(T::ConnectionReset)),
            (
                H1Error::Read(io::ErrorKind::TimedOut),
                Failure::Transport(T::Timeout),
            ),
            (
                H1Error::Read(io::ErrorKind::Other),
                Failure::Transport(T::Network),
            ),
            (H1Error::Truncated, Failure::Transport(T::Truncated)),
            (H1Error::HeadTooLarge, Failure::ResponseTooLarge),
            (H1Error::BodyTooLarge, Failure::ResponseTooLarge),
            (H1Error::Malformed, Failure::MalformedResponse),
            (H1Error::InvalidRequest, Failure::Transport(T::Network)),
        ];
        for (e, f) in cases {
            assert_eq!(e.failure(), f, "{e}");
        }
        for e in [
            H1Error::Dns,
            H1Error::Refused,
            H1Error::Connect(io::ErrorKind::Other),
            H1Error::Send(io::ErrorKind::Other),
        ] {
            assert!(e.failure().never_sent(), "{e}");
        }
        // Carried through http_types::Error and found again by type.
        let carried = into_error(H1Error::Truncated);
        assert_eq!(carried.downcast_ref::<H1Error>(), Some(&H1Error::Truncated));
    }

    // ------------------------------------------------ over a real socket

    /// A connection whose peer sends `reply`, then closes (`close`) or
    /// keeps the connection open until the returned guard drops.
    fn conn_with(reply: Vec<u8>, close: bool) -> (Conn, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let peer = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            s.write_all(&reply).unwrap();
            if close {
                s.shutdown(std::net::Shutdown::Write).unwrap();
            }
            s
        });
        let stream = async_std::task::block_on(TcpStream::connect(addr)).unwrap();
        (Conn::new(MaybeTls::Plain(stream)), peer.join().unwrap())
    }

    /// Body, status and "reusable", or the error.
    type Read = Result<(Vec<u8>, u16, bool), H1Error>;

    /// Read one response from a peer that sends `reply`; also the bytes
    /// left in the buffer after it.
    fn read(reply: &[u8], close: bool, max_body: usize) -> (Read, usize) {
        let (mut conn, _peer) = conn_with(reply.to_vec(), close);
        let r = async_std::task::block_on(async {
            let (mut res, reusable) = read_response(&mut conn, false, max_body).await?;
            let status = res.ext().get::<RawStatus>().unwrap().0;
            let body = res.body_bytes().await.unwrap();
            Ok((body, status, reusable))
        });
        (r, conn.rlen)
    }

    #[test]
    fn a_whole_exchange_leaves_the_connection_reusable() {
        let (r, left) = read(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            false,
            10,
        );
        assert_eq!(r, Ok((b"ok".to_vec(), 200, true)));
        assert_eq!(left, 0);
        let (r, _) = read(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            false,
            10,
        );
        assert_eq!(r, Ok((b"ok".to_vec(), 200, true)));
        let (r, _) = read(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", false, 10);
        assert_eq!(r, Ok((Vec::new(), 404, true)));
    }

    #[test]
    fn bytes_beyond_the_response_forbid_reuse() {
        let (r, left) = read(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n",
            false,
            10,
        );
        assert_eq!(r, Ok((b"ok".to_vec(), 200, false)));
        assert!(left > 0);
    }

    #[test]
    fn a_body_to_eof_is_read_and_ends_the_connection() {
        let (r, _) = read(b"HTTP/1.1 200 OK\r\n\r\nall of it", true, 100);
        assert_eq!(r, Ok((b"all of it".to_vec(), 200, false)));
        let (r, _) = read(b"HTTP/1.1 200 OK\r\n\r\nall of it", true, 5);
        assert_eq!(r, Err(H1Error::BodyTooLarge));
    }

    #[test]
    fn cut_responses_are_closed_or_truncated() {
        assert_eq!(read(b"", true, 10).0, Err(H1Error::Closed));
        assert_eq!(read(b"HTTP/1.1 200 OK\r\n", true, 10).0, Err(H1Error::Truncated));
        assert_eq!(
            read(b"HTTP/1.1 100 Continue\r\n\r\n", true, 10).0,
            Err(H1Error::Truncated)
        );
        assert_eq!(
            read(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nok", true, 10).0,
            Err(H1Error::Truncated)
        );
        assert_eq!(
            read(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nok",
                true,
                10
            )
            .0,
            Err(H1Error::Truncated)
        );
    }

    #[test]
    fn limits_hold_for_the_head_in_total_and_the_body() {
        // One header line that does not end.
        let mut endless = b"HTTP/1.1 200 OK\r\nX: ".to_vec();
        endless.resize(HEAD_LIMIT * 2, b'a');
        assert_eq!(read(&endless, false, 10).0, Err(H1Error::HeadTooLarge));
        // Lines that end, but too many bytes of them.
        let mut long = b"HTTP/1.1 200 OK\r\n".to_vec();
        while long.len() < HEAD_LIMIT + 10 {
            long.extend_from_slice(
                b"X: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n",
            );
        }
        long.truncate(HEAD_LIMIT + 10);
        assert_eq!(read(&long, false, 10).0, Err(H1Error::HeadTooLarge));
        // Interim heads count too.
        let mut interim = Vec::new();
        while interim.len() < HEAD_LIMIT {
            interim.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
        }
        interim.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(read(&interim, false, 10).0, Err(H1Error::HeadTooLarge));
        // The body limit, known up front or found while decoding.
        assert_eq!(
            read(b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n", false, 10).0,
            Err(H1Error::BodyTooLarge)
        );
        assert_eq!(
            read(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nabcdef\r\n6\r\n",
                false,
                10
            )
            .0,
            Err(H1Error::BodyTooLarge)
        );
    }

    #[test]
    fn the_pool_keeps_only_young_quiet_connections() {
        async_std::task::block_on(async {
            let listener = async_std::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let pair = || async {
                let c = TcpStream::connect(addr).await.unwrap();
                let (s, _) = listener.accept().await.unwrap();
                (Conn::new(MaybeTls::Plain(c)), s)
            };
            let pool = Pool {
                hosts: Mutex::new(Vec::new()),
                idle_limit: Duration::from_secs(60),
                max_idle: 2,
            };
            // A quiet one comes back; the newest first.
            let (a, _a_peer) = pair().await;
            let (b, _b_peer) = pair().await;
            let a_port = a.stream.tcp().get_ref().local_addr().unwrap().port();
            let b_port = b.stream.tcp().get_ref().local_addr().unwrap().port();
            pool.checkin(false, "h", 1, a);
            pool.checkin(false, "h", 1, b);
            assert!(pool.checkout(false, "other", 1).is_none());
            assert!(pool.checkout(false, "h", 2).is_none());
            let got = pool.checkout(false, "h", 1).unwrap();
            assert_eq!(got.stream.tcp().get_ref().local_addr().unwrap().port(), b_port);
            let got = pool.checkout(false, "h", 1).unwrap();
            assert_eq!(got.stream.tcp().get_ref().local_addr().unwrap().port(), a_port);
            assert!(pool.checkout(false, "h", 1).is_none());

            // At most max_idle: the oldest goes.
            let (c, _c_peer) = pair().await;
            let (d, _d_peer) = pair().await;
            let (e, _e_peer) = pair().await;
            let c_port = c.stream.tcp().get_ref().local_addr().unwrap().port();
            pool.checkin(false, "h", 1, c);
            pool.checkin(false, "h", 1, d);
            pool.checkin(false, "h", 1, e);
            let mut ports = Vec::new();
            while let Some(conn) = pool.checkout(false, "h", 1) {
                ports.push(conn.stream.tcp().get_ref().local_addr().unwrap().port());
            }
            assert_eq!(ports.len(), 2);
            assert!(!ports.contains(&c_port));

            // Readable while idle (unasked bytes, or EOF): discarded.
            let (f, mut f_peer) = pair().await;
            let (g, g_peer) = pair().await;
            f_peer.write_all(b"HTTP/1.1 200 OK\r\n").await.unwrap();
            drop(g_peer);
            pool.checkin(false, "h", 1, f);
            pool.checkin(false, "h", 1, g);
            // (Loopback: the bytes and the close are there at once; a
            // moment's margin all the same.)
            async_std::task::sleep(Duration::from_millis(100)).await;
            assert!(pool.checkout(false, "h", 1).is_none());

            // Forgotten: all of a host's idle connections go.
            let (i, _i_peer) = pair().await;
            let (j, _j_peer) = pair().await;
            pool.checkin(false, "h", 1, i);
            pool.checkin(false, "h", 1, j);
            pool.forget(false, "h", 1);
            assert!(pool.checkout(false, "h", 1).is_none());

            // Too old: discarded without a look.
            let old = Pool {
                hosts: Mutex::new(Vec::new()),
                idle_limit: Duration::ZERO,
                max_idle: 2,
            };
            let (h, _h_peer) = pair().await;
            old.checkin(false, "h", 1, h);
            assert!(old.checkout(false, "h", 1).is_none());
        });
    }
}
