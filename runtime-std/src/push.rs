//! Task-available push: a small Socket.IO v5 / Engine.IO v4 client over
//! WebSocket, for ZnDraw job servers that serve Socket.IO (ZnDraw itself,
//! or the loopback server with `--socketio`).
//!
//! ```no_run
//! use std::time::Duration;
//! use outage_runtime_std::push::{Push, PushEvent};
//!
//! # async fn demo(worker_id: &str) -> Result<(), outage_runtime_std::push::PushError> {
//! let mut push = Push::connect("http://127.0.0.1:8765", "secret", Duration::from_secs(10)).await?;
//! push.join("@global:modifiers:Echo", worker_id).await?;
//! loop {
//!     match push.next().await? {
//!         PushEvent::TaskAvailable { task_id, .. } => println!("claim now ({task_id})"),
//!         _ => {}
//!     }
//! }
//! # }
//! ```
//!
//! # Design
//!
//! * **Why this crate.** The WebSocket framing is `async-tungstenite`
//!   without any of its features (no handshake, no TLS, no runtime, no
//!   `futures-util` sink), over our own stream: it runs on the async-std
//!   executor this crate already uses, so there is no second runtime (no
//!   tokio), and its `tungstenite` core is the widely used WebSocket
//!   implementation, so the framing is not ours to get wrong. The opening
//!   handshake is the core's codec (`outage_core::wire::websocket`: the
//!   request written and the `101` read and checked as every other HTTP
//!   head, so `httparse` is not in the graph), over the same TCP and TLS
//!   as the REST client. The Engine.IO and Socket.IO layers on top are
//!   small text protocols, written here.
//! * **What is implemented.** Engine.IO v4 over a direct WebSocket
//!   (`/socket.io/?EIO=4&transport=websocket`, no polling first): the open
//!   packet, ping → pong, the server's close packet, and the liveness rule of
//!   the protocol (no ping within `pingInterval + pingTimeout` means the
//!   connection is lost). Socket.IO v5 on the default namespace: CONNECT with
//!   `auth = {"token": …}` (the bare token, as ZnDraw wants it),
//!   CONNECT_ERROR, DISCONNECT, EVENT and ACK. The events are ZnDraw's:
//!   `join_job_room` / `leave_job_room` out (with an ack id: the call
//!   returns once the server has entered or left the room), `task_available`
//!   in. Other events are skipped.
//! * **What is not.** No long-polling transport and so no fallback to it
//!   (a server or proxy without WebSockets cannot be used); no binary packets (skipped, with their
//!   attachments); no namespaces other than `/`; no reconnection — a lost
//!   connection is an error, and the caller connects again and re-joins (a
//!   new socket is in no room), then claims until the queue is empty, since
//!   a task submitted meanwhile sent its event to nobody.
//! * **Nothing runs in the background.** A [`Push`] is a plain value that
//!   owns its socket; pings are answered while a call reads the socket.
//!   Between calls nobody reads, so call [`Push::next`] (or keep one call
//!   pending) at least every `pingInterval` (25 s on ZnDraw) or the server
//!   drops the connection after `pingTimeout` more. Every future here may be
//!   dropped at any await: a pong that was owed is sent by the next call,
//!   and dropping the [`Push`] closes the socket — nothing is left running.
//! * **The token** goes only into the CONNECT packet. It is not kept, not
//!   logged and not part of any error or `Debug` output. Beware:
//!   `tungstenite` itself logs every frame it sends at *trace* level
//!   (target `tungstenite::protocol`), the CONNECT frame included; keep
//!   that target at debug or above (the `outage-worker` CLI always does).

use std::collections::VecDeque;

/// The default bound of one push message ([`Push::connect`]): 1 MiB. A
/// `task_available` event is about 150 bytes, and ZnDraw's Engine.IO
/// itself announces `maxPayload` 1,000,000; a message past the bound (a
/// flood, a broken proxy) ends the connection instead of growing a buffer
/// (REST answers are bounded too: `WorkerBuilder::max_response_bytes`).
pub const DEFAULT_MAX_MESSAGE: usize = 1 << 20;
use std::fmt;
use std::io;
use std::time::{Duration, Instant};

use async_std::future::timeout;
use async_std::net::TcpStream;
use async_tungstenite::WebSocketStream;

use crate::tls::MaybeTls;
use async_tungstenite::tungstenite::error::ProtocolError;
use async_tungstenite::tungstenite::protocol::Role;
use async_tungstenite::tungstenite::{Error as WsError, Message};
use futures_lite::StreamExt;
use outage_core::Event;
use serde::Deserialize;
use serde_json::Value;

const LOG: &str = "outage";

/// Something the server pushed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PushEvent {
    /// `task_available`: a task was submitted to a job whose room this
    /// socket joined. A wake-up, not an assignment: every socket in the room
    /// gets it, so claim over REST until the server has no task left.
    TaskAvailable {
        /// The job's full name (`@global:modifiers:Echo`).
        job_name: String,
        /// The room the task was submitted to (not the job's room).
        room_id: String,
        /// The task's id.
        task_id: String,
    },
}

/// Why a connection ended or could not be made.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// Socket.IO DISCONNECT (`41`) from the server.
    ServerDisconnect,
    /// Engine.IO close packet (`1`) from the server.
    EngineClose,
    /// A WebSocket close frame (uvicorn sends 1012 when it stops).
    WebSocket {
        /// The close code (1005 when the frame had none).
        code: u16,
    },
    /// The TCP connection ended without a WebSocket close (the server
    /// process died, or a peer reset it).
    Reset,
    /// A call after this connection had already failed or been closed.
    AlreadyFailed,
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::ServerDisconnect => f.write_str("the server disconnected the socket"),
            CloseReason::EngineClose => f.write_str("the server closed the Engine.IO session"),
            CloseReason::WebSocket { code } => write!(f, "the server closed the WebSocket (code {code})"),
            CloseReason::Reset => f.write_str("the connection ended without a WebSocket close"),
            CloseReason::AlreadyFailed => f.write_str("this push connection failed or was closed earlier"),
        }
    }
}

/// A push connection's error. Its `Display` is the message to show; none
/// holds the token.
#[derive(Debug)]
#[non_exhaustive]
pub enum PushError {
    /// The base URL is not `http://host[:port][/path]`.
    InvalidUrl(&'static str),
    /// The TCP connection could not be made.
    Connect(io::Error),
    /// The server serves no Socket.IO (the loopback server without
    /// `--socketio`): the WebSocket upgrade of `/socket.io/` was refused
    /// and `/socket.io/` answers 404 (a WebSocket upgrade to a path without
    /// a WebSocket route gets 403 from Starlette, so a refused upgrade is
    /// followed by one plain polling `GET` to tell).
    NoSocketIo,
    /// The WebSocket upgrade was answered with another HTTP status.
    Http {
        /// The status code.
        status: u16,
    },
    /// The server refused the Socket.IO CONNECT (`44`): a wrong, expired or
    /// missing token. ZnDraw sends the same generic message for every
    /// reason.
    Refused {
        /// The server's message (at most 200 characters).
        message: String,
    },
    /// The server did not answer in time.
    Timeout {
        /// What was awaited.
        waiting_for: &'static str,
    },
    /// No ping from the server within `pingInterval + pingTimeout`: the
    /// connection is lost (a hung server or network).
    PingTimeout {
        /// How long there was no ping.
        silent_for: Duration,
    },
    /// The connection was closed.
    Closed(CloseReason),
    /// A read or write on the connection failed.
    Io(io::Error),
    /// The server sent something this client does not understand.
    Protocol(String),
}

impl fmt::Display for PushError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PushError::InvalidUrl(why) => write!(f, "invalid push URL: {why}"),
            PushError::Connect(e) => write!(f, "cannot connect for push: {e}"),
            PushError::NoSocketIo => f.write_str(
                "the server offers no Socket.IO (/socket.io/ answers 404): push needs a server with Socket.IO enabled",
            ),
            PushError::Http { status } => write!(f, "the Socket.IO WebSocket upgrade was answered with HTTP {status}"),
            PushError::Refused { message } => write!(f, "the server refused the Socket.IO connection (token?): {message}"),
            PushError::Timeout { waiting_for } => write!(f, "timed out waiting for {waiting_for}"),
            PushError::PingTimeout { silent_for } => write!(
                f,
                "push connection lost: no ping from the server for {:.1} s",
                silent_for.as_secs_f32()
            ),
            PushError::Closed(reason) => write!(f, "push connection closed: {reason}"),
            PushError::Io(e) => write!(f, "push connection error: {e}"),
            PushError::Protocol(what) => write!(f, "unexpected data on the push connection: {what}"),
        }
    }
}

