//! One HTTP/1.1 exchange of our own over embedded-nal-async, every failure
//! turned into the core's [`Failure`] here, once.
//!
//! Why not reqwless (used before): measured on the nRF52840 example, it
//! cost 24.8 KB more flash and 1.8 KB more RAM than the first version of
//! this module (its URL parser, base64, `core::fmt` for the request line and
//! headers, larger futures), and it needs the bearer header as one string,
//! a copy of the token in the worker. Why not `httparse` for the head
//! (used by that first version): the worker reads three headers, and a
//! parser of its own is 1 KB smaller. The worker needs little of HTTP: one
//! request per connection, a fixed set of headers, `Content-Length`,
//! chunked or close-delimited bodies read into the caller's buffer. Here
//! the request is gathered by hand (no `core::fmt`) in the caller's receive
//! buffer, written out whenever that is full, and the same buffer then
//! receives the response, read by one loop over a synchronous state
//! machine ([`Response::step`]).

use core::net::{IpAddr, Ipv4Addr, SocketAddr};
use core::ops::Range;

use embedded_io_async::{Read, Write};
use embedded_nal_async::{AddrType, Dns, TcpConnect};
use outage_core::protocol::{API_PREFIX, Method, Route};
use outage_core::{Duration, Failure, Transport, parse_retry_after};

/// A response: its status, `Retry-After`, and where its body lies in the
/// caller's receive buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    /// The body's bytes in the receive buffer.
    pub body: Range<usize>,
    /// Status code.
    pub status: u16,
    /// `Retry-After` in delta-seconds.
    pub retry_after: Option<Duration>,
}

/// Where the server is: `http://host[:port][/base]`, taken apart once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Server<'a> {
    /// `host[:port]`, for the `Host` header.
    pub authority: &'a str,
    /// The host name (or IPv4 literal).
    pub host: &'a str,
    /// The IPv4 literal, if the host is one (no name lookup then).
    pub ip: Option<Ipv4Addr>,
    /// TCP port (80 by default).
    pub port: u16,
    /// A path the API lies under, without a trailing slash (usually empty).
    pub base: &'a str,
}

impl<'a> Server<'a> {
    /// Parse `http://host[:port][/base]`; `None` if it is not one.
    pub fn parse(url: &'a str) -> Option<Server<'a>> {
        let rest = url.strip_prefix("http://")?.trim_end_matches('/');
        let (authority, base) = match rest.find('/') {
            // Checked: a panicking `split_at` costs 270 bytes of flash.
            Some(i) => rest.split_at_checked(i)?,
            None => (rest, ""),
        };
        let (host, port) = match authority.rsplit_once(':') {
            // Port 0 is no server's: refused like any other bad port.
            Some((host, port)) => (
                host,
                number(port.as_bytes()).filter(|p| (1..=0xFFFF).contains(p))? as u16,
            ),
            None => (authority, 80),
        };
        if host.is_empty()
            || base
                .bytes()
                .any(|b| !b.is_ascii_graphic() || b == b'?' || b == b'#')
        {
            return None;
        }
        Some(Server {
            authority,
            host,
            ip: ipv4(host),
            port,
            base,
        })
    }
}

/// A decimal number of at most 9 digits (no sign).
fn number(digits: &[u8]) -> Option<u32> {
    if digits.is_empty() || digits.len() > 9 {
        return None;
    }
    digits.iter().try_fold(0u32, |n, &d| {
        d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0'))
    })
}

/// A dotted-quad IPv4 literal.
fn ipv4(host: &str) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut parts = host.split('.');
    for o in octets.iter_mut() {
        let n = number(parts.next()?.as_bytes())?;
        *o = u8::try_from(n).ok()?;
    }
    parts.next().is_none().then_some(Ipv4Addr::from(octets))
}

fn kind(k: embedded_io::ErrorKind) -> Transport {
    use embedded_io::ErrorKind::*;
    match k {
        ConnectionRefused => Transport::ConnectionRefused,
        ConnectionReset | ConnectionAborted => Transport::ConnectionReset,
        BrokenPipe | NotConnected => Transport::ConnectionClosed,
        TimedOut => Transport::Timeout,
        _ => Transport::Network,
    }
}

