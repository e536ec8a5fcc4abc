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
//! - The response head is read into a fixed [`HEAD_LIMIT`] buffer, interim
//!   `1xx` heads included, whether or not its lines end; it is parsed with
//!   `httparse` once its empty line has been seen (each byte is scanned
//!   once). The body is framed by `Content-Length`, `Transfer-Encoding:
//!   chunked` or the end of the connection, and read whole, up to the
//!   client's body limit, before the response is handed to surf.
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
use http_client::http_types::headers::{HeaderName, HeaderValue, Headers};
use http_client::http_types::url::{Host, Position};
use http_client::http_types::{self, Body, Method, StatusCode, Version};
use http_client::{Config, HttpClient, Request, Response};
use outage_core::{Failure, Transport};

use crate::tls::MaybeTls;

/// The most bytes of response head read, interim `1xx` heads included.
pub const HEAD_LIMIT: usize = 16 * 1024;
/// Idle connections older than this are closed, not reused: below the 5 s
/// after which uvicorn closes idle keep-alive connections.
pub const DEFAULT_IDLE_LIMIT: Duration = Duration::from_secs(4);
/// Idle connections kept per host and port.
pub const MAX_IDLE_PER_HOST: usize = 4;
/// Header lines per head (`httparse` needs a fixed table).
const MAX_HEADERS: usize = 64;
/// The longest chunk-size line (size and extensions).
const MAX_CHUNK_LINE: usize = 1024;

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
        check_request(req.as_ref())?;
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
        let head_request = req.method() == Method::Head;
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
        let target = &url[Position::BeforePath..Position::AfterQuery];
        encode_request(
            &mut conn.wbuf,
            req.method(),
            target,
            host_str,
            url.port(),
            req.as_ref(),
            &body,
        );
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

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Headers this client writes itself.
fn own_header(name: &str) -> bool {
    ["host", "content-length", "transfer-encoding"]
        .iter()
        .any(|h| name.eq_ignore_ascii_case(h))
}

/// Refuse headers that would not be one header line each.
fn check_request(headers: &Headers) -> Result<(), H1Error> {
    for (name, values) in headers.iter() {
        if !is_token(name.as_str()) {
            return Err(H1Error::InvalidRequest);
        }
        if values
            .iter()
            .any(|v| v.as_str().bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)))
        {
            return Err(H1Error::InvalidRequest);
        }
    }
    Ok(())
}