impl std::error::Error for PushError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PushError::Connect(e) | PushError::Io(e) => Some(e),
            _ => None,
        }
    }
}

fn ws_error(e: WsError) -> PushError {
    match e {
        WsError::ConnectionClosed | WsError::AlreadyClosed => PushError::Closed(CloseReason::AlreadyFailed),
        WsError::Io(e) => match e.kind() {
            io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe | io::ErrorKind::UnexpectedEof => {
                PushError::Closed(CloseReason::Reset)
            }
            _ => PushError::Io(e),
        },
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => {
            PushError::Closed(CloseReason::Reset)
        }
        other => PushError::Protocol(other.to_string()),
    }
}

// ---------------------------------------------------------------------------
// Frames: Engine.IO packets, Socket.IO packets inside Engine.IO messages.
// ---------------------------------------------------------------------------

/// The Engine.IO open packet's fields that matter.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
struct OpenInfo {
    sid: String,
    ping_interval: u64,
    ping_timeout: u64,
}

/// An Engine.IO packet as received (one per WebSocket text frame).
#[derive(Debug, PartialEq)]
enum EnginePacket<'a> {
    Open(OpenInfo),
    Close,
    Ping,
    Pong,
    Message(&'a str),
    /// Upgrade and noop: nothing to do.
    Ignored,
}

/// Server text fit for one log line: at most 80 characters, control
/// characters escaped (`\n`, `\u{1b}`), an ellipsis where it was cut.
fn excerpt(text: &str) -> String {
    const MAX: usize = 80;
    let mut out = String::with_capacity(text.len().min(MAX + 3));
    for (n, c) in text.chars().enumerate() {
        if n == MAX {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// A [`Event::PushTrace`] line, its text made only when debug lines are
/// logged.
fn trace(detail: impl FnOnce() -> String) {
    if log::log_enabled!(target: LOG, log::Level::Debug) {
        crate::emit(&Event::PushTrace { detail: &detail() });
    }
}

fn decode_engine(text: &str) -> Result<EnginePacket<'_>, PushError> {
    let mut chars = text.chars();
    let kind = chars.next();
    let rest = chars.as_str();
    match kind {
        Some('0') => serde_json::from_str(rest)
            .map(EnginePacket::Open)
            .map_err(|e| PushError::Protocol(format!("bad Engine.IO open packet ({e})"))),
        Some('1') => Ok(EnginePacket::Close),
        Some('2') => Ok(EnginePacket::Ping),
        Some('3') => Ok(EnginePacket::Pong),
        Some('4') => Ok(EnginePacket::Message(rest)),
        Some('5' | '6') => Ok(EnginePacket::Ignored),
        _ => Err(PushError::Protocol(format!(
            "not an Engine.IO packet: {}",
            excerpt(text)
        ))),
    }
}

/// A Socket.IO packet on the default namespace, as received.
#[derive(Debug, PartialEq)]
enum SocketPacket {
    Connect {
        sid: String,
    },
    Disconnect,
    Event {
        name: String,
        args: Vec<Value>,
    },
    Ack {
        id: u64,
    },
    ConnectError {
        message: String,
    },
    /// Binary packets, other namespaces: skipped.
    Ignored,
}

fn decode_socket(text: &str) -> Result<SocketPacket, PushError> {
    let bad = |why: &str| PushError::Protocol(format!("{why}: {}", excerpt(text)));
    let mut chars = text.chars();
    let kind = chars.next().ok_or_else(|| bad("empty Socket.IO packet"))?;
    let mut rest = chars.as_str();
    if matches!(kind, '5' | '6') {
        return Ok(SocketPacket::Ignored); // binary event / ack
    }
    if let Some(after) = rest.strip_prefix('/') {
        let (ns, after) = after.split_once(',').unwrap_or((after, ""));
        if !ns.is_empty() {
            return Ok(SocketPacket::Ignored);
        }
        rest = after;
    }
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let ack = if digits > 0 {
        Some(
            rest[..digits]
                .parse::<u64>()
                .map_err(|_| bad("ack id too long"))?,
        )
    } else {
        None
    };
    let json = &rest[digits..];
    let data: Option<Value> = if json.is_empty() {
        None
    } else {
        Some(serde_json::from_str(json).map_err(|_| bad("bad JSON in Socket.IO packet"))?)
    };
    match kind {
        '0' => {
            let sid = data
                .as_ref()
                .and_then(|d| d.get("sid"))
                .and_then(Value::as_str)
                .ok_or_else(|| bad("Socket.IO CONNECT without sid"))?;
            Ok(SocketPacket::Connect { sid: sid.to_owned() })
        }
        '1' => Ok(SocketPacket::Disconnect),
        '2' => {
            let Some(Value::Array(mut args)) = data else {
                return Err(bad("Socket.IO EVENT without an array"));
            };
            if args.is_empty() {
                return Err(bad("Socket.IO EVENT without a name"));
            }
            let Value::String(name) = args.remove(0) else {
                return Err(bad("Socket.IO EVENT name is not a string"));
            };
            Ok(SocketPacket::Event { name, args })
        }
        '3' => Ok(SocketPacket::Ack {
            id: ack.ok_or_else(|| bad("Socket.IO ACK without an id"))?,
        }),
        '4' => {
            let message = match &data {
                Some(Value::Object(o)) => o.get("message").and_then(Value::as_str).unwrap_or(""),
                Some(Value::String(s)) => s,
                _ => "",
            };
            Ok(SocketPacket::ConnectError {
                message: message.chars().take(200).collect(),
            })
        }
        _ => Err(bad("unknown Socket.IO packet type")),
    }
}

/// A `task_available` event's payload.
fn task_available(args: &[Value]) -> Option<PushEvent> {
    let data = args.first()?;
    let field = |k: &str| data.get(k).and_then(Value::as_str).map(str::to_owned);
    Some(PushEvent::TaskAvailable {
        job_name: field("job_name")?,
        room_id: field("room_id")?,
        task_id: field("task_id")?,
    })
}

/// `40{"token":"…"}`: the Socket.IO CONNECT with the bare token.
fn encode_connect(token: &str) -> String {
    format!("40{}", serde_json::json!({ "token": token }))
}

/// `42<id>["<event>",{"job_name":…,"worker_id":…}]`.
fn encode_room_event(event: &str, ack: u64, job_name: &str, worker_id: &str) -> String {
    let payload = serde_json::json!([event, { "job_name": job_name, "worker_id": worker_id }]);
    format!("42{ack}{payload}")
}

/// Where to connect, from `http[s]://host[:port][/path]`.
#[derive(Debug, PartialEq)]
struct Target {
    /// `wss://` (TLS, [`crate::tls`]), from an `https://` URL.
    tls: bool,
    /// The host alone, for TLS's certificate check.
    host: String,
    /// `host:port` for the TCP connection.
    addr: String,
    /// `host[:port]` as given, for a `Host` header.
    authority: String,
    /// `/path/socket.io/?EIO=4&transport=polling`
    polling_path: String,
    /// `/path/socket.io/?EIO=4&transport=websocket`
    ws_path: String,
}

fn websocket_url(base_url: &str) -> Result<Target, PushError> {
    let (tls, rest) = match (
        base_url.strip_prefix("https://"),
        base_url.strip_prefix("http://"),
    ) {
        (Some(rest), _) => (true, rest),
        (None, Some(rest)) => (false, rest),
        (None, None) => return Err(PushError::InvalidUrl("it must start with http:// or https://")),
    };
    let (authority, path) = match rest.find(['/', '?', '#']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if authority.is_empty() || authority.contains('@') {
        return Err(PushError::InvalidUrl("it needs a host (and no user info)"));
    }
    if path.contains(['?', '#']) {
        return Err(PushError::InvalidUrl("it must not have a query or fragment"));
    }
    let has_port = match authority.rfind(':') {
        Some(i) => !authority[i..].contains(']'),
        None => false,
    };
    let addr = match (has_port, tls) {
        (true, _) => authority.to_owned(),
        (false, false) => format!("{authority}:80"),
        (false, true) => format!("{authority}:443"),
    };
    let host = if has_port {
        &authority[..authority.rfind(':').unwrap_or(authority.len())]
    } else {
        authority
    };
    let path = path.trim_end_matches('/');
    let target = Target {
        tls,
        host: host.trim_start_matches('[').trim_end_matches(']').to_owned(),
        addr,
        authority: authority.to_owned(),
        polling_path: format!("{path}/socket.io/?EIO=4&transport=polling"),
        ws_path: format!("{path}/socket.io/?EIO=4&transport=websocket"),
    };
    // The core's rule for a head that can be written as it says (no
    // space, CR, LF or NUL in the host or path).
    if ![&target.ws_path, &target.polling_path]
        .iter()
        .all(|path| target.get(path, &[]).is_valid())
    {
        return Err(PushError::InvalidUrl(
            "it must not have spaces, line breaks or NUL",
        ));
    }
    Ok(target)
}

/// The status of `GET <polling path>` on a fresh connection: does the
/// server serve Engine.IO at all? (A WebSocket upgrade to a path without a
/// WebSocket route gets 403 from Starlette and others, not 404.)
async fn polling_status(target: &Target) -> io::Result<u16> {
    let tcp = open(target).await?;
    let (head, _, _) = exchange_head(
        tcp,
        target,
        &target.polling_path,
        &[(b"Connection", b"close")],
        false,
    )
    .await
    .map_err(HeadError::into_io)?;
    Ok(head.status)
}

/// Why [`exchange_head`] has no head.
#[derive(Debug)]
enum HeadError {
    /// Reading or writing the connection failed (TLS included).
    Io(io::Error),
    /// The bytes are not a response's head, or the connection ended
    /// before the head did (the core's reader says which).
    Wire(outage_core::wire::Error),
}

impl HeadError {
    fn into_io(self) -> io::Error {
        match self {
            HeadError::Io(e) => e,
            HeadError::Wire(e) => io::Error::new(io::ErrorKind::InvalidData, e.failure().to_string()),
        }
    }
}

impl Target {
    /// The head of a `GET` of `path` on this target, with `headers`.
    fn get<'a>(
        &'a self,
        path: &'a str,
        headers: &'a [(&'a [u8], &'a [u8])],
    ) -> outage_core::wire::RequestHead<'a> {
        outage_core::wire::RequestHead {
            method: "GET",
            target: outage_core::wire::Target::Raw(path.as_bytes()),
            host: self.authority.as_bytes(),
            bearer: None,
            headers,
            body_len: 0,
        }
    }
}

/// Sends a `GET` of `path` with `headers` on `stream` and reads the
/// answer's head: the head, its bytes, and the stream with the bytes read
/// after the head. The request is written and the answer read by the
/// core's codec ([`outage_core::wire`]), as every other exchange: one
/// framing in the tree.
async fn exchange_head(
    mut stream: Stream,
    target: &Target,
    path: &str,
    headers: &[(&[u8], &[u8])],
    upgrade: bool,
) -> Result<(outage_core::wire::Head, Vec<u8>, Upgraded), HeadError> {
    use futures_lite::{AsyncReadExt, AsyncWriteExt};
    use outage_core::wire::{Limits, Read, Reader};
    let head = target.get(path, headers);
    if !head.is_valid() {
        // `websocket_url` refuses such a URL; never write a head that
        // could carry a second one.
        let e = io::Error::new(
            io::ErrorKind::InvalidInput,
            "a request head that cannot be written",
        );
        return Err(HeadError::Io(e));
    }
    let mut request = Vec::new();
    let _ = head.write(&mut |piece: &[u8]| {
        request.extend_from_slice(piece);
        Ok(())
    });
    stream.write_all(&request).await.map_err(HeadError::Io)?;
    stream.flush().await.map_err(HeadError::Io)?;
    let reader = Reader::new(Limits {
        head: 8192,
        body: usize::MAX,
    });
    let mut reader = if upgrade { reader.for_upgrade() } else { reader };
    // The bytes received and not used by the reader yet: it uses interim
    // `1xx` heads as it skips them, and keeps its place in a partial head
    // (it scans each byte once), so what it used is dropped here.
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let (used, read) = reader.feed(&got).map_err(HeadError::Wire)?;
        if let Read::Head(h) = read {
            let rest = got.split_off(used);
            let head = got.split_off(used - h.len);
            return Ok((
                h,
                head,
                Upgraded {
                    early: rest,
                    at: 0,
                    inner: stream,
                },
            ));
        }
        got.drain(..used);
        let n = stream.read(&mut buf).await.map_err(HeadError::Io)?;
        if n == 0 {
            return Err(HeadError::Wire(
                reader
                    .finish()
                    .err()
                    .unwrap_or(outage_core::wire::Error::Truncated),
            ));
        }
        got.extend_from_slice(&buf[..n]);
    }
}