fn fail(t: Transport) -> Failure {
    Failure::Transport(t)
}

/// Writes `route`'s path (after `base` and the API prefix) into `out`,
/// percent-encoding all but RFC 3986 `pchar`s, as `Route`'s `Display` does
/// (a test holds the two together). `None` if it does not fit.
pub fn write_path(out: &mut [u8], base: &str, route: &Route<'_>) -> Option<usize> {
    let mut n = 0;
    let mut raw = |out: &mut [u8], b: &[u8]| -> Option<()> {
        out.get_mut(n..n + b.len())?.copy_from_slice(b);
        n += b.len();
        Some(())
    };
    raw(out, base.as_bytes())?;
    raw(out, API_PREFIX.as_bytes())?;
    let (first, a, second, b): (&str, &str, &str, &str) = match *route {
        Route::CreateWorker => ("/workers", "", "", ""),
        Route::RegisterJob { room } => ("/rooms/", room, "/jobs", ""),
        Route::Claim => ("/tasks/claim", "", "", ""),
        Route::TaskStatus { task_id } | Route::GetTask { task_id } => ("/tasks/", task_id, "", ""),
        Route::Heartbeat { worker_id } | Route::Disconnect { worker_id } => ("/workers/", worker_id, "", ""),
        Route::Submit { room, job } => ("/rooms/", room, "/tasks/", job),
    };
    for (fixed, segment) in [(first, a), (second, b)] {
        raw(out, fixed.as_bytes())?;
        for &c in segment.as_bytes() {
            if c.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(&c) {
                raw(out, &[c])?;
            } else {
                const HEX: &[u8; 16] = b"0123456789ABCDEF";
                raw(out, &[b'%', HEX[usize::from(c >> 4)], HEX[usize::from(c & 15)]])?;
            }
        }
    }
    Some(n)
}

/// Decimal digits of `n`, in the tail of `buf`.
pub(crate) fn decimal(mut n: usize, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

/// Where a request's bearer token comes from.
#[derive(Clone, Copy)]
pub enum Bearer<'r> {
    /// A fixed token, the caller's.
    Fixed(&'r str),
    /// The token of the worker's last login (feature `login`), read under
    /// its lock each time a piece of the request is gathered: a login in the
    /// other loop may replace it between two pieces, and the request then
    /// goes with a token the server refuses (401), which the core sends
    /// again (it started before the renewal).
    #[cfg(feature = "login")]
    Stored(&'r crate::login::SharedToken),
}

impl Bearer<'_> {
    /// `f` of the token.
    fn with<R>(self, f: impl FnOnce(&str) -> R) -> R {
        match self {
            Bearer::Fixed(token) => f(token),
            #[cfg(feature = "login")]
            Bearer::Stored(store) => store.lock(|t| f(t.borrow().as_str())),
        }
    }
}

/// What a request is: the method, the server, the route, the token and the
/// body.
pub struct Request<'r> {
    /// Where to.
    pub server: &'r Server<'r>,
    /// What.
    pub route: Route<'r>,
    /// Bearer token.
    pub token: Bearer<'r>,
    /// JSON body.
    pub body: Option<&'r [u8]>,
}

/// Send one request to `ip` and read its response into `rx` (which also
/// gathers the request on its way out), on a connection of its own;
/// `connected` is set once the connection is up (before that, nothing was
/// sent: a caller's timeout then is [`Transport::ConnectTimeout`]).
pub async fn exchange<T: TcpConnect>(
    tcp: &T,
    ip: IpAddr,
    req: &Request<'_>,
    rx: &mut [u8],
    connected: &core::cell::Cell<bool>,
) -> Result<Exchange, Failure> {
    let mut conn = connect(tcp, ip, req.server.port).await?;
    connected.set(true);
    on_connection(&mut conn, req, rx).await
}