/// The request's bytes into `out` (cleared first): request line, `Host`,
/// the request's headers, `Content-Length`, the body.
fn encode_request(
    out: &mut Vec<u8>,
    method: Method,
    target: &str,
    host: &str,
    port: Option<u16>,
    headers: &Headers,
    body: &[u8],
) {
    use std::io::Write;
    out.clear();
    out.reserve(256 + body.len());
    let target = if target.is_empty() { "/" } else { target };
    // Writing to a Vec cannot fail.
    let _ = write!(out, "{method} {target} HTTP/1.1\r\nHost: {host}");
    if let Some(port) = port {
        let _ = write!(out, ":{port}");
    }
    out.extend_from_slice(b"\r\n");
    for (name, values) in headers.iter() {
        if own_header(name.as_str()) {
            continue;
        }
        for value in values.iter() {
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_str().as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
    if !body.is_empty() || !matches!(method, Method::Get | Method::Head) {
        let _ = write!(out, "Content-Length: {}\r\n", body.len());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
}

// ------------------------------------------------------------ the head

/// Finds the empty line that ends a response head, over reads that each
/// add bytes: every byte is looked at once. Empty lines before the status
/// line are skipped, as `httparse` does.
#[derive(Debug, Default, Clone, Copy)]
struct HeadEnd {
    scanned: usize,
    state: Scan,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Scan {
    /// Before the status line.
    #[default]
    Start,
    /// Inside a line.
    Line,
    /// Just after a line feed.
    LineStart,
    /// A carriage return at the start of a line.
    Cr,
}

impl HeadEnd {
    /// The head's length once `buf` (the bytes so far) holds its end.
    fn find(&mut self, buf: &[u8]) -> Option<usize> {
        while let Some(&b) = buf.get(self.scanned) {
            self.scanned += 1;
            self.state = match (self.state, b) {
                (Scan::Start, b'\r' | b'\n') => Scan::Start,
                (Scan::LineStart | Scan::Cr, b'\n') => return Some(self.scanned),
                (Scan::LineStart, b'\r') => Scan::Cr,
                (_, b'\n') => Scan::LineStart,
                _ => Scan::Line,
            };
        }
        None
    }
}

/// How the body of a response is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No body (`HEAD`, 204, 304).
    Empty,
    /// `Content-Length` (saturated at `u64::MAX`).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the connection closes.
    ToEof,
}

/// A final response head.
#[derive(Debug)]
struct Head {
    response: Response,
    framing: Framing,
    /// HTTP/1.1 without `Connection: close` and with a framed body.
    reusable: bool,
}

/// Parse one complete head (`buf` ends with its empty line). `None` for an
/// interim `1xx` response, to be skipped.
fn parse_head(buf: &[u8], head_request: bool) -> Result<Option<Head>, H1Error> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut headers);
    match parsed.parse(buf) {
        Ok(httparse::Status::Complete(n)) if n == buf.len() => {}
        Err(httparse::Error::TooManyHeaders) => return Err(H1Error::HeadTooLarge),
        // The scanner found the empty line; httparse must agree.
        _ => return Err(H1Error::Malformed),
    }
    let (Some(version), Some(code)) = (parsed.version, parsed.code) else {
        return Err(H1Error::Malformed);
    };
    match code {
        101 => return Err(H1Error::Malformed), // we never ask to switch
        100..=199 => return Ok(None),
        200..=599 => {}
        _ => return Err(H1Error::Malformed),
    }
    let mut close = false;
    let mut chunked = false;
    let mut other_coding = false;
    let mut length: Option<u64> = None;
    let mut response = Response::new(status_code(code));
    for h in parsed.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("connection") {
            close |= list(h.value).any(|t| t.eq_ignore_ascii_case(b"close"));
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            other_coding |= list(h.value).next().is_none();
            for coding in list(h.value) {
                // Only `chunked`, once, last: we decode nothing else.
                if coding.eq_ignore_ascii_case(b"chunked") && !chunked {
                    chunked = true;
                } else {
                    other_coding = true;
                }
            }
            continue;
        } else if name.eq_ignore_ascii_case("content-length") {
            if list(h.value).next().is_none() {
                return Err(H1Error::Malformed);
            }
            for value in list(h.value) {
                let n = parse_length(value).ok_or(H1Error::Malformed)?;
                if length.is_some_and(|l| l != n) {
                    return Err(H1Error::Malformed);
                }
                length = Some(n);
            }
            continue;
        }
        // Headers http-types cannot hold (non-ASCII values) are left out.
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes().to_vec()),
            HeaderValue::from_bytes(h.value.to_vec()),
        ) {
            response.append_header(n, v);
        }
    }
    let framing = if head_request || code == 204 || code == 304 {
        Framing::Empty
    } else if chunked || other_coding {
        // Both framings at once is how responses are smuggled: refuse.
        if other_coding || length.is_some() {
            return Err(H1Error::Malformed);
        }
        Framing::Chunked
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        Framing::ToEof
    };
    let http11 = version == 1;
    response.set_version(Some(if http11 {
        Version::Http1_1
    } else {
        Version::Http1_0
    }));
    response.ext_mut().insert(RawStatus(code));
    Ok(Some(Head {
        response,
        framing,
        reusable: http11 && !close && framing != Framing::ToEof,
    }))
}