/// The WebSocket opening handshake on `stream` (RFC 6455 §4.1, the core's
/// [`outage_core::wire::websocket`]): the stream once the server switched,
/// [`PushError::NoSocketIo`] for a 404, [`PushError::Http`] for an
/// answer of another status, [`PushError::Closed`] if the connection
/// ended before the answer's head did, [`PushError::Protocol`] for an
/// answer that is not HTTP or a `101` that does not accept this key.
async fn upgrade(target: &Target, stream: Stream) -> Result<Upgraded, PushError> {
    use outage_core::wire::{Error, websocket};
    let key = websocket::key(nonce());
    let headers = websocket::headers(&key);
    let (head, bytes, stream) = exchange_head(stream, target, &target.ws_path, &headers, true)
        .await
        .map_err(|e| match e {
            HeadError::Wire(Error::Closed | Error::Truncated) => PushError::Closed(CloseReason::Reset),
            HeadError::Wire(e) => {
                PushError::Protocol(format!("the WebSocket upgrade's answer: {}", e.failure()))
            }
            HeadError::Io(e) => match e.kind() {
                io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe | io::ErrorKind::UnexpectedEof => {
                    PushError::Closed(CloseReason::Reset)
                }
                _ => PushError::Io(e),
            },
        })?;
    match head.status {
        101 => {}
        404 => return Err(PushError::NoSocketIo),
        status => return Err(PushError::Http { status }),
    }
    websocket::switched(head.status, &bytes, &key)
        .map_err(|_| PushError::Protocol("the server's 101 does not accept this WebSocket key".into()))?;
    Ok(stream)
}

/// A `Sec-WebSocket-Key`'s nonce: 16 bytes no other connection uses (RFC
/// 6455 asks for a random one; it proves the server read this request,
/// it guards nothing: TLS does).
fn nonce() -> [u8; 16] {
    use std::hash::{BuildHasher, Hasher};
    static COUNT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut out = [0u8; 16];
    for half in out.chunks_mut(8) {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        half.copy_from_slice(&h.finish().to_le_bytes());
    }
    out
}

/// The push connection's stream after the upgrade: the bytes read with
/// the `101` head (the server's first frames may come in its packet)
/// first, then the connection.
struct Upgraded {
    early: Vec<u8>,
    at: usize,
    inner: Stream,
}