/// A connection of its own to `ip`, `port`. Its failures all mean nothing
/// was sent ([`Failure::connect_failed`]).
pub(crate) async fn connect<T: TcpConnect>(
    tcp: &T,
    ip: IpAddr,
    port: u16,
) -> Result<T::Connection<'_>, Failure> {
    tcp.connect(SocketAddr::new(ip, port)).await.map_err(|e| {
        let kind = embedded_io::Error::kind(&e);
        Failure::connect_failed(
            kind == embedded_io::ErrorKind::ConnectionRefused,
            kind == embedded_io::ErrorKind::TimedOut,
        )
    })
}

/// Name lookups for a device without them (embassy-net without `dns`):
/// the server URL must then hold an IPv4 literal; a host name fails every
/// request as a failed lookup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NoDns;

impl Dns for NoDns {
    type Error = NoDns;

    async fn get_host_by_name(&self, _: &str, _: AddrType) -> Result<IpAddr, NoDns> {
        Err(NoDns)
    }

    async fn get_host_by_address(&self, _: IpAddr, _: &mut [u8]) -> Result<usize, NoDns> {
        Err(NoDns)
    }
}

/// The server's address: its IPv4 literal, or a name lookup.
pub async fn resolve<D: Dns>(dns: &D, server: &Server<'_>) -> Result<IpAddr, Failure> {
    match server.ip {
        Some(ip) => Ok(IpAddr::V4(ip)),
        None => dns
            .get_host_by_name(server.host, AddrType::Either)
            .await
            .map_err(|_| fail(Transport::Dns)),
    }
}

/// The exchange on an open connection (a test drives it with a fake one).
pub async fn on_connection<C: Read + Write>(
    conn: &mut C,
    req: &Request<'_>,
    rx: &mut [u8],
) -> Result<Exchange, Failure> {
    send(conn, req, rx).await?;
    receive(conn, rx).await
}

async fn send<C: Write>(conn: &mut C, req: &Request<'_>, rx: &mut [u8]) -> Result<(), Failure> {
    // Where the next bytes come from: (piece, offset in it); `None` before
    // the request line.
    let mut next = None;
    loop {
        let (n, done) = req.token.with(|token| gather(req, token, rx, &mut next))?;
        // Failing before all of it is written, the server cannot act on it.
        if conn.write_all(&rx[..n]).await.is_err() {
            return Err(fail(Transport::SendFailed));
        }
        if done {
            break;
        }
    }
    // Written in full (into the stack's buffers): the server may see it all.
    conn.flush()
        .await
        .map_err(|e| fail(kind(embedded_io::Error::kind(&e))))
}

/// Writes `pieces` one after the other and flushes, with the failures of
/// [`on_connection`]'s sending (for the login, whose request is not a
/// [`Request`]).
#[cfg(feature = "login")]
pub(crate) async fn send_pieces<C: Write>(conn: &mut C, pieces: &[&[u8]]) -> Result<(), Failure> {
    for piece in pieces {
        if conn.write_all(piece).await.is_err() {
            return Err(fail(Transport::SendFailed));
        }
    }
    conn.flush()
        .await
        .map_err(|e| fail(kind(embedded_io::Error::kind(&e))))
}