/// The items of a comma-separated header value, trimmed, empty ones left out.
fn list(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// Decimal digits only; saturates (any limit refuses it then).
fn parse_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(value.iter().fold(0u64, |n, &d| {
        n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    }))
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

// ------------------------------------------------------------ the body

/// A streaming `Transfer-Encoding: chunked` decoder: bytes in, body out.
/// Every byte is looked at once, data is copied in runs. Extensions and
/// trailers are read and dropped. Bare LF line ends are accepted.
#[derive(Debug, Clone, Copy)]
struct Chunked {
    state: Chunk,
    /// Bytes of the current chunk-size line.
    line: usize,
    /// Bytes of the trailer section.
    trailer: usize,
    limit: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Hex digits of a chunk size.
    Size { value: u64, digits: u8 },
    /// After the size: extensions, up to the line feed.
    Ext { value: u64 },
    /// A carriage return after the size; a line feed must follow.
    SizeLf { value: u64 },
    /// Chunk data still to come.
    Data(usize),
    /// The line end after chunk data.
    DataCr,
    /// The line feed after chunk data's carriage return.
    DataLf,
    /// Trailer lines; `empty` while the current line has no byte yet.
    Trailer { empty: bool },
    /// The last chunk and trailers are read.
    Done,
}

impl Chunked {
    fn new(limit: usize) -> Chunked {
        Chunked {
            state: Chunk::Size { value: 0, digits: 0 },
            line: 0,
            trailer: 0,
            limit,
        }
    }

    fn done(&self) -> bool {
        self.state == Chunk::Done
    }

    /// Decode `input` onto `body`; the number of bytes used (all of them
    /// unless the body ended in them).
    fn feed(&mut self, input: &[u8], body: &mut Vec<u8>) -> Result<usize, H1Error> {
        let mut i = 0;
        while i < input.len() && !self.done() {
            if let Chunk::Data(left) = self.state {
                let n = left.min(input.len() - i);
                body.extend_from_slice(&input[i..i + n]);
                i += n;
                self.state = if n == left {
                    Chunk::DataCr
                } else {
                    Chunk::Data(left - n)
                };
                continue;
            }
            let b = input[i];
            i += 1;
            self.state = match self.state {
                Chunk::Size { value, digits } => {
                    self.line += 1;
                    match b {
                        b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                            if digits == 16 {
                                return Err(H1Error::Malformed);
                            }
                            let d = match b {
                                b'0'..=b'9' => b - b'0',
                                b'a'..=b'f' => b - b'a' + 10,
                                _ => b - b'A' + 10,
                            };
                            Chunk::Size {
                                value: value << 4 | u64::from(d),
                                digits: digits + 1,
                            }
                        }
                        _ if digits == 0 => return Err(H1Error::Malformed),
                        b';' | b' ' | b'\t' => Chunk::Ext { value },
                        b'\r' => Chunk::SizeLf { value },
                        b'\n' => self.size_line_done(value, body.len())?,
                        _ => return Err(H1Error::Malformed),
                    }
                }
                Chunk::Ext { value } => {
                    self.line += 1;
                    if self.line > MAX_CHUNK_LINE {
                        return Err(H1Error::Malformed);
                    }
                    match b {
                        b'\n' => self.size_line_done(value, body.len())?,
                        _ => Chunk::Ext { value },
                    }
                }
                Chunk::SizeLf { value } => match b {
                    b'\n' => self.size_line_done(value, body.len())?,
                    _ => return Err(H1Error::Malformed),
                },
                Chunk::DataCr => match b {
                    b'\r' => Chunk::DataLf,
                    b'\n' => Chunk::Size { value: 0, digits: 0 },
                    _ => return Err(H1Error::Malformed),
                },
                Chunk::DataLf => match b {
                    b'\n' => Chunk::Size { value: 0, digits: 0 },
                    _ => return Err(H1Error::Malformed),
                },
                Chunk::Trailer { empty } => match b {
                    b'\n' if empty => Chunk::Done,
                    b'\n' => Chunk::Trailer { empty: true },
                    b'\r' => Chunk::Trailer { empty },
                    _ => {
                        self.trailer += 1;
                        if self.trailer > HEAD_LIMIT {
                            return Err(H1Error::HeadTooLarge);
                        }
                        Chunk::Trailer { empty: false }
                    }
                },
                Chunk::Data(_) | Chunk::Done => unreachable!("handled above"),
            };
        }
        Ok(i)
    }

    fn size_line_done(&mut self, size: u64, have: usize) -> Result<Chunk, H1Error> {
        self.line = 0;
        if size == 0 {
            return Ok(Chunk::Trailer { empty: true });
        }
        match usize::try_from(size) {
            Ok(n) if n <= self.limit.saturating_sub(have) => Ok(Chunk::Data(n)),
            _ => Err(H1Error::BodyTooLarge),
        }
    }
}