impl futures_lite::AsyncRead for Upgraded {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut [u8],
    ) -> std::task::Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.at < this.early.len() {
            let n = buf.len().min(this.early.len() - this.at);
            buf[..n].copy_from_slice(&this.early[this.at..this.at + n]);
            this.at += n;
            if this.at == this.early.len() {
                this.early = Vec::new();
                this.at = 0;
            }
            return std::task::Poll::Ready(Ok(n));
        }
        std::pin::Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl futures_lite::AsyncWrite for Upgraded {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_close(cx)
    }
}

/// A connection to the target: TCP, and TLS over it for `wss://`.
async fn open(target: &Target) -> io::Result<Stream> {
    let tcp = TcpStream::connect(target.addr.as_str()).await?;
    let _ = tcp.set_nodelay(true);
    if !target.tls {
        return Ok(MaybeTls::Plain(tcp));
    }
    crate::tls::connect(&target.host, tcp)
        .await
        .map_err(io::Error::other)
}

/// The push connection's stream.
type Stream = MaybeTls<TcpStream>;

// ---------------------------------------------------------------------------
// The connection
// ---------------------------------------------------------------------------

/// What one read of the socket gave.
enum Incoming {
    Event(PushEvent),
    Ack(u64),
    Nothing,
}

/// A connected Socket.IO push socket. See the [module docs](self).
pub struct Push {
    ws: WebSocketStream<Upgraded>,
    sid: String,
    ping_interval: Duration,
    ping_timeout: Duration,
    /// The open packet or the last ping.
    last_ping: Instant,
    pong_owed: bool,
    pongs: u64,
    next_ack: u64,
    /// Events read while waiting for an ack.
    pending: VecDeque<PushEvent>,
    /// How long [`Push::join`] and [`Push::leave`] wait for their ack.
    ack_timeout: Duration,
    failed: bool,
}