/// Fills `rx` with the request from `next` on: how many bytes, and whether
/// that is the end of it.
fn gather(
    req: &Request<'_>,
    token: &str,
    rx: &mut [u8],
    next: &mut Option<(usize, usize)>,
) -> Result<(usize, bool), Failure> {
    let method = req.route.method();
    let mut n = 0;
    let (mut piece, mut offset) = match *next {
        Some(at) => at,
        None => {
            let name: &[u8] = match method {
                Method::Get => b"GET ",
                Method::Post => b"POST ",
                Method::Put => b"PUT ",
                Method::Patch => b"PATCH ",
                Method::Delete => b"DELETE ",
            };
            // The request line must fit the receive buffer (which must hold
            // more: the response), else the request cannot be written: the
            // worker's own problem, never sent, no outage.
            let path = rx
                .get_mut(name.len()..)
                .and_then(|out| write_path(out, req.server.base, &req.route));
            let path = path.ok_or(Failure::Local(outage_core::Local::UrlTooLong))?;
            rx[..name.len()].copy_from_slice(name);
            n = name.len() + path;
            (0, 0)
        }
    };
    let mut digits = [0u8; 20];
    let body = req.body.unwrap_or_default();
    // A method that carries content says how much, even none (RFC 9110 8.6).
    let length: &[u8] = match (req.body, method) {
        (None, Method::Get | Method::Delete) => b"",
        _ => decimal(body.len(), &mut digits),
    };
    let pieces: [&[u8]; 11] = [
        b" HTTP/1.1\r\nHost: ",
        req.server.authority.as_bytes(),
        b"\r\nAuthorization: Bearer ",
        token.as_bytes(),
        b"\r\nAccept: application/json\r\n",
        if req.body.is_some() {
            b"Content-Type: application/json\r\n"
        } else {
            b""
        },
        if length.is_empty() {
            b""
        } else {
            b"Content-Length: "
        },
        length,
        if length.is_empty() { b"" } else { b"\r\n" },
        b"\r\n",
        body,
    ];
    while let Some(p) = pieces.get(piece) {
        let p = &p[offset..];
        let k = p.len().min(rx.len() - n);
        rx[n..n + k].copy_from_slice(&p[..k]);
        n += k;
        if k < p.len() {
            *next = Some((piece, offset + k));
            return Ok((n, false));
        }
        piece += 1;
        offset = 0;
    }
    Ok((n, true))
}

/// Reads the response into `rx`, one read at a time; everything between
/// reads is [`Response::step`], synchronous.
pub(crate) async fn receive<C: Read>(conn: &mut C, rx: &mut [u8]) -> Result<Exchange, Failure> {
    let mut r = Response::default();
    loop {
        if let Some(x) = r.step(rx)? {
            return Ok(x);
        }
        match conn.read(&mut rx[r.filled..]).await {
            Ok(0) => r.ended = true,
            Ok(n) => r.filled += n,
            Err(e) => return Err(r.read_failed(kind(embedded_io::Error::kind(&e)))),
        }
    }
}

/// What the head says about the body.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// The head is not complete yet.
    #[default]
    Head,
    /// The body ends here (`Content-Length`).
    Until(usize),
    /// Chunked: decoded bytes end at `out`, undecoded ones start at `at`.
    Chunked { out: usize, at: usize },
    /// The body ends with the connection.
    Close,
}

/// A response being read: what is in the buffer, and what it means so far.
#[derive(Debug, Default)]
struct Response {
    /// Bytes in the buffer.
    filled: usize,
    /// The server closed the connection.
    ended: bool,
    framing: Framing,
    /// Where the body starts.
    body: usize,
    status: u16,
    retry_after: Option<Duration>,
}

impl Response {
    /// A read failed: before the head is complete, a transport failure
    /// (after some of it, the answer was cut short); in the body, cut short
    /// unless it timed out.
    fn read_failed(&self, t: Transport) -> Failure {
        fail(match (self.framing, t) {
            (Framing::Head, _) if self.filled == 0 => t,
            (Framing::Head, Transport::ConnectionReset | Transport::ConnectionClosed) => Transport::Truncated,
            (Framing::Head, t) | (_, t @ Transport::Timeout) => t,
            _ => Transport::Truncated,
        })
    }

