//! One HTTP/1.1 exchange of our own over embedded-nal-async, every failure
//! turned into the core's [`Failure`] here, once.
//!
//! The bytes are the core's ([`outage_core::wire`]): its
//! [`RequestHead`](outage_core::wire::RequestHead) writes the request,
//! its [`Reader`](outage_core::wire::Reader) reads the answer, as on a
//! host; this module keeps only the socket and the buffer. Why not
//! reqwless (used before): measured on the nRF52840 example, it cost
//! 24.8 KB more flash and 1.8 KB more RAM than the first version of this
//! module, and it needs the bearer header as one string, a copy of the
//! token in the worker. The request is gathered in the caller's receive
//! buffer (written out whenever that is full, so a long token needs no
//! room of its own), and the same buffer then receives the response,
//! decoded in place.

use core::net::{IpAddr, Ipv4Addr, SocketAddr};
use core::ops::Range;

use embedded_io_async::{Read, Write};
use embedded_nal_async::{AddrType, Dns, TcpConnect};
use outage_core::protocol::Route;
use outage_core::wire::{Full, Limits, Read as Got, Reader, RequestHead, Target};
use outage_core::{Duration, Failure, Transport};

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
    /// Parse `http://host[:port][/base]`; `None` if it is not one. (By
    /// byte positions, not `str` patterns: 0.3 KB less flash.)
    pub fn parse(url: &'a str) -> Option<Server<'a>> {
        let mut rest = url.strip_prefix("http://")?;
        while let Some(r) = rest.strip_suffix('/') {
            rest = r;
        }
        let b = rest.as_bytes();
        let slash = b.iter().position(|&c| c == b'/').unwrap_or(b.len());
        // Checked: a panicking `split_at` costs 270 bytes of flash.
        let (authority, base) = rest.split_at_checked(slash)?;
        let (host, port) = match authority.bytes().rposition(|c| c == b':') {
            // Port 0 is no server's: refused like any other bad port.
            Some(i) => (
                authority.get(..i)?,
                number(&authority.as_bytes()[i + 1..]).filter(|p| (1..=0xFFFF).contains(p))? as u16,
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
            ip: ipv4(host.as_bytes()),
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
fn ipv4(host: &[u8]) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut parts = host.split(|&c| c == b'.');
    for o in octets.iter_mut() {
        *o = u8::try_from(number(parts.next()?)?).ok()?;
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

/// One outgoing HTTP request: the server, the route (its method and path),
/// the token and the body. (The core's [`outage_core::Request`] is which
/// protocol call it is.)
pub struct Outgoing<'r> {
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
    req: &Outgoing<'_>,
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
    req: &Outgoing<'_>,
    rx: &mut [u8],
) -> Result<Exchange, Failure> {
    send(conn, req, rx).await?;
    receive(conn, rx).await
}

/// The headers of every request but the login's.
const JSON: &[(&[u8], &[u8])] = &[
    (b"Accept", b"application/json"),
    (b"Content-Type", b"application/json"),
];

async fn send<C: Write>(conn: &mut C, req: &Outgoing<'_>, rx: &mut [u8]) -> Result<(), Failure> {
    // The head is made again for each buffer full (nothing of it is kept
    // across a write), with the token as it is then: a token renewed in
    // between that is as long goes out mixed (a 401, which the core sends
    // again: it started before the renewal); one of another length would
    // shift the rest of the request, so the request is abandoned before
    // it is complete (never sent as a whole: sent again by the core).
    let mut len = 0;
    write_out(conn, rx, |buf, skip| {
        req.token.with(|token| {
            if skip == 0 {
                len = token.len();
            }
            (token.len() == len).then(|| req.gather(token, buf, skip))
        })
    })
    .await
}

impl Outgoing<'_> {
    /// [`gather`] of this request with `token`.
    fn gather(&self, token: &str, buf: &mut [u8], skip: usize) -> (usize, bool) {
        let body = self.body.unwrap_or_default();
        let head = RequestHead {
            method: self.route.method().as_str(),
            target: Target::Route {
                base: self.server.base.as_bytes(),
                route: self.route,
            },
            host: self.server.authority.as_bytes(),
            bearer: Some(token.as_bytes()),
            headers: if self.body.is_some() { JSON } else { &JSON[..1] },
            body_len: body.len(),
        };
        gather(&head, body, buf, skip)
    }
}

/// Writes a request out through `buf`: `fill` puts its bytes from an
/// offset on into `buf` (how many, and whether that is the end; `None`:
/// the request changed under it, abandoned unfinished), and each buffer
/// full is written; then flushed.
pub(crate) async fn write_out<C: Write>(
    conn: &mut C,
    buf: &mut [u8],
    mut fill: impl FnMut(&mut [u8], usize) -> Option<(usize, bool)>,
) -> Result<(), Failure> {
    if buf.is_empty() {
        return Err(Failure::Local(outage_core::Local::BodyTooLarge));
    }
    let mut sent = 0;
    loop {
        let (n, done) = fill(buf, sent).ok_or(fail(Transport::SendFailed))?;
        // Failing before all of it is written, the server cannot act on it.
        if conn.write_all(&buf[..n]).await.is_err() {
            return Err(fail(Transport::SendFailed));
        }
        sent += n;
        if done {
            break;
        }
    }
    // Written in full (into the stack's buffers): the server may see it all.
    conn.flush()
        .await
        .map_err(|e| fail(kind(embedded_io::Error::kind(&e))))
}

/// Fills `buf` with the bytes of `head` and `body` from `skip` on: how
/// many, and whether that is the end of them.
pub(crate) fn gather(head: &RequestHead<'_>, body: &[u8], buf: &mut [u8], skip: usize) -> (usize, bool) {
    let (mut at, mut n) = (0, 0);
    let mut put = |p: &[u8]| {
        let start = skip.saturating_sub(at).min(p.len());
        at += p.len();
        let p = &p[start..];
        let k = p.len().min(buf.len() - n);
        buf[n..n + k].copy_from_slice(&p[..k]);
        n += k;
        if k < p.len() { Err(Full) } else { Ok(()) }
    };
    let done = head.write(&mut put).and_then(|()| put(body)).is_ok();
    (n, done)
}

/// Reads the response into `rx`, one read at a time, through the core's
/// [`Reader`]; a chunked body is decoded in place.
pub(crate) async fn receive<C: Read>(conn: &mut C, rx: &mut [u8]) -> Result<Exchange, Failure> {
    let len = rx.len();
    let mut r = Reader::new(Limits { head: len, body: len });
    // rx: [decoded body: body..out][unused input: at..filled]
    let (mut filled, mut at, mut out, mut body) = (0, 0, 0, 0);
    let (mut status, mut retry_after) = (0, None);
    loop {
        let (used, got) = r.feed(&rx[at..filled]).map_err(|e| e.failure())?;
        match got {
            Got::Head(head) => {
                (status, retry_after) = (head.status, head.retry_after);
                at += used;
                (body, out) = (at, at);
                continue;
            }
            Got::Body(run) => {
                rx.copy_within(at + run.start..at + run.end, out);
                out += run.len();
                at += used;
                continue;
            }
            Got::Done => break,
            Got::More => at += used,
        }
        // Room for more: the unused bytes move down to the decoded ones.
        rx.copy_within(at..filled, out);
        filled -= at - out;
        at = out;
        // A full buffer may still see the connection's end (a body read to
        // it that fills the buffer exactly): one byte more is too large.
        let mut probe = [0u8; 1];
        let room = if filled == len {
            &mut probe[..]
        } else {
            &mut rx[filled..]
        };
        match conn.read(room).await {
            Ok(0) => {
                r.finish().map_err(|e| e.failure())?;
                break;
            }
            Ok(_) if filled == len => return Err(Failure::ResponseTooLarge),
            Ok(n) => filled += n,
            Err(e) => return Err(r.read_failed(kind(embedded_io::Error::kind(&e)))),
        }
    }
    Ok(Exchange {
        status,
        retry_after,
        body: body..out,
    })
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

    /// A connection that answers with `reply`, `step` bytes per read, and
    /// keeps what was written.
    struct Fake {
        reply: Vec<u8>,
        at: usize,
        step: usize,
        written: Vec<u8>,
        fail_write: bool,
        /// Called after each write (a token renewed mid-request).
        on_write: Option<std::boxed::Box<dyn FnMut()>>,
    }

    impl Fake {
        fn new(reply: &[u8], step: usize) -> Fake {
            Fake {
                reply: reply.to_vec(),
                at: 0,
                step,
                written: Vec::new(),
                fail_write: false,
                on_write: None,
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
            if let Some(f) = &mut self.on_write {
                f();
            }
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
        let req = Outgoing {
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
        let req = Outgoing {
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
        // RFC 9112, as on a host (one codec: the core's): an interim 1xx is
        // skipped, Content-Length with Transfer-Encoding refused.
        let heads: [(&[u8], Result<&str, Failure>); 9] = [
            (
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
                Ok("200 None ok"),
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
                Err(Failure::MalformedResponse),
            ),
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
        let req = Outgoing {
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
    fn a_url_longer_than_the_buffer_goes_out_whole() {
        // The request is gathered a buffer full at a time: neither a long
        // token nor a long path needs room of its own (before the core's
        // codec, a request line longer than the buffer was refused).
        let server = Server::parse("http://10.0.0.1").unwrap();
        let long_id = "w".repeat(100);
        let req = Outgoing {
            server: &server,
            route: Route::Heartbeat { worker_id: &long_id },
            token: Bearer::Fixed("tok"),
            body: None,
        };
        let mut conn = Fake::new(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", 7);
        let mut rx = [0u8; 48];
        let x = futures_lite_block_on(on_connection(&mut conn, &req, &mut rx)).unwrap();
        assert_eq!((x.status, &rx[x.body]), (200, &b"{}"[..]));
        assert_eq!(
            core::str::from_utf8(&conn.written).unwrap(),
            std::format!(
                "PATCH /v1/joblib/workers/{long_id} HTTP/1.1\r\nHost: 10.0.0.1\r\n\
                 Authorization: Bearer tok\r\nAccept: application/json\r\nContent-Length: 0\r\n\r\n"
            )
        );
    }

    #[test]
    fn a_body_to_the_end_that_fills_the_buffer_exactly_is_whole() {
        let reply = b"HTTP/1.1 200 OK\r\n\r\n0123456789";
        let (r, _) = run(reply, 7, reply.len(), None);
        assert_eq!(r.unwrap(), "200 None 0123456789");
        let (r, _) = run(reply, 7, reply.len() - 1, None);
        assert_eq!(r, Err(Failure::ResponseTooLarge));
    }

    #[cfg(feature = "login")]
    #[test]
    fn a_token_renewed_to_another_length_mid_request_abandons_it() {
        use crate::login::{SharedToken, TokenStore};
        use core::cell::RefCell;
        use embassy_sync::blocking_mutex::Mutex;
        use std::rc::Rc;

        let server = Server::parse("http://10.0.0.1").unwrap();
        for (new, sent) in [
            ("b".repeat(300), false),
            ("c".repeat(200), true),
            (std::string::String::new(), false),
        ] {
            let store: Rc<SharedToken> = Rc::new(Mutex::new(RefCell::new(TokenStore::new())));
            let jwt = "a".repeat(200);
            let answer = std::format!(r#"{{"access_token":"{jwt}"}}"#);
            store.lock(|t| assert!(t.borrow_mut().take_answer(answer.as_bytes())));
            let req = Outgoing {
                server: &server,
                route: Route::Claim,
                token: Bearer::Stored(&store),
                body: Some(b"{}"),
            };
            let mut conn = Fake::new(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", 100);
            // The other loop renews the token after the first buffer full.
            let other = store.clone();
            conn.on_write = Some(std::boxed::Box::new(move || {
                let answer = std::format!(r#"{{"access_token":"{new}"}}"#);
                other.lock(|t| {
                    let mut t = t.borrow_mut();
                    if !t.take_answer(answer.as_bytes()) {
                        t.clear();
                    }
                })
            }));
            let mut rx = [0u8; 96];
            let r = futures_lite_block_on(on_connection(&mut conn, &req, &mut rx));
            if sent {
                // As long: the request goes out whole, mixed (a 401 then).
                assert_eq!(r.map(|x| x.status), Ok(200));
                let text = std::string::String::from_utf8(conn.written.clone()).unwrap();
                assert!(text.ends_with("Content-Length: 2\r\n\r\n{}"), "{text}");
            } else {
                assert_eq!(r, Err(fail(Transport::SendFailed)), "never sent whole");
            }
        }
    }
}