impl fmt::Debug for Push {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Push")
            .field("sid", &self.sid)
            .field("ping_interval", &self.ping_interval)
            .field("ping_timeout", &self.ping_timeout)
            .field("pongs", &self.pongs)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl Push {
    /// Connects to the Socket.IO endpoint of the server at `base_url`
    /// (`http://host:port`, as for the REST API) over WebSocket and
    /// authenticates with `token` (the bare token, no `Bearer `).
    ///
    /// `timeout` bounds the whole connect (TCP, upgrade, open packet,
    /// CONNECT answer), and later each [`Push::join`] / [`Push::leave`].
    ///
    /// Errors: [`PushError::NoSocketIo`] for a server without Socket.IO,
    /// [`PushError::Refused`] for a refused token, [`PushError::Timeout`],
    /// and connection errors.
    pub async fn connect(base_url: &str, token: &str, timeout_after: Duration) -> Result<Push, PushError> {
        Push::connect_bounded(base_url, token, timeout_after, DEFAULT_MAX_MESSAGE).await
    }

    /// [`Push::connect`], with every WebSocket message (fragments summed)
    /// and frame bounded to `max_message` bytes: a larger one ends the
    /// connection with an error before more of it is buffered.
    pub async fn connect_bounded(
        base_url: &str,
        token: &str,
        timeout_after: Duration,
        max_message: usize,
    ) -> Result<Push, PushError> {
        let target = websocket_url(base_url)?;
        let started = Instant::now();
        let left = || timeout_after.saturating_sub(started.elapsed());
        let tcp = timeout(left(), open(&target))
            .await
            .map_err(|_| PushError::Timeout {
                waiting_for: "the connection",
            })?
            .map_err(PushError::Connect)?;
        let limits = async_tungstenite::tungstenite::protocol::WebSocketConfig::default()
            .max_message_size(Some(max_message))
            .max_frame_size(Some(max_message));
        let upgraded = timeout(left(), upgrade(&target, tcp))
            .await
            .map_err(|_| PushError::Timeout {
                waiting_for: "the WebSocket upgrade",
            })?;
        let stream = match upgraded {
            Ok(stream) => stream,
            // Refused upgrade: is there an Engine.IO endpoint at all?
            Err(PushError::Http { status }) => {
                let probed = timeout(left(), polling_status(&target)).await;
                return Err(match probed {
                    Ok(Ok(404)) => PushError::NoSocketIo,
                    _ => PushError::Http { status },
                });
            }
            Err(e) => return Err(e),
        };
        let mut ws = WebSocketStream::from_raw_socket(stream, Role::Client, Some(limits)).await;
        // The open packet (possibly after noops).
        let open = timeout(left(), async {
            loop {
                match read_text(&mut ws).await? {
                    Some(text) => match decode_engine(&text)? {
                        EnginePacket::Open(open) => return Ok(open),
                        EnginePacket::Ignored => continue,
                        EnginePacket::Close => return Err(PushError::Closed(CloseReason::EngineClose)),
                        _ => return Err(PushError::Protocol("no Engine.IO open packet".into())),
                    },
                    None => continue,
                }
            }
        })
        .await
        .map_err(|_| PushError::Timeout {
            waiting_for: "the Engine.IO open packet",
        })??;
        let mut push = Push {
            ws,
            sid: String::new(),
            ping_interval: Duration::from_millis(open.ping_interval),
            ping_timeout: Duration::from_millis(open.ping_timeout),
            last_ping: Instant::now(),
            pong_owed: false,
            pongs: 0,
            next_ack: 0,
            pending: VecDeque::new(),
            ack_timeout: timeout_after,
            failed: false,
        };
        trace(|| format!("Engine.IO open, ping every {} ms", open.ping_interval));
        // Not logged: it holds the token.
        push.send_text(encode_connect(token)).await?;
        let sid = timeout(left(), async {
            loop {
                match push.read_packet().await? {
                    Some(SocketPacket::Connect { sid }) => return Ok(sid),
                    Some(SocketPacket::ConnectError { message }) => {
                        return Err(PushError::Refused { message });
                    }
                    Some(SocketPacket::Disconnect) => {
                        return Err(PushError::Closed(CloseReason::ServerDisconnect));
                    }
                    _ => continue,
                }
            }
        })
        .await
        .map_err(|_| PushError::Timeout {
            waiting_for: "the Socket.IO CONNECT answer",
        })??;
        trace(|| "Socket.IO connected".to_owned());
        push.sid = sid;
        Ok(push)
    }

    /// The Socket.IO session id the server gave this socket.
    pub fn sid(&self) -> &str {
        &self.sid
    }

    /// The server's `pingInterval`.
    pub fn ping_interval(&self) -> Duration {
        self.ping_interval
    }

    /// The server's `pingTimeout`.
    pub fn ping_timeout(&self) -> Duration {
        self.ping_timeout
    }

    /// How many Engine.IO pings were answered so far.
    pub fn pongs_sent(&self) -> u64 {
        self.pongs
    }

    /// Joins the room of the job `job_name` (its full name,
    /// `@global:modifiers:Echo`) as worker `worker_id`: ZnDraw's
    /// `join_job_room`. Returns once the server acknowledged it, so a task
    /// submitted after this returns sends its event here. A task submitted
    /// before does not: claim after joining.
    ///
    /// Dropped before it returns, the join may or may not have reached the
    /// server (its late ack is ignored): join again.
    pub async fn join(&mut self, job_name: &str, worker_id: &str) -> Result<(), PushError> {
        self.room_call("join_job_room", job_name, worker_id).await
    }

    /// Leaves the room of `job_name`: ZnDraw's `leave_job_room`, acknowledged
    /// like [`Push::join`].
    pub async fn leave(&mut self, job_name: &str, worker_id: &str) -> Result<(), PushError> {
        self.room_call("leave_job_room", job_name, worker_id).await
    }

    async fn room_call(
        &mut self,
        event: &'static str,
        job_name: &str,
        worker_id: &str,
    ) -> Result<(), PushError> {
        self.check_alive()?;
        let id = self.next_ack;
        self.next_ack += 1;
        let frame = encode_room_event(event, id, job_name, worker_id);
        trace(|| {
            format!(
                "sent {event} for job {} as worker {} (ack {id})",
                excerpt(job_name),
                excerpt(worker_id)
            )
        });
        self.send_text(frame).await?;
        let waited = timeout(self.ack_timeout, async {
            loop {
                match self.recv().await? {
                    Incoming::Ack(got) if got == id => return Ok(()),
                    Incoming::Event(e) => self.pending.push_back(e),
                    _ => {}
                }
            }
        })
        .await;
        match waited {
            Ok(result) => result,
            Err(_) => Err(PushError::Timeout {
                waiting_for: "the server's acknowledgement of a job room call",
            }),
        }
    }

    /// The next event the server pushes, answering pings meanwhile.
    ///
    /// Errors when the connection ends: closed by the server (Socket.IO
    /// disconnect, Engine.IO close, WebSocket close, TCP end) or silent
    /// past `pingInterval + pingTimeout`. Once it returned an error, every
    /// later call returns [`CloseReason::AlreadyFailed`].
    pub async fn next(&mut self) -> Result<PushEvent, PushError> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Ok(event);
            }
            self.check_alive()?;
            if let Incoming::Event(event) = self.recv().await? {
                return Ok(event);
            }
        }
    }

    /// Disconnects cleanly: Socket.IO DISCONNECT, Engine.IO close, then the
    /// WebSocket close handshake, bounded by the connect timeout. Dropping a
    /// [`Push`] instead just closes the TCP connection.
    pub async fn close(mut self) -> Result<(), PushError> {
        self.check_alive()?;
        let bound = self.ack_timeout;
        let ws = &mut self.ws;
        let result = timeout(bound, async {
            ws.send(Message::text("41")).await.map_err(ws_error)?;
            ws.send(Message::text("1")).await.map_err(ws_error)?;
            ws.close(None).await.map_err(ws_error)?;
            // Until the server's close frame (or the end of the stream).
            while let Some(msg) = ws.next().await {
                match msg {
                    Ok(Message::Close(_)) => break,
                    Ok(_) => {}
                    Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => break,
                    Err(e) => return Err(ws_error(e)),
                }
            }
            Ok(())
        })
        .await;
        self.failed = true;
        match result {
            Ok(r) => r,
            Err(_) => Err(PushError::Timeout {
                waiting_for: "the server to close the WebSocket",
            }),
        }
    }

    fn check_alive(&self) -> Result<(), PushError> {
        if self.failed {
            Err(PushError::Closed(CloseReason::AlreadyFailed))
        } else {
            Ok(())
        }
    }

    async fn send_text(&mut self, text: String) -> Result<(), PushError> {
        self.flush_pong().await?;
        let sent = self.ws.send(Message::text(text)).await.map_err(ws_error);
        self.fail_on_err(sent)
    }

    /// Sends the pong for the last ping if it is still owed (the call that
    /// read the ping may have been dropped before it was out).
    async fn flush_pong(&mut self) -> Result<(), PushError> {
        if self.pong_owed {
            let sent = self.ws.send(Message::text("3")).await.map_err(ws_error);
            self.fail_on_err(sent)?;
            self.pong_owed = false;
            self.pongs += 1;
        }
        Ok(())
    }

    fn fail_on_err<T>(&mut self, r: Result<T, PushError>) -> Result<T, PushError> {
        if r.is_err() {
            self.failed = true;
        }
        r
    }

    /// One read: a Socket.IO packet, or `None` for Engine.IO traffic
    /// (pings are answered here).
    async fn read_packet(&mut self) -> Result<Option<SocketPacket>, PushError> {
        let r = self.read_packet_inner().await;
        self.fail_on_err(r)
    }

    async fn read_packet_inner(&mut self) -> Result<Option<SocketPacket>, PushError> {
        self.flush_pong().await?;
        let deadline = self.last_ping + self.ping_interval + self.ping_timeout;
        let left = deadline.saturating_duration_since(Instant::now());
        let text = match timeout(left, read_text(&mut self.ws)).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(PushError::PingTimeout {
                    silent_for: self.last_ping.elapsed(),
                });
            }
        };
        let Some(text) = text else { return Ok(None) };
        match decode_engine(&text)? {
            EnginePacket::Ping => {
                self.last_ping = Instant::now();
                self.pong_owed = true;
                self.flush_pong().await?;
                Ok(None)
            }
            EnginePacket::Close => Err(PushError::Closed(CloseReason::EngineClose)),
            EnginePacket::Message(m) => {
                let packet = decode_socket(m)?;
                match &packet {
                    SocketPacket::Connect { .. } => trace(|| "received the connect answer".to_owned()),
                    SocketPacket::Disconnect => trace(|| "received a disconnect".to_owned()),
                    SocketPacket::Ack { id } => trace(|| format!("received ack {id}")),
                    SocketPacket::ConnectError { message } => {
                        trace(|| format!("received a connect error: {}", excerpt(message)))
                    }
                    SocketPacket::Event { .. } | SocketPacket::Ignored => {}
                }
                Ok(Some(packet))
            }
            EnginePacket::Open(_) | EnginePacket::Pong | EnginePacket::Ignored => Ok(None),
        }
    }

    async fn recv(&mut self) -> Result<Incoming, PushError> {
        match self.read_packet().await? {
            Some(SocketPacket::Event { name, args }) => {
                if name == "task_available" {
                    if let Some(event) = task_available(&args) {
                        let PushEvent::TaskAvailable {
                            job_name,
                            room_id,
                            task_id,
                        } = &event;
                        trace(|| {
                            format!(
                                "task {} available for job {} in room {}",
                                excerpt(task_id),
                                excerpt(job_name),
                                excerpt(room_id)
                            )
                        });
                        return Ok(Incoming::Event(event));
                    }
                    crate::emit(&Event::PushMalformed);
                } else {
                    trace(|| format!("event {} skipped", excerpt(&name)));
                }
                Ok(Incoming::Nothing)
            }
            Some(SocketPacket::Ack { id }) => Ok(Incoming::Ack(id)),
            Some(SocketPacket::Disconnect) => {
                self.failed = true;
                Err(PushError::Closed(CloseReason::ServerDisconnect))
            }
            Some(
                SocketPacket::Connect { .. } | SocketPacket::ConnectError { .. } | SocketPacket::Ignored,
            )
            | None => Ok(Incoming::Nothing),
        }
    }
}