    /// Makes what is in `rx[..filled]` progress: the exchange once the
    /// response is complete, `None` to read more (there is room), or why
    /// not.
    fn step(&mut self, rx: &mut [u8]) -> Result<Option<Exchange>, Failure> {
        let bad = Failure::MalformedResponse;
        let cut = fail(Transport::Truncated);
        loop {
            let done = match self.framing {
                Framing::Head => {
                    if !self.head(&rx[..self.filled])? {
                        if self.ended {
                            return Err(self.read_failed(Transport::ConnectionClosed));
                        }
                        break;
                    }
                    if self.status < 200 || self.status == 204 || self.status == 304 {
                        Some(self.body)
                    } else {
                        continue;
                    }
                }
                Framing::Until(end) if self.filled >= end => Some(end),
                Framing::Until(end) if end > rx.len() => return Err(Failure::ResponseTooLarge),
                Framing::Close if self.ended => Some(self.filled),
                Framing::Until(_) | Framing::Close => None,
                Framing::Chunked {
                    ref mut out,
                    ref mut at,
                } => {
                    // Room for more: move the undecoded bytes down.
                    rx.copy_within(*at..self.filled, *out);
                    self.filled -= *at - *out;
                    *at = *out;
                    let pending = &rx[*at..self.filled];
                    let Some(eol) = pending.windows(2).position(|w| w == b"\r\n") else {
                        break;
                    };
                    let digits = pending[..eol].split(|&b| b == b';').next().unwrap_or_default();
                    let digits = digits.trim_ascii();
                    if digits.is_empty() || digits.len() > 6 {
                        return Err(bad);
                    }
                    let size = digits.iter().try_fold(0usize, |n, &d| {
                        let v = (d as char).to_digit(16)?;
                        Some(n * 16 + v as usize)
                    });
                    let size = size.ok_or(bad)?;
                    if size == 0 {
                        // Trailers, if any, are not needed.
                        Some(*out)
                    } else {
                        let data = *at + eol + 2;
                        if data + size + 2 > rx.len() {
                            return Err(Failure::ResponseTooLarge);
                        }
                        if data + size + 2 > self.filled {
                            break;
                        }
                        if rx[data + size..data + size + 2] != *b"\r\n" {
                            return Err(bad);
                        }
                        rx.copy_within(data..data + size, *out);
                        *out += size;
                        *at = data + size + 2;
                        continue;
                    }
                }
            };
            match done {
                Some(end) => {
                    return Ok(Some(Exchange {
                        status: self.status,
                        retry_after: self.retry_after,
                        body: self.body..end,
                    }));
                }
                None => break,
            }
        }
        if self.ended {
            return Err(cut);
        }
        if self.filled == rx.len() {
            return Err(Failure::ResponseTooLarge);
        }
        Ok(None)
    }