/// Read one response: skip interim heads, read the head within
/// [`HEAD_LIMIT`], then the whole body within `max_body`. The flag: may the
/// connection be reused.
async fn read_response(
    conn: &mut Conn,
    head_request: bool,
    max_body: usize,
) -> Result<(Response, bool), H1Error> {
    let mut interim = 0;
    let mut end = HeadEnd::default();
    let head = loop {
        if let Some(n) = end.find(&conn.rbuf[..conn.rlen]) {
            let parsed = parse_head(&conn.rbuf[..n], head_request)?;
            conn.consume(n);
            match parsed {
                Some(head) => break head,
                None => {
                    interim += n;
                    end = HeadEnd::default();
                    continue;
                }
            }
        }
        let cap = HEAD_LIMIT - interim;
        if conn.rlen >= cap {
            return Err(H1Error::HeadTooLarge);
        }
        let before = interim + conn.rlen;
        // The first read of an answer waits for it; later ones try first.
        match conn.fill(cap, before == 0).await {
            Ok(0) if before == 0 => return Err(H1Error::Closed),
            Err(e) if before == 0 => return Err(first_read_error(&e)),
            Ok(0) | Err(_) => return Err(H1Error::Truncated),
            Ok(_) => {}
        }
    };
    let Head {
        mut response,
        framing,
        mut reusable,
    } = head;
    let body = match framing {
        Framing::Empty => Vec::new(),
        Framing::Length(n) => match usize::try_from(n) {
            Ok(n) if n <= max_body => read_length(conn, n).await?,
            _ => return Err(H1Error::BodyTooLarge),
        },
        Framing::Chunked => read_chunked(conn, max_body).await?,
        Framing::ToEof => read_to_eof(conn, max_body).await?,
    };
    // Bytes beyond the response: out of step, not reusable.
    reusable &= conn.rlen == 0;
    response.set_body(Body::from_bytes(body));
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

async fn read_length(conn: &mut Conn, n: usize) -> Result<Vec<u8>, H1Error> {
    let mut body = vec![0; n];
    let buffered = n.min(conn.rlen);
    body[..buffered].copy_from_slice(&conn.rbuf[..buffered]);
    conn.consume(buffered);
    let mut filled = buffered;
    while filled < n {
        match conn.stream.read(&mut body[filled..]).await {
            Ok(0) => return Err(H1Error::Truncated),
            Ok(k) => filled += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Err(H1Error::Truncated),
        }
    }
    Ok(body)
}

async fn read_chunked(conn: &mut Conn, max_body: usize) -> Result<Vec<u8>, H1Error> {
    let mut decoder = Chunked::new(max_body);
    let mut body = Vec::new();
    loop {
        let used = decoder.feed(&conn.rbuf[..conn.rlen], &mut body)?;
        conn.consume(used);
        if decoder.done() {
            return Ok(body);
        }
        match conn.fill(HEAD_LIMIT, false).await {
            Ok(0) | Err(_) => return Err(H1Error::Truncated),
            Ok(_) => {}
        }
    }
}

async fn read_to_eof(conn: &mut Conn, max_body: usize) -> Result<Vec<u8>, H1Error> {
    if conn.rlen > max_body {
        return Err(H1Error::BodyTooLarge);
    }
    let mut body = conn.rbuf[..conn.rlen].to_vec();
    conn.consume(conn.rlen);
    let room = (max_body - body.len()) as u64 + 1;
    (&mut conn.stream)
        .take(room)
        .read_to_end(&mut body)
        .await
        .map_err(|_| H1Error::Truncated)?;
    if body.len() > max_body {
        return Err(H1Error::BodyTooLarge);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    fn head(bytes: &[u8]) -> Result<Option<Head>, H1Error> {
        let mut end = HeadEnd::default();
        let n = end.find(bytes).expect("a complete head");
        parse_head(&bytes[..n], false)
    }

    fn final_head(bytes: &[u8]) -> Head {
        head(bytes).expect("parses").expect("a final response")
    }

    fn decode(input: &[u8], limit: usize) -> Result<(Vec<u8>, usize, bool), H1Error> {
        let mut d = Chunked::new(limit);
        let mut body = Vec::new();
        let used = d.feed(input, &mut body)?;
        Ok((body, used, d.done()))
    }

    #[test]
    fn head_end_is_found_across_reads_with_crlf_or_lf() {
        let full = b"\r\n\nHTTP/1.1 200 OK\r\nA: b\r\n\r\nbody";
        let want = full.len() - 4;
        assert_eq!(HeadEnd::default().find(full), Some(want));
        for split in 0..full.len() {
            let mut end = HeadEnd::default();
            let first = end.find(&full[..split]);
            let found = first.or_else(|| end.find(full));
            assert_eq!(found, Some(want), "split at {split}");
        }
        assert_eq!(
            HeadEnd::default().find(b"HTTP/1.1 200 OK\nA: b\n\nrest"),
            Some(22)
        );
        // Lines that end, but no empty line: not found.
        assert_eq!(HeadEnd::default().find(b"HTTP/1.1 200 OK\r\nA: b\r\n"), None);
        assert_eq!(HeadEnd::default().find(b"\r\n\r\n\n"), None);
    }

    #[test]
    fn final_heads_give_their_framing_and_reuse() {
        let h = final_head(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nRetry-After: 7\r\n\r\n");
        assert_eq!(h.framing, Framing::Length(5));
        assert!(h.reusable);
        assert_eq!(h.response.header("retry-after").unwrap().as_str(), "7");
        assert!(h.response.header("content-length").is_none());
        assert_eq!(h.response.ext().get::<RawStatus>(), Some(&RawStatus(200)));

        let h = final_head(b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\ncontent-length: 5\r\n\r\n");
        assert_eq!(h.framing, Framing::Length(5));

        let h = final_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n");
        assert_eq!(h.framing, Framing::Chunked);
        assert!(h.reusable);

        let h = final_head(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n");
        assert_eq!(h.framing, Framing::ToEof);
        assert!(!h.reusable, "a body to EOF ends the connection");

        let h = final_head(b"HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\nContent-Length: 0\r\n\r\n");
        assert!(!h.reusable);

        let h = final_head(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n");
        assert!(!h.reusable, "HTTP/1.0 is not kept alive");

        let h = final_head(b"HTTP/1.1 204 No Content\r\nContent-Length: 12\r\n\r\n");
        assert_eq!(h.framing, Framing::Empty);
        let h = final_head(b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(h.framing, Framing::Empty);

        let bytes = b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n";
        let h = parse_head(bytes, true).unwrap().unwrap();
        assert_eq!(h.framing, Framing::Empty, "no body after HEAD");

        let h = final_head(b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n");
        assert_eq!(h.framing, Framing::Length(u64::MAX));

        let h = final_head(b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(
            h.response.status(),
            StatusCode::Ok,
            "the reason phrase is optional"
        );
    }

    #[test]
    fn unregistered_statuses_keep_their_number() {
        let h = final_head(b"HTTP/1.1 299 Odd\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(h.response.ext().get::<RawStatus>(), Some(&RawStatus(299)));
        assert_eq!(h.response.status(), StatusCode::Ok);
        let h = final_head(b"HTTP/1.1 599 Odd\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(h.response.ext().get::<RawStatus>(), Some(&RawStatus(599)));
        assert_eq!(h.response.status(), StatusCode::InternalServerError);
    }

    #[test]
    fn interim_heads_are_skipped_and_odd_heads_refused() {
        assert!(head(b"HTTP/1.1 100 Continue\r\n\r\n").unwrap().is_none());
        assert!(
            head(b"HTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\n")
                .unwrap()
                .is_none()
        );
        let refused: &[&[u8]] = &[
            b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
            b"HTTP/1.1 600 Nope\r\n\r\n",
            b"HTTP/1.1 099 Nope\r\n\r\n",
            b"HTTP/2 200 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 0x10\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: \r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nBad Header: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n folded: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nA: b\rc\r\n\r\n",
            b"SSH-2.0-OpenSSH\r\n\r\n",
        ];
        for bytes in refused {
            let r = head(bytes);
            assert!(
                matches!(r, Err(H1Error::Malformed)),
                "{:?}: {r:?}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    #[test]
    fn too_many_headers_is_a_head_too_large() {
        let mut bytes = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            write!(bytes, "X-{i}: y\r\n").unwrap();
        }
        bytes.extend_from_slice(b"\r\n");
        assert!(matches!(head(&bytes), Err(H1Error::HeadTooLarge)));
    }

    #[test]
    fn header_values_http_types_cannot_hold_are_left_out() {
        let h = final_head(
            b"HTTP/1.1 200 OK\r\nX-Name: caf\xc3\xa9\r\nRetry-After: 3\r\nContent-Length: 0\r\n\r\n",
        );
        assert!(h.response.header("x-name").is_none());
        assert_eq!(h.response.header("retry-after").unwrap().as_str(), "3");
    }

    #[test]
    fn chunked_bodies_decode() {
        let input = b"5\r\nhello\r\n7;ext=\"a b\"\r\n, world\r\n0\r\nTrailer: x\r\n\r\nNEXT";
        let (body, used, done) = decode(input, 100).unwrap();
        assert_eq!(body, b"hello, world");
        assert!(done);
        assert_eq!(&input[used..], b"NEXT", "bytes after the body are left");

        let (body, _, done) = decode(b"A\nabcdefghij\n0\n\n", 100).unwrap();
        assert_eq!((body.as_slice(), done), (&b"abcdefghij"[..], true), "bare LF");

        let (body, used, done) = decode(b"3\r\nab", 100).unwrap();
        assert_eq!((body.as_slice(), used, done), (&b"ab"[..], 5, false));

        // Exactly at the limit is fine; one more byte is not.
        assert!(decode(b"4\r\nabcd\r\n0\r\n\r\n", 4).unwrap().2);
        assert_eq!(decode(b"4\r\nabcd\r\n1\r\n", 4), Err(H1Error::BodyTooLarge));
        assert_eq!(
            decode(b"ffffffffffffffff\r\n", 1 << 20),
            Err(H1Error::BodyTooLarge)
        );
    }

    #[test]
    fn chunked_input_split_anywhere_decodes_the_same() {
        let input = b"5\r\nhello\r\n7;x\r\n, world\r\n0\r\nT: 1\r\n\r\n";
        for split in 0..=input.len() {
            let mut d = Chunked::new(100);
            let mut body = Vec::new();
            let a = d.feed(&input[..split], &mut body).unwrap();
            let b = d.feed(&input[split..], &mut body).unwrap();
            assert_eq!(a + b, input.len());
            assert!(d.done());
            assert_eq!(body, b"hello, world");
        }
    }

    #[test]
    fn bad_chunked_bodies_are_errors() {
        let bad: &[&[u8]] = &[
            b"\r\n",
            b"g\r\n",
            b";x\r\n",
            b"5\rX",
            b"5\r\nhelloX",
            b"5\r\nhello\rX",
            b"00000000000000001\r\n",
        ];
        for input in bad {
            assert_eq!(
                decode(input, 100),
                Err(H1Error::Malformed),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
        let mut endless_ext = b"5;".to_vec();
        endless_ext.resize(MAX_CHUNK_LINE + 10, b'x');
        assert_eq!(decode(&endless_ext, 100), Err(H1Error::Malformed));
        let mut endless_trailer = b"0\r\nT: ".to_vec();
        endless_trailer.resize(HEAD_LIMIT + 10, b'x');
        assert_eq!(decode(&endless_trailer, 100), Err(H1Error::HeadTooLarge));
    }

    #[test]
    fn requests_are_one_buffer_with_host_and_length() {
        let mut req = Request::new(Method::Patch, "http://example.org:8123/v1/x?a=1");
        req.insert_header("Authorization", "Bearer t");
        req.insert_header("Host", "ignored");
        req.insert_header("Content-Length", "999");
        let mut out = b"stale".to_vec();
        let url = req.url().clone();
        let target = &url[Position::BeforePath..Position::AfterQuery];
        encode_request(
            &mut out,
            Method::Patch,
            target,
            "example.org",
            url.port(),
            req.as_ref(),
            b"{}",
        );
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("PATCH /v1/x?a=1 HTTP/1.1\r\nHost: example.org:8123\r\n"),
            "{text}"
        );
        assert!(text.contains("\r\nauthorization: Bearer t\r\n"), "{text}");
        assert!(text.ends_with("\r\nContent-Length: 2\r\n\r\n{}"), "{text}");
        assert_eq!(text.matches("ost:").count(), 1, "{text}");
        assert_eq!(text.matches("ength:").count(), 1, "{text}");

        let mut out = Vec::new();
        let none = Request::new(Method::Get, "http://h/");
        encode_request(&mut out, Method::Get, "", "h", None, none.as_ref(), b"");
        assert_eq!(out, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
        encode_request(&mut out, Method::Post, "/p", "h", None, none.as_ref(), b"");
        assert_eq!(out, b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n");
    }

    #[test]
    fn header_injection_is_refused() {
        let mut req = Request::new(Method::Get, "http://h/");
        req.insert_header("Authorization", "Bearer a\r\nX-Evil: 1");
        assert_eq!(check_request(req.as_ref()), Err(H1Error::InvalidRequest));
        let mut req = Request::new(Method::Get, "http://h/");
        req.insert_header("Authorization", "Bearer fine");
        assert_eq!(check_request(req.as_ref()), Ok(()));
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

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn chunk_encode(body: &[u8], sizes: &[usize]) -> Vec<u8> {
            let mut out = Vec::new();
            let mut rest = body;
            let mut sizes = sizes.iter().cycle();
            while !rest.is_empty() {
                let n = (*sizes.next().unwrap()).clamp(1, rest.len());
                write!(out, "{n:x}\r\n").unwrap();
                out.extend_from_slice(&rest[..n]);
                out.extend_from_slice(b"\r\n");
                rest = &rest[n..];
            }
            out.extend_from_slice(b"0\r\n\r\n");
            out
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(
                std::env::var("OUTAGE_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(512)
            ))]

            /// Any bytes: the head scanner looks at each byte once, and a
            /// head it finds parses to a head or an error, never a panic.
            #[test]
            fn any_bytes_through_the_head_parser(
                bytes in proptest::collection::vec(any::<u8>(), 0..2048),
                split in 0usize..2048,
            ) {
                let split = split.min(bytes.len());
                let mut end = HeadEnd::default();
                let found = end.find(&bytes[..split]).or_else(|| end.find(&bytes));
                prop_assert!(end.scanned <= bytes.len());
                prop_assert_eq!(found, HeadEnd::default().find(&bytes));
                if let Some(n) = found {
                    prop_assert!(n <= bytes.len());
                    let _ = parse_head(&bytes[..n], false);
                }
            }

            /// Heads made of header-like lines: parsed or refused, and a
            /// final head always has a framing the reader can use.
            #[test]
            fn header_like_heads_parse_or_fail(
                status in 0u16..1000,
                lines in proptest::collection::vec("[A-Za-z-]{0,12}:[ -~]{0,20}", 0..12),
            ) {
                let mut bytes = format!("HTTP/1.1 {status:03} X\r\n").into_bytes();
                for l in &lines {
                    bytes.extend_from_slice(l.as_bytes());
                    bytes.extend_from_slice(b"\r\n");
                }
                bytes.extend_from_slice(b"\r\n");
                let n = HeadEnd::default().find(&bytes);
                prop_assert!(n.is_some());
                if let Ok(Some(h)) = parse_head(&bytes[..n.unwrap()], false) {
                    prop_assert!((200..600).contains(&status));
                    prop_assert_eq!(h.response.ext().get::<RawStatus>(), Some(&RawStatus(status)));
                    prop_assert!(h.framing != Framing::ToEof || !h.reusable);
                }
            }

            /// Any bytes into the chunked decoder, in two reads: an error or
            /// a body within the limit, every byte used at most once.
            #[test]
            fn any_bytes_through_the_chunked_decoder(
                bytes in proptest::collection::vec(any::<u8>(), 0..2048),
                split in 0usize..2048,
                limit in 0usize..512,
            ) {
                let split = split.min(bytes.len());
                let mut d = Chunked::new(limit);
                let mut body = Vec::new();
                let whole = decode(&bytes, limit);
                let parts = d.feed(&bytes[..split], &mut body).and_then(|a| {
                    if d.done() { Ok(a) } else { Ok(a + d.feed(&bytes[split..], &mut body)?) }
                });
                prop_assert!(body.len() <= limit);
                match (parts, whole) {
                    (Ok(used), Ok((whole_body, whole_used, done))) => {
                        prop_assert!(used <= bytes.len());
                        prop_assert_eq!(used, whole_used);
                        prop_assert_eq!(&body, &whole_body);
                        prop_assert_eq!(d.done(), done);
                    }
                    (Err(a), Err(b)) => prop_assert_eq!(a, b),
                    (a, b) => prop_assert!(false, "split {:?} whole {:?}", a, b),
                }
            }

            /// Chunked encodings of any body decode to it, in any two
            /// reads, leaving what follows.
            #[test]
            fn chunked_round_trip(
                body in proptest::collection::vec(any::<u8>(), 0..1024),
                sizes in proptest::collection::vec(1usize..300, 1..8),
                split in 0usize..2048,
            ) {
                let mut input = chunk_encode(&body, &sizes);
                let len = input.len();
                input.extend_from_slice(b"HTTP/1.1");
                let split = split.min(input.len());
                let mut d = Chunked::new(body.len());
                let mut out = Vec::new();
                let mut used = d.feed(&input[..split], &mut out).unwrap();
                if !d.done() {
                    used += d.feed(&input[split..], &mut out).unwrap();
                }
                prop_assert!(d.done());
                prop_assert_eq!(used, len);
                prop_assert_eq!(out, body);
            }
        }
    }
}