/// The next text frame, `None` for other frames (WebSocket pings are
/// answered by tungstenite), an error for the end of the connection.
async fn read_text(ws: &mut WebSocketStream<Upgraded>) -> Result<Option<String>, PushError> {
    match ws.next().await {
        None => Err(PushError::Closed(CloseReason::Reset)),
        Some(Err(e)) => Err(ws_error(e)),
        Some(Ok(Message::Text(t))) => Ok(Some(t.as_str().to_owned())),
        Some(Ok(Message::Close(frame))) => Err(PushError::Closed(CloseReason::WebSocket {
            code: frame.map_or(1005, |f| u16::from(f.code)),
        })),
        Some(Ok(_)) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_packets() {
        let open = r#"0{"sid":"3IBOjaWGM-5nBEcOAAAA","upgrades":[],"pingTimeout":20000,"pingInterval":25000,"maxPayload":1000000}"#;
        assert_eq!(
            decode_engine(open).unwrap(),
            EnginePacket::Open(OpenInfo {
                sid: "3IBOjaWGM-5nBEcOAAAA".into(),
                ping_interval: 25000,
                ping_timeout: 20000,
            })
        );
        assert_eq!(decode_engine("1").unwrap(), EnginePacket::Close);
        assert_eq!(decode_engine("2").unwrap(), EnginePacket::Ping);
        assert_eq!(decode_engine("3").unwrap(), EnginePacket::Pong);
        assert_eq!(decode_engine("40").unwrap(), EnginePacket::Message("0"));
        assert_eq!(decode_engine("5").unwrap(), EnginePacket::Ignored);
        assert_eq!(decode_engine("6").unwrap(), EnginePacket::Ignored);
        assert!(matches!(decode_engine(""), Err(PushError::Protocol(_))));
        assert!(matches!(decode_engine("x"), Err(PushError::Protocol(_))));
        assert!(matches!(decode_engine("0{}"), Err(PushError::Protocol(_))));
    }

    #[test]
    fn socket_packets_as_the_server_sends_them() {
        assert_eq!(
            decode_socket(r#"0{"sid":"1H-D_qJ2Yb-2ZMTsAAAC"}"#).unwrap(),
            SocketPacket::Connect {
                sid: "1H-D_qJ2Yb-2ZMTsAAAC".into()
            }
        );
        assert_eq!(
            decode_socket(r#"4{"message":"Connection refused by server"}"#).unwrap(),
            SocketPacket::ConnectError {
                message: "Connection refused by server".into()
            }
        );
        assert_eq!(decode_socket("1").unwrap(), SocketPacket::Disconnect);
        assert_eq!(decode_socket("31[]").unwrap(), SocketPacket::Ack { id: 1 });
        assert_eq!(decode_socket("3/,17[]").unwrap(), SocketPacket::Ack { id: 17 });
        let event = r#"2["task_available",{"job_name":"@global:modifiers:Echo","room_id":"room1","task_id":"08440a9b-099c-42a4-b424-9c97fbf142bf"}]"#;
        let SocketPacket::Event { name, args } = decode_socket(event).unwrap() else {
            panic!("not an event")
        };
        assert_eq!(name, "task_available");
        assert_eq!(
            task_available(&args),
            Some(PushEvent::TaskAvailable {
                job_name: "@global:modifiers:Echo".into(),
                room_id: "room1".into(),
                task_id: "08440a9b-099c-42a4-b424-9c97fbf142bf".into(),
            })
        );
        // An event asking for an ack, on the default namespace written out.
        assert!(matches!(
            decode_socket(r#"2/,5["other",1]"#).unwrap(),
            SocketPacket::Event { name, .. } if name == "other"
        ));
        // Other namespaces and binary packets are skipped.
        assert_eq!(decode_socket(r#"2/admin,["x"]"#).unwrap(), SocketPacket::Ignored);
        assert_eq!(
            decode_socket(r#"51-["x",{"_placeholder":true,"num":0}]"#).unwrap(),
            SocketPacket::Ignored
        );
        assert!(task_available(&[serde_json::json!({"job_name": "j"})]).is_none());
    }

    #[test]
    fn malformed_socket_packets_are_protocol_errors() {
        for bad in [
            "",
            "2",
            "2{}",
            "2[]",
            "2[1]",
            "3[]",
            "0{}",
            "2[\"x\"",
            "9",
            "399999999999999999999999[]",
        ] {
            assert!(
                matches!(decode_socket(bad), Err(PushError::Protocol(_))),
                "{bad:?} was accepted"
            );
        }
    }

    #[test]
    fn outgoing_frames() {
        assert_eq!(encode_connect("tok"), r#"40{"token":"tok"}"#);
        // JSON-escaped, never spliced raw.
        assert_eq!(encode_connect("a\"b"), r#"40{"token":"a\"b"}"#);
        assert_eq!(
            encode_room_event("join_job_room", 3, "@global:modifiers:Echo", "cba43e58"),
            r#"423["join_job_room",{"job_name":"@global:modifiers:Echo","worker_id":"cba43e58"}]"#
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: outage_core::fuzz::cases(std::env::var("OUTAGE_FUZZ_CASES").ok().as_deref(), 2_000), ..Default::default() })]

        /// The core's `Sec-WebSocket-Accept` (its SHA-1 and base64) is
        /// tungstenite's, for any nonce and any key text.
        #[test]
        fn websocket_keys_are_accepted_as_tungstenite_accepts_them(
            nonce in proptest::prelude::any::<[u8; 16]>(),
            text in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
        ) {
            use async_tungstenite::tungstenite::handshake::derive_accept_key;
            use outage_core::wire::websocket::{accept, key};
            let k = key(nonce);
            proptest::prop_assert_eq!(accept(&k).to_vec(), derive_accept_key(&k).into_bytes());
            proptest::prop_assert_eq!(accept(&text).to_vec(), derive_accept_key(&text).into_bytes());
        }
    }

    #[test]
    fn urls() {
        let ws = |u: &str| websocket_url(u).map_err(|e| e.to_string());
        assert_eq!(
            ws("http://127.0.0.1:8765").unwrap(),
            Target {
                tls: false,
                host: "127.0.0.1".into(),
                addr: "127.0.0.1:8765".into(),
                authority: "127.0.0.1:8765".into(),
                polling_path: "/socket.io/?EIO=4&transport=polling".into(),
                ws_path: "/socket.io/?EIO=4&transport=websocket".into(),
            }
        );
        assert_eq!(
            ws("http://example.invalid/zndraw/").unwrap(),
            Target {
                tls: false,
                host: "example.invalid".into(),
                addr: "example.invalid:80".into(),
                authority: "example.invalid".into(),
                polling_path: "/zndraw/socket.io/?EIO=4&transport=polling".into(),
                ws_path: "/zndraw/socket.io/?EIO=4&transport=websocket".into(),
            }
        );
        assert_eq!(ws("http://[::1]:9").unwrap().addr, "[::1]:9");
        assert_eq!(ws("http://[::1]").unwrap().addr, "[::1]:80");
        // https: wss, on 443 unless told, the host alone for TLS.
        let t = ws("https://zndraw.example/p").unwrap();
        assert_eq!(t.ws_path, "/p/socket.io/?EIO=4&transport=websocket");
        assert_eq!(
            (t.tls, t.host.as_str(), t.addr.as_str()),
            (true, "zndraw.example", "zndraw.example:443")
        );
        let t = ws("https://[::1]:8443").unwrap();
        assert_eq!((t.host.as_str(), t.addr.as_str()), ("::1", "[::1]:8443"));
        assert!(ws("ftp://h").is_err());
        assert!(ws("http://").is_err());
        assert!(ws("http://u:p@h:1").is_err());
        assert!(ws("http://h:1/?x=1").is_err());
        for bad in ["http://h/a b", "http://h/a\r\nX: 1", "http://h\n/", "http://h/\0"] {
            assert!(
                matches!(websocket_url(bad), Err(PushError::InvalidUrl(_))),
                "{bad:?}"
            );
        }
    }

    // -- against a scripted server on loopback ---------------------------

    use async_std::net::TcpListener;
    use async_std::task;
    use async_tungstenite::tungstenite::protocol::CloseFrame;
    use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

    type Ws = WebSocketStream<TcpStream>;

    const TOKEN: &str = "s3cret-token";

    fn open(interval_ms: u64, timeout_ms: u64) -> String {
        format!(
            r#"0{{"sid":"E","upgrades":[],"pingTimeout":{timeout_ms},"pingInterval":{interval_ms},"maxPayload":1000000}}"#
        )
    }

    /// One WebSocket connection served by `script`; returns the base URL.
    async fn fake_server<F, Fut>(script: F) -> (String, task::JoinHandle<()>)
    where
        F: FnOnce(Ws) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let handle = task::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let ws = async_tungstenite::accept_async(tcp).await.unwrap();
            script(ws).await;
        });
        (url, handle)
    }

    async fn send(ws: &mut Ws, text: &str) {
        ws.send(Message::text(text.to_owned())).await.unwrap();
    }

    async fn expect(ws: &mut Ws, want: &str) {
        let got = timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a frame in 10 s");
        match got {
            Some(Ok(Message::Text(t))) => assert_eq!(t.as_str(), want),
            other => panic!("expected {want:?}, got {other:?}"),
        }
    }

    /// Open, the CONNECT with the token, and its acceptance.
    async fn handshake(ws: &mut Ws, interval_ms: u64, timeout_ms: u64) {
        send(ws, &open(interval_ms, timeout_ms)).await;
        expect(ws, &format!(r#"40{{"token":"{TOKEN}"}}"#)).await;
        send(ws, r#"40{"sid":"S1"}"#).await;
    }

    const EVENT: &str =
        r#"42["task_available",{"job_name":"@global:modifiers:Echo","room_id":"r","task_id":"t1"}]"#;

    fn event() -> PushEvent {
        PushEvent::TaskAvailable {
            job_name: "@global:modifiers:Echo".into(),
            room_id: "r".into(),
            task_id: "t1".into(),
        }
    }

    #[test]
    fn session_join_event_ping_and_server_disconnect() {
        task::block_on(async {
            let (url, server) = fake_server(|mut ws| async move {
                handshake(&mut ws, 25_000, 20_000).await;
                expect(
                    &mut ws,
                    r#"420["join_job_room",{"job_name":"@global:modifiers:Echo","worker_id":"w1"}]"#,
                )
                .await;
                // An event before the ack: kept for next().
                send(&mut ws, EVENT).await;
                send(&mut ws, "6").await;
                send(&mut ws, r#"42["jobs_invalidate",{}]"#).await;
                send(&mut ws, "430[]").await;
                // Read by the client while it waits for the leave's ack.
                send(&mut ws, "2").await;
                expect(
                    &mut ws,
                    r#"421["leave_job_room",{"job_name":"@global:modifiers:Echo","worker_id":"w1"}]"#,
                )
                .await;
                expect(&mut ws, "3").await;
                send(&mut ws, "431[]").await;
                send(&mut ws, "41").await;
                let _ = timeout(Duration::from_secs(5), ws.next()).await;
            })
            .await;
            let mut push = Push::connect(&url, TOKEN, Duration::from_secs(10)).await.unwrap();
            assert_eq!(push.sid(), "S1");
            assert_eq!(push.ping_interval(), Duration::from_secs(25));
            assert_eq!(push.ping_timeout(), Duration::from_secs(20));
            let shown = format!("{push:?}");
            assert!(!shown.contains(TOKEN), "{shown}");
            push.join("@global:modifiers:Echo", "w1").await.unwrap();
            assert_eq!(push.next().await.unwrap(), event());
            // The ping is answered while leave() waits for its ack.
            push.leave("@global:modifiers:Echo", "w1").await.unwrap();
            assert_eq!(push.pongs_sent(), 1);
            let err = push.next().await.unwrap_err();
            assert!(
                matches!(err, PushError::Closed(CloseReason::ServerDisconnect)),
                "{err}"
            );
            let again = push.next().await.unwrap_err();
            assert!(
                matches!(again, PushError::Closed(CloseReason::AlreadyFailed)),
                "{again}"
            );
            drop(push);
            server.await;
        });
    }

    #[test]
    fn a_refused_token_is_its_own_error() {
        task::block_on(async {
            let (url, server) = fake_server(|mut ws| async move {
                send(&mut ws, &open(25_000, 20_000)).await;
                expect(&mut ws, r#"40{"token":"wrong"}"#).await;
                send(&mut ws, r#"44{"message":"Connection refused by server"}"#).await;
                let _ = timeout(Duration::from_secs(5), ws.next()).await;
            })
            .await;
            let err = Push::connect(&url, "wrong", Duration::from_secs(10))
                .await
                .unwrap_err();
            match &err {
                PushError::Refused { message } => assert_eq!(message, "Connection refused by server"),
                other => panic!("{other}"),
            }
            assert!(!format!("{err} {err:?}").contains("wrong"));
            drop(err);
            server.await;
        });
    }

    #[test]
    fn a_silent_server_is_a_ping_timeout_within_its_bound() {
        task::block_on(async {
            let (url, server) = fake_server(|mut ws| async move {
                handshake(&mut ws, 200, 200).await;
                // Silent, socket open, until the client goes.
                let _ = timeout(Duration::from_secs(10), ws.next()).await;
            })
            .await;
            let mut push = Push::connect(&url, TOKEN, Duration::from_secs(10)).await.unwrap();
            let started = Instant::now();
            let err = push.next().await.unwrap_err();
            let took = started.elapsed();
            assert!(matches!(err, PushError::PingTimeout { .. }), "{err}");
            assert!(took < Duration::from_secs(3), "{took:?}");
            drop(push);
            server.await;
        });
    }

    #[test]
    fn a_websocket_close_is_closed_with_its_code() {
        task::block_on(async {
            let (url, server) = fake_server(|mut ws| async move {
                handshake(&mut ws, 25_000, 20_000).await;
                ws.close(Some(CloseFrame {
                    code: CloseCode::Restart,
                    reason: "".into(),
                }))
                .await
                .unwrap();
                let _ = timeout(Duration::from_secs(5), ws.next()).await;
            })
            .await;
            let mut push = Push::connect(&url, TOKEN, Duration::from_secs(10)).await.unwrap();
            let err = push.next().await.unwrap_err();
            assert!(
                matches!(err, PushError::Closed(CloseReason::WebSocket { code: 1012 })),
                "{err}"
            );
            drop(push);
            server.await;
        });
    }

    #[test]
    fn next_dropped_at_any_point_keeps_the_session_alive() {
        // Pings every 50 ms, 300 ms to answer each; the client only ever
        // runs next() for 1–20 ms before dropping it. 20 pings answered,
        // then an event still arrives whole.
        task::block_on(async {
            let (url, server) = fake_server(|mut ws| async move {
                handshake(&mut ws, 50, 300).await;
                for _ in 0..20 {
                    task::sleep(Duration::from_millis(50)).await;
                    send(&mut ws, "2").await;
                    expect(&mut ws, "3").await;
                }
                send(&mut ws, EVENT).await;
                let _ = timeout(Duration::from_secs(10), ws.next()).await;
            })
            .await;
            let mut push = Push::connect(&url, TOKEN, Duration::from_secs(10)).await.unwrap();
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut cut = 0u64;
            let got = loop {
                assert!(Instant::now() < deadline, "no event in 30 s");
                cut = cut % 20 + 1;
                if let Ok(r) = timeout(Duration::from_millis(cut), push.next()).await {
                    break r;
                }
            };
            assert_eq!(got.unwrap(), event());
            assert_eq!(push.pongs_sent(), 20);
            drop(push);
            server.await;
        });
    }

    /// Writes each piece on its own, a pause after each: a client reads
    /// them apart.
    async fn write_apart(tcp: &mut TcpStream, pieces: &[&[u8]]) {
        use async_std::io::WriteExt;
        for piece in pieces {
            tcp.write_all(piece).await.unwrap();
            tcp.flush().await.unwrap();
            task::sleep(Duration::from_millis(30)).await;
        }
    }

    /// A request's head, read from `tcp`.
    async fn read_head(tcp: &mut TcpStream) -> String {
        use async_std::io::ReadExt;
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        // Byte by byte: nothing after the head is taken.
        while !head.ends_with(b"\r\n\r\n") {
            let n = tcp.read(&mut byte).await.unwrap();
            assert!(n > 0, "request cut short");
            head.push(byte[0]);
        }
        String::from_utf8(head).unwrap()
    }

    /// An interim `100`, then a `101` split inside a header line, then the
    /// server's first frame in the `101`'s last packet: the upgrade reads
    /// through all of it and the session starts.
    #[test]
    fn an_interim_head_and_a_101_over_several_reads() {
        task::block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}", listener.local_addr().unwrap());
            let server = task::spawn(async move {
                let (mut tcp, _) = listener.accept().await.unwrap();
                let head = read_head(&mut tcp).await;
                let key = head
                    .lines()
                    .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
                    .expect("a key");
                let accept = outage_core::wire::websocket::accept(key.as_bytes());
                let switched = format!(
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
                    std::str::from_utf8(&accept).unwrap()
                );
                let open = open(25_000, 20_000);
                // The open packet as an unmasked text frame (< 126 bytes).
                let mut frame = vec![0x81, u8::try_from(open.len()).unwrap()];
                frame.extend_from_slice(open.as_bytes());
                let (first, last) = switched.as_bytes().split_at(40);
                let last = [last, &frame].concat();
                write_apart(&mut tcp, &[b"HTTP/1.1 100 Continue\r\n\r\n", first, &last]).await;
                let mut ws = WebSocketStream::from_raw_socket(tcp, Role::Server, None).await;
                expect(&mut ws, &format!(r#"40{{"token":"{TOKEN}"}}"#)).await;
                send(&mut ws, r#"40{"sid":"S1"}"#).await;
                send(&mut ws, "41").await;
                let _ = timeout(Duration::from_secs(5), ws.next()).await;
            });
            let mut push = Push::connect(&url, TOKEN, Duration::from_secs(10)).await.unwrap();
            assert_eq!(push.sid(), "S1");
            assert_eq!(push.ping_interval(), Duration::from_secs(25));
            let err = push.next().await.unwrap_err();
            assert!(
                matches!(err, PushError::Closed(CloseReason::ServerDisconnect)),
                "{err}"
            );
            drop(push);
            server.await;
        });
    }

    /// An upgrade answered with `reply`, then the connection closed: a
    /// connection that ends inside the head is closed, not a protocol
    /// error; an answer that is not HTTP is one, told in words.
    #[test]
    fn an_upgrade_cut_short_or_not_http_is_told_apart() {
        task::block_on(async {
            for (reply, closed) in [
                (&b""[..], true),
                (b"HTTP/1.1 10", true),
                (
                    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n",
                    true,
                ),
                (b"SSH-2.0-OpenSSH_9.6\r\n\r\n", false),
                (
                    b"HTTP/1.1 101 Switching Protocols\r\nBad Header: x\r\n\r\n",
                    false,
                ),
            ] {
                let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
                let url = format!("http://{}", listener.local_addr().unwrap());
                let server = task::spawn(async move {
                    use async_std::io::WriteExt;
                    let (mut tcp, _) = listener.accept().await.unwrap();
                    read_head(&mut tcp).await;
                    tcp.write_all(reply).await.unwrap();
                });
                let err = Push::connect(&url, TOKEN, Duration::from_secs(10))
                    .await
                    .unwrap_err();
                server.await;
                let shown = err.to_string();
                if closed {
                    assert!(
                        matches!(err, PushError::Closed(CloseReason::Reset)),
                        "{reply:?}: {shown}"
                    );
                } else {
                    assert!(matches!(err, PushError::Protocol(_)), "{reply:?}: {shown}");
                    assert!(shown.contains("Malformed response"), "{shown}");
                }
            }
        });
    }

    /// A plain HTTP server answering each of its connections in turn with
    /// one of `statuses`; returns the base URL and, at the end, the request
    /// lines it saw.
    async fn http_server(statuses: &'static [u16]) -> (String, task::JoinHandle<Vec<String>>) {
        use async_std::io::ReadExt;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let handle = task::spawn(async move {
            let mut seen = Vec::new();
            for status in statuses {
                let (mut tcp, _) = listener.accept().await.unwrap();
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = tcp.read(&mut buf).await.unwrap();
                    assert!(n > 0, "request cut short");
                    head.extend_from_slice(&buf[..n]);
                }
                let head = String::from_utf8(head).unwrap();
                seen.push(head.lines().next().unwrap().to_owned());
                let body = r#"{"detail":"Not Found"}"#;
                let reply = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                // An interim head first, then the answer over two reads.
                write_apart(
                    &mut tcp,
                    &[
                        b"HTTP/1.1 100 Continue\r\n\r\n",
                        // Past the interim head's length: a reader that
                        // lost its place would not find it again by chance.
                        &reply.as_bytes()[..40],
                        &reply.as_bytes()[40..],
                    ],
                )
                .await;
            }
            seen
        });
        (url, handle)
    }

    #[test]
    fn a_refused_upgrade_and_no_engine_io_means_no_socket_io() {
        task::block_on(async {
            // Starlette's answer to an upgrade without a WebSocket route is
            // 403; the polling probe's 404 tells there is no Socket.IO.
            let (url, server) = http_server(&[403, 404]).await;
            let err = Push::connect(&url, TOKEN, Duration::from_secs(10))
                .await
                .unwrap_err();
            assert!(matches!(err, PushError::NoSocketIo), "{err}");
            let seen = server.await;
            assert_eq!(seen[0], "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1");
            assert_eq!(seen[1], "GET /socket.io/?EIO=4&transport=polling HTTP/1.1");

            // A 404 for the upgrade needs no probe.
            let (url, server) = http_server(&[404]).await;
            let err = Push::connect(&url, TOKEN, Duration::from_secs(10))
                .await
                .unwrap_err();
            assert!(matches!(err, PushError::NoSocketIo), "{err}");
            assert_eq!(server.await.len(), 1);

            // Engine.IO answers polling: the upgrade's status is the error.
            let (url, server) = http_server(&[403, 200]).await;
            let err = Push::connect(&url, TOKEN, Duration::from_secs(10))
                .await
                .unwrap_err();
            assert!(matches!(err, PushError::Http { status: 403 }), "{err}");
            server.await;
        });
    }

    #[test]
    fn nothing_listening_is_a_connect_error() {
        task::block_on(async {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let err = Push::connect(
                &format!("http://127.0.0.1:{port}"),
                TOKEN,
                Duration::from_secs(10),
            )
            .await
            .unwrap_err();
            assert!(matches!(err, PushError::Connect(_)), "{err}");
        });
    }

    /// A message larger than the bound — here sent in fragments, as a
    /// flood could — ends the connection with an error once the bound is
    /// passed; it is not buffered whole.
    #[test]
    fn messages_past_the_bound_end_the_connection() {
        use async_tungstenite::tungstenite::protocol::frame::Frame;
        use async_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
        task::block_on(async {
            let (url, server) = fake_server(|mut ws| async move {
                handshake(&mut ws, 25_000, 20_000).await;
                // 64 fragments of 16 KiB: 1 MiB in one message.
                let chunk = "x".repeat(16 << 10);
                for i in 0..64 {
                    let (opcode, last) = match i {
                        0 => (OpCode::Data(Data::Text), false),
                        63 => (OpCode::Data(Data::Continue), true),
                        _ => (OpCode::Data(Data::Continue), false),
                    };
                    let text = if i == 0 {
                        format!("4{chunk}")
                    } else {
                        chunk.clone()
                    };
                    let frame = Frame::message(text, opcode, last);
                    if ws.send(Message::Frame(frame)).await.is_err() {
                        return; // the client has gone: good
                    }
                }
                let _ = timeout(Duration::from_secs(5), ws.next()).await;
            })
            .await;
            let mut push = Push::connect_bounded(&url, TOKEN, Duration::from_secs(10), 64 << 10)
                .await
                .unwrap();
            let err = timeout(Duration::from_secs(10), push.next())
                .await
                .expect("an answer in 10 s")
                .unwrap_err();
            assert!(err.to_string().contains("too long"), "{err}");
            drop(push);
            let _ = timeout(Duration::from_secs(10), server).await;
        });
    }

    #[test]
    fn errors_display_cleanly() {
        let e = PushError::Refused {
            message: "Connection refused by server".into(),
        };
        assert_eq!(
            e.to_string(),
            "the server refused the Socket.IO connection (token?): Connection refused by server"
        );
        assert!(PushError::NoSocketIo.to_string().contains("no Socket.IO"));
        assert_eq!(
            PushError::Closed(CloseReason::WebSocket { code: 1012 }).to_string(),
            "push connection closed: the server closed the WebSocket (code 1012)"
        );
        let long = "x".repeat(500);
        let SocketPacket::ConnectError { message } =
            decode_socket(&format!("4{{\"message\":\"{long}\"}}")).unwrap()
        else {
            panic!()
        };
        assert_eq!(message.len(), 200);
    }
}