    /// Parses the head in `buf` once it is complete (true), taking the
    /// status, `Retry-After` and the body's framing from it. Lines may end
    /// in CRLF or LF (RFC 9112 2.2); a header line without a colon, or a
    /// folded one, is malformed.
    fn head(&mut self, buf: &[u8]) -> Result<bool, Failure> {
        let bad = Failure::MalformedResponse;
        let mut start = 0;
        let mut status = None;
        let mut chunked = false;
        let mut length = None;
        while let Some(eol) = buf[start..].iter().position(|&b| b == b'\n') {
            let line = &buf[start..start + eol];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            start += eol + 1;
            let Some(code) = status else {
                // `HTTP/1.x 200 reason`
                let rest = line.strip_prefix(b"HTTP/1.").ok_or(bad)?;
                let ok = rest.len() >= 5 && rest[0].is_ascii_digit() && rest[1] == b' ';
                let code = rest.get(2..5).filter(|_| ok).and_then(number).ok_or(bad)?;
                if rest.get(5).is_some_and(|&b| b != b' ') {
                    return Err(bad);
                }
                status = Some(code as u16);
                continue;
            };
            if line.is_empty() {
                self.status = code;
                self.body = start;
                self.framing = match (chunked, length) {
                    (true, _) => Framing::Chunked {
                        out: start,
                        at: start,
                    },
                    (false, Some(n)) => Framing::Until(start + n as usize),
                    (false, None) => Framing::Close,
                };
                return Ok(true);
            }
            let colon = line.iter().position(|&b| b == b':').ok_or(bad)?;
            let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
            if name.is_empty() || name.iter().any(|b| b.is_ascii_whitespace()) {
                return Err(bad);
            }
            if name.eq_ignore_ascii_case(b"retry-after") {
                self.retry_after = parse_retry_after(value);
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                if !value.eq_ignore_ascii_case(b"chunked") {
                    return Err(bad);
                }
                chunked = true;
            } else if name.eq_ignore_ascii_case(b"content-length") {
                length = Some(number(value).ok_or(bad)?);
            }
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use crate::wire::tests::{any_bytes, any_edits, fuzz_config};
    use std::string::ToString;
    use std::vec::Vec;

    #[test]
    fn servers_parse() {
        let s = Server::parse("http://192.168.1.10:8765/").unwrap();
        assert_eq!(
            s,
            Server {
                authority: "192.168.1.10:8765",
                host: "192.168.1.10",
                ip: Some(Ipv4Addr::new(192, 168, 1, 10)),
                port: 8765,
                base: "",
            }
        );
        let s = Server::parse("http://jobs.example:80/zndraw").unwrap();
        assert_eq!(
            (s.host, s.ip, s.port, s.base),
            ("jobs.example", None, 80, "/zndraw")
        );
        assert_eq!(Server::parse("http://jobs").unwrap().port, 80);
        assert_eq!(Server::parse("http://1.2.3.400").unwrap().ip, None);
        for bad in [
            "https://x",
            "http://",
            "http://:80",
            "http://x:99999",
            "http://x:0",
            "http://x:",
            "ftp://x",
            "http://x/a b",
        ] {
            assert_eq!(Server::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn paths_match_the_cores_routes() {
        let w = "20e2e4de-f22c-4885-8120-142dd3475d22";
        let routes = [
            Route::CreateWorker,
            Route::RegisterJob { room: "@global" },
            Route::RegisterJob { room: "r\\x y/z%" },
            Route::Claim,
            Route::TaskStatus { task_id: "a/b c" },
            Route::GetTask { task_id: w },
            Route::Heartbeat { worker_id: w },
            Route::Disconnect { worker_id: w },
            Route::Submit {
                room: "room 1",
                job: "@global:modifiers:Echo",
            },
        ];
        for route in routes {
            let mut out = [0u8; 256];
            let n = write_path(&mut out, "/base", &route).unwrap();
            assert_eq!(
                core::str::from_utf8(&out[..n]).unwrap(),
                std::format!("/base{route}")
            );
            let mut small = [0u8; 12];
            assert_eq!(write_path(&mut small, "", &route), None);
        }
    }

    /// A connection that answers with `reply`, `step` bytes per read, and
    /// keeps what was written.
    struct Fake {
        reply: Vec<u8>,
        at: usize,
        step: usize,
        written: Vec<u8>,
        fail_write: bool,
    }

    impl Fake {
        fn new(reply: &[u8], step: usize) -> Fake {
            Fake {
                reply: reply.to_vec(),
                at: 0,
                step,
                written: Vec::new(),
                fail_write: false,
            }
        }
    }

    impl embedded_io::ErrorType for Fake {
        type Error = embedded_io::ErrorKind;
    }

    impl Read for Fake {
        async fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
            let n = self.step.min(buf.len()).min(self.reply.len() - self.at);
            buf[..n].copy_from_slice(&self.reply[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    impl Write for Fake {
        async fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
            if self.fail_write {
                return Err(embedded_io::ErrorKind::ConnectionReset);
            }
            self.written.extend_from_slice(buf);
            Ok(buf.len())
        }
        async fn flush(&mut self) -> Result<(), Self::Error> {
            Ok(())
        }
    }

    fn run(
        reply: &[u8],
        step: usize,
        rx_len: usize,
        body: Option<&[u8]>,
    ) -> (Result<std::string::String, Failure>, Fake) {
        let server = Server::parse("http://10.0.0.1:8765").unwrap();
        let req = Request {
            server: &server,
            route: Route::Claim,
            token: Bearer::Fixed("tok"),
            body,
        };
        let mut conn = Fake::new(reply, step);
        let mut rx = std::vec![0u8; rx_len];
        let r = futures_lite_block_on(on_connection(&mut conn, &req, &mut rx));
        let r = r.map(|x| {
            std::format!(
                "{} {:?} {}",
                x.status,
                x.retry_after.map(|d| d.as_secs()),
                std::string::String::from_utf8_lossy(&rx[x.body])
            )
        });
        (r, conn)
    }

    /// A minimal executor for futures that never wait (the fake never
    /// blocks).
    fn futures_lite_block_on<F: core::future::Future>(f: F) -> F::Output {
        let mut f = core::pin::pin!(f);
        let mut cx = core::task::Context::from_waker(core::task::Waker::noop());
        loop {
            if let core::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
                return v;
            }
        }
    }

    #[test]
    fn requests_are_written_by_hand() {
        let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";
        for rx_len in [48, 512] {
            let (r, conn) = run(reply, 100, rx_len, Some(b"{\"worker_id\":\"w\"}"));
            assert_eq!(r.unwrap(), "200 None {}");
            assert_eq!(
                core::str::from_utf8(&conn.written).unwrap(),
                "POST /v1/joblib/tasks/claim HTTP/1.1\r\nHost: 10.0.0.1:8765\r\nAuthorization: Bearer tok\r\n\
                 Accept: application/json\r\nContent-Type: application/json\r\nContent-Length: 17\r\n\r\n\
                 {\"worker_id\":\"w\"}"
            );
        }
        let (_, conn) = run(reply, 100, 512, None);
        assert!(
            core::str::from_utf8(&conn.written)
                .unwrap()
                .ends_with("Content-Length: 0\r\n\r\n")
        );
    }

    #[test]
    fn a_long_token_goes_out_whole_through_a_small_buffer() {
        let token: std::string::String = (0..512).map(|i| (b'a' + (i % 26) as u8) as char).collect();
        let server = Server::parse("http://jobs.example/zndraw").unwrap();
        let req = Request {
            server: &server,
            route: Route::Heartbeat { worker_id: "w-1" },
            token: Bearer::Fixed(&token),
            body: None,
        };
        let mut conn = Fake::new(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", 1000);
        let mut rx = [0u8; 64];
        let x = futures_lite_block_on(on_connection(&mut conn, &req, &mut rx)).unwrap();
        assert_eq!(x.status, 200);
        assert_eq!(
            core::str::from_utf8(&conn.written).unwrap(),
            std::format!(
                "PATCH /zndraw/v1/joblib/workers/w-1 HTTP/1.1\r\nHost: jobs.example\r\n\
                 Authorization: Bearer {token}\r\nAccept: application/json\r\nContent-Length: 0\r\n\r\n"
            )
        );
    }

    #[test]
    fn responses_are_framed() {
        let cases: [(&[u8], Result<&str, Failure>); 9] = [
            (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", Ok("200 None hello")),
            (b"HTTP/1.1 503 No\r\nRetry-After: 7\r\ncontent-length: 0\r\n\r\n", Ok("503 Some(7) ")),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
                Ok("200 None hello world"),
            ),
            (b"HTTP/1.1 200 OK\r\n\r\nuntil close", Ok("200 None until close")),
            (b"HTTP/1.1 204 No Content\r\n\r\n", Ok("204 None ")),
            (b"", Err(fail(Transport::ConnectionClosed))),
            (b"HTTP/1.1 200 OK\r\nContent-Le", Err(fail(Transport::Truncated))),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort", Err(fail(Transport::Truncated))),
            (b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", Err(Failure::MalformedResponse)),
        ];
        for (reply, want) in cases {
            for step in [1, 3, 1000] {
                let (r, _) = run(reply, step, 256, None);
                assert_eq!(
                    r.as_deref().map_err(|e| *e),
                    want,
                    "{:?} / {step}",
                    core::str::from_utf8(reply)
                );
            }
        }
        let heads: [(&[u8], Result<&str, Failure>); 7] = [
            (b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok", Ok("200 None ok")),
            (b"HTTP/1.0 201\r\ncontent-length:1\r\n\r\nx", Ok("201 None x")),
            (
                b"HTTP/1.1 200 OK\r\nX-Empty:\r\nContent-Length: 0\r\n\r\n",
                Ok("200 None "),
            ),
            (b"HTTP/2 200 OK\r\n\r\n", Err(Failure::MalformedResponse)),
            (b"HTTP/1.1 20x OK\r\n\r\n", Err(Failure::MalformedResponse)),
            (
                b"HTTP/1.1 200 OK\r\nNo colon\r\n\r\n",
                Err(Failure::MalformedResponse),
            ),
            (
                b"HTTP/1.1 200 OK\r\nA: b\r\n folded\r\n\r\n",
                Err(Failure::MalformedResponse),
            ),
        ];
        for (reply, want) in heads {
            let (r, _) = run(reply, 5, 256, None);
            assert_eq!(
                r.as_deref().map_err(|e| *e),
                want,
                "{:?}",
                core::str::from_utf8(reply)
            );
        }
        let big = b"HTTP/1.1 200 OK\r\nContent-Length: 300\r\n\r\n";
        assert_eq!(run(big, 100, 256, None).0, Err(Failure::ResponseTooLarge));
        let mut chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for _ in 0..40 {
            chunked.extend_from_slice(b"8\r\n01234567\r\n");
        }
        chunked.extend_from_slice(b"0\r\n\r\n");
        assert_eq!(run(&chunked, 7, 256, None).0, Err(Failure::ResponseTooLarge));
        let (r, _) = run(&chunked, 7, 512, None);
        assert_eq!(r.unwrap().len(), "200 None ".len() + 320);
    }

    proptest::proptest! {
        #![proptest_config(fuzz_config())]

        /// Fuzz: arbitrary and mutated responses, read in arbitrary pieces
        /// into buffers of any size, never panic.
        #[test]
        fn response_parsing_never_panics(
            (bytes, edits) in (any_bytes(400), any_edits(200)),
            step in 1usize..64,
            rx_len in 24usize..300,
        ) {
            let _ = run(&bytes, step, rx_len, None);
            let mut reply = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nRetry-After: 3\r\n\r\n\
                              5\r\nhello\r\n6;x\r\n world\r\n0\r\n\r\n".to_vec();
            let len = outage_core::fuzz::mutate(&mut reply, &edits, usize::MAX);
            let _ = run(&reply[..len], step, rx_len, None);
        }
    }

    #[test]
    fn a_request_not_written_in_full_was_never_sent() {
        let server = Server::parse("http://10.0.0.1").unwrap();
        let req = Request {
            server: &server,
            route: Route::Heartbeat { worker_id: "w" },
            token: Bearer::Fixed("tok"),
            body: None,
        };
        let mut conn = Fake::new(b"", 1);
        conn.fail_write = true;
        let mut rx = [0u8; 256];
        let r = futures_lite_block_on(on_connection(&mut conn, &req, &mut rx));
        assert_eq!(r, Err(fail(Transport::SendFailed)));
        assert_eq!(req.server.authority.to_string(), "10.0.0.1");
    }

    #[test]
    fn a_url_longer_than_the_buffer_is_a_local_error_not_an_outage() {
        let server = Server::parse("http://10.0.0.1").unwrap();
        let long_id = "w".repeat(100);
        let req = Request {
            server: &server,
            route: Route::Heartbeat { worker_id: &long_id },
            token: Bearer::Fixed("tok"),
            body: None,
        };
        let mut conn = Fake::new(b"", 1);
        let mut rx = [0u8; 64];
        let r = futures_lite_block_on(on_connection(&mut conn, &req, &mut rx));
        let local = Failure::Local(outage_core::Local::UrlTooLong);
        assert_eq!(r, Err(local));
        assert_eq!(
            local.classify(outage_core::Endpoint::Heartbeat),
            outage_core::Class::Local(outage_core::Local::UrlTooLong)
        );
        assert!(local.never_sent() && !local.resend_once(true));
    }
}
