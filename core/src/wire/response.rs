//! Reading a response: [`Reader`], fed bytes as they arrive.

use core::ops::Range;

use super::chunked::Chunked;
use crate::error::parse_retry_after;
use crate::protocol::{ascii_set, in_set};
use crate::time::Duration;
use crate::{Failure, Transport};

/// Header lines per head, interim heads counted apart: a head of more is
/// [`Error::HeadTooLarge`] (a bound on the work, as `httparse`'s table is).
pub const MAX_HEADERS: usize = 64;

/// Why a response cannot be read. `Copy`; [`Error::failure`] is the core's
/// view of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Error {
    /// The connection ended before any byte of a response.
    Closed,
    /// The connection ended inside the response (after some of its bytes).
    Truncated,
    /// Not an HTTP/1.x response this worker can read: a bad status line or
    /// header line, a `101` not asked for (`Reader::for_upgrade`), a
    /// transfer coding other than `chunked`, `Content-Length` with
    /// `Transfer-Encoding`, conflicting lengths, a bad chunk.
    Malformed,
    /// The head (interim heads included), a chunked body's trailers or a
    /// chunk-size line went past its bound, or the head had more than
    /// [`MAX_HEADERS`] header lines.
    HeadTooLarge,
    /// The body went past [`Limits::body`].
    BodyTooLarge,
}

impl Error {
    /// The core's [`Failure`]: a connection that ended is a transport
    /// failure ([`Transport::ConnectionClosed`] before any byte of an
    /// answer, [`Transport::Truncated`] after), a response over its bounds
    /// [`Failure::ResponseTooLarge`], anything else
    /// [`Failure::MalformedResponse`].
    pub const fn failure(self) -> Failure {
        match self {
            Error::Closed => Failure::Transport(Transport::ConnectionClosed),
            Error::Truncated => Failure::Transport(Transport::Truncated),
            Error::Malformed => Failure::MalformedResponse,
            Error::HeadTooLarge | Error::BodyTooLarge => Failure::ResponseTooLarge,
        }
    }
}

/// What a [`Reader`] accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The most bytes of head, interim `1xx` heads included; also the bound
    /// of a chunked body's trailer section.
    pub head: usize,
    /// The most bytes of (decoded) body.
    pub body: usize,
}

/// How a response's body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Framing {
    /// No body: a `204`, a `304`, the answer to a `HEAD`, or a `101`
    /// (under `Reader::for_upgrade`: what follows is the new protocol's).
    Empty,
    /// `Content-Length` bytes (saturated at `usize::MAX`: more than any
    /// limit).
    Length(usize),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the connection ends.
    Close,
}

/// A final response head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// The status code: 200–599, or 101 for a `Reader::for_upgrade`
    /// the server switched.
    pub status: u16,
    /// HTTP/1.1 (else 1.0).
    pub http11: bool,
    /// How the body is delimited.
    pub framing: Framing,
    /// `Retry-After` in delta-seconds (the last one, if several).
    pub retry_after: Option<Duration>,
    /// May the connection carry another exchange once this one is read
    /// whole (and nothing follows it): HTTP/1.1, no `Connection: close`, a
    /// body not delimited by the connection's end.
    pub reusable: bool,
    /// The head's length: its bytes are the last `len` of those the
    /// [`Reader::feed`] that returned it used (for [`header_lines`]).
    pub len: usize,
}

/// What the bytes fed so far mean.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read {
    /// More bytes are needed (the unused ones are to be fed again, with
    /// what follows them).
    More,
    /// The final head.
    Head(Head),
    /// A run of the body: this range of the input fed (decoded, for a
    /// chunked body).
    Body(Range<usize>),
    /// The response is complete.
    Done,
}

#[derive(Debug, Clone, Copy)]
enum State {
    Head,
    Length(usize),
    Chunked(Chunked),
    Close,
    Done,
}

/// A response read as it arrives, sans-IO.
///
/// Feed it the bytes received and not used yet; it returns how many it
/// used and what they are ([`Read`]). Bytes it did not use (a head not
/// complete yet) are fed again, with what arrives after them. At the
/// connection's end, [`Reader::finish`] says whether the response was
/// complete.
///
/// ```
/// use outage_core::wire::{Framing, Limits, Read, Reader};
///
/// let mut r = Reader::new(Limits { head: 1024, body: 1024 });
/// let mut input: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
/// let (used, read) = r.feed(input).unwrap();
/// let Read::Head(head) = read else { panic!() };
/// assert_eq!((head.status, head.framing, head.reusable), (200, Framing::Length(2), true));
/// input = &input[used..];
/// assert_eq!(r.feed(input).unwrap(), (2, Read::Body(0..2)));
/// assert_eq!(r.feed(&[]).unwrap(), (0, Read::Done));
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Reader {
    state: State,
    scan: HeadEnd,
    /// Bytes of interim heads used.
    interim: usize,
    /// Some byte of the response was fed.
    started: bool,
    /// Body bytes so far.
    body: usize,
    limits: Limits,
    /// The answer to a `HEAD`: no body whatever the head says.
    no_body: bool,
    /// The answer to a WebSocket upgrade: a `101` is final (only with the
    /// `push` feature: a device never upgrades, and its reader carries
    /// none of it).
    #[cfg(feature = "push")]
    upgrade: bool,
}

impl Reader {
    /// A reader for one response within `limits`.
    pub const fn new(limits: Limits) -> Reader {
        Reader {
            state: State::Head,
            scan: HeadEnd::new(),
            interim: 0,
            started: false,
            body: 0,
            limits,
            no_body: false,
            #[cfg(feature = "push")]
            upgrade: false,
        }
    }

    /// The same, for the answer to a `HEAD` request (which has no body).
    pub const fn for_head_request(mut self) -> Reader {
        self.no_body = true;
        self
    }

    /// The same, for the answer to a WebSocket upgrade
    /// ([`super::websocket`]): a `101` is then the final head, with no
    /// body and not reusable (the bytes after it are the new protocol's:
    /// the response is done); any other answer is read as usual. (With the
    /// `push` feature, which the push connection needs.)
    #[cfg(feature = "push")]
    pub const fn for_upgrade(mut self) -> Reader {
        self.upgrade = true;
        self
    }

    /// Is a `101` final (`Reader::for_upgrade`)?
    const fn upgrade(&self) -> bool {
        #[cfg(feature = "push")]
        return self.upgrade;
        #[cfg(not(feature = "push"))]
        false
    }

    /// Has any byte of the response been fed? (A connection failing before
    /// that failed before the server answered; after, the answer was cut.)
    pub const fn started(&self) -> bool {
        self.started
    }

    /// The core's [`Failure`] for a read that failed with `t`: `t` itself
    /// before any byte of the response, or if it timed out; after some
    /// bytes, the answer was cut short ([`Transport::Truncated`]).
    pub const fn read_failed(&self, t: Transport) -> Failure {
        Failure::Transport(match t {
            _ if !self.started => t,
            Transport::Timeout => t,
            _ => Transport::Truncated,
        })
    }

    /// Is the response complete?
    pub const fn is_done(&self) -> bool {
        matches!(self.state, State::Done | State::Length(0))
    }

    /// Reads from `input` (the bytes received and not used yet): how many
    /// were used, and what they are.
    pub fn feed(&mut self, input: &[u8]) -> Result<(usize, Read), Error> {
        self.started |= !input.is_empty();
        match self.state {
            State::Head => self.head(input),
            State::Length(0) | State::Done => {
                self.state = State::Done;
                Ok((0, Read::Done))
            }
            State::Length(left) => {
                let n = left.min(input.len());
                if n == 0 {
                    return Ok((0, Read::More));
                }
                self.state = State::Length(left - n);
                Ok((n, Read::Body(0..n)))
            }
            State::Chunked(mut c) => {
                let (used, data) = c.feed(input, &mut self.body, self.limits)?;
                self.state = if c.done() { State::Done } else { State::Chunked(c) };
                Ok((
                    used,
                    match data {
                        Some(run) => Read::Body(run),
                        None if c.done() => Read::Done,
                        None => Read::More,
                    },
                ))
            }
            State::Close => {
                if input.is_empty() {
                    return Ok((0, Read::More));
                }
                if input.len() > self.limits.body - self.body {
                    return Err(Error::BodyTooLarge);
                }
                self.body += input.len();
                Ok((input.len(), Read::Body(0..input.len())))
            }
        }
    }

    /// The connection ended (nothing more will be fed): `Ok` if that
    /// completes the response (a body delimited by the connection's end),
    /// else why not.
    pub fn finish(&mut self) -> Result<(), Error> {
        match self.state {
            State::Done | State::Length(0) | State::Close => {
                self.state = State::Done;
                Ok(())
            }
            State::Head if !self.started => Err(Error::Closed),
            _ => Err(Error::Truncated),
        }
    }

    fn head(&mut self, input: &[u8]) -> Result<(usize, Read), Error> {
        let mut at = 0;
        loop {
            let rest = &input[at..];
            let Some(n) = self.scan.find(rest) else {
                if self.interim + rest.len() >= self.limits.head {
                    return Err(Error::HeadTooLarge);
                }
                return Ok((at, Read::More));
            };
            if self.interim + n > self.limits.head {
                return Err(Error::HeadTooLarge);
            }
            self.scan = HeadEnd::new();
            let Some(mut head) = parse(&rest[..n], self.no_body, self.upgrade())? else {
                // An interim `1xx`: skipped, counted against the limit.
                self.interim += n;
                at += n;
                continue;
            };
            self.state = match head.framing {
                Framing::Empty | Framing::Length(0) => State::Done,
                Framing::Length(len) if len > self.limits.body => return Err(Error::BodyTooLarge),
                Framing::Length(len) => State::Length(len),
                Framing::Chunked => State::Chunked(Chunked::new()),
                Framing::Close => State::Close,
            };
            head.len = n;
            return Ok((at + n, Read::Head(head)));
        }
    }
}

/// Finds the empty line that ends a head, over feeds that each add bytes:
/// each byte is looked at once. Empty lines before the status line are
/// skipped (RFC 9112 §2.2).
#[derive(Debug, Clone, Copy)]
struct HeadEnd {
    scanned: usize,
    state: Scan,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scan {
    /// Before the status line.
    Start,
    /// Inside a line.
    Line,
    /// Just after a line feed.
    LineStart,
    /// A carriage return at the start of a line.
    Cr,
}

impl HeadEnd {
    const fn new() -> HeadEnd {
        HeadEnd {
            scanned: 0,
            state: Scan::Start,
        }
    }

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

/// The next line of `rest` without its line end (LF or CRLF), `rest`
/// moved past it (the last line: up to the end).
fn line<'a>(rest: &mut &'a [u8]) -> &'a [u8] {
    let buf = *rest;
    let n = buf.iter().position(|&b| b == b'\n').unwrap_or(buf.len());
    *rest = buf.get(n + 1..).unwrap_or_default();
    let l = &buf[..n];
    l.strip_suffix(b"\r").unwrap_or(l)
}

/// The status line of a head: the first line that is not empty.
fn status_line<'a>(rest: &mut &'a [u8]) -> &'a [u8] {
    loop {
        let l = line(rest);
        if !l.is_empty() || rest.is_empty() {
            return l;
        }
    }
}

/// RFC 9110 `tchar`.
pub(crate) fn is_tchar(b: u8) -> bool {
    const TCHAR: [u32; 4] = ascii_set(b"!#$%&'*+-.^_`|~");
    in_set(&TCHAR, b)
}

/// The next item of a comma-separated header value from `rest` on,
/// trimmed (empty ones skipped); `rest` moved past it.
pub(super) fn item<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    while !rest.is_empty() {
        let buf = *rest;
        let n = buf.iter().position(|&b| b == b',').unwrap_or(buf.len());
        *rest = buf.get(n + 1..).unwrap_or_default();
        let t = buf[..n].trim_ascii();
        if !t.is_empty() {
            return Some(t);
        }
    }
    None
}

/// Decimal digits only; saturates (any limit refuses it then).
fn parse_length(value: &[u8]) -> Option<usize> {
    let mut n: usize = 0;
    for &d in value {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n.saturating_mul(10).saturating_add(usize::from(d - b'0'));
    }
    (!value.is_empty()).then_some(n)
}

/// Text a header value or a reason phrase may hold: no control character
/// but HTAB.
fn is_text(v: &[u8]) -> bool {
    v.iter().all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

/// A header line's name and value (trimmed), or `None` if it is not one:
/// a name of `tchar`s, a colon, a value of text. (A folded line starts
/// with whitespace: not a name.)
fn header(line: &[u8]) -> Option<(&[u8], &[u8])> {
    let colon = line.iter().position(|&b| b == b':')?;
    let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
    let ok = !name.is_empty() && name.iter().all(|&b| is_tchar(b)) && is_text(value);
    ok.then_some((name, value))
}

/// The header lines of a head after its first line, up to the empty line,
/// each handed to `f` as a name and a value: [`Error::Malformed`] for one
/// that is not a header line, [`Error::HeadTooLarge`] past
/// [`MAX_HEADERS`] of them. The one reading of header lines, for
/// responses and requests alike.
fn headers(mut lines: &[u8], mut f: impl FnMut(&[u8], &[u8]) -> Result<(), Error>) -> Result<(), Error> {
    let mut count = 0;
    loop {
        let line = line(&mut lines);
        if line.is_empty() {
            return Ok(());
        }
        count += 1;
        if count > MAX_HEADERS {
            return Err(Error::HeadTooLarge);
        }
        let (name, value) = header(line).ok_or(Error::Malformed)?;
        f(name, value)?;
    }
}

/// Parses one complete head (`buf` ends with its empty line): `None` for
/// an interim `1xx` (a `101` is final if `upgrade`, else refused).
#[cfg_attr(not(feature = "push"), allow(unused_variables))]
fn parse(buf: &[u8], no_body: bool, upgrade: bool) -> Result<Option<Head>, Error> {
    let bad = Error::Malformed;
    let mut lines = buf;
    // `HTTP/1.x 200 reason`, the reason optional.
    let rest = status_line(&mut lines).strip_prefix(b"HTTP/1.").ok_or(bad)?;
    let http11 = match rest.first() {
        Some(b'1') => true,
        Some(b'0') => false,
        _ => return Err(bad),
    };
    let code = match rest.get(1..5) {
        Some([b' ', d @ ..]) if d.iter().all(u8::is_ascii_digit) => {
            d.iter().fold(0u16, |n, &b| n * 10 + u16::from(b - b'0'))
        }
        _ => return Err(bad),
    };
    match rest.get(5..) {
        Some([]) | None => {}
        Some([b' ', reason @ ..]) if is_text(reason) => {}
        _ => return Err(bad),
    }
    match code {
        // Only an upgrade asks to switch: then the head is final, its
        // header lines checked as any, and what follows is not HTTP.
        #[cfg(feature = "push")]
        101 if upgrade => {
            headers(lines, |_, _| Ok(()))?;
            return Ok(Some(Head {
                status: 101,
                http11,
                framing: Framing::Empty,
                retry_after: None,
                reusable: false,
                len: buf.len(),
            }));
        }
        101 => return Err(bad),
        100..=599 => {}
        _ => return Err(bad),
    }
    let mut close = false;
    let mut chunked = false;
    let mut other_coding = false;
    let mut length: Option<usize> = None;
    let mut retry_after = None;
    headers(lines, |name, value| {
        if name.eq_ignore_ascii_case(b"connection") {
            let mut items = value;
            while let Some(t) = item(&mut items) {
                close |= t.eq_ignore_ascii_case(b"close");
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            // Only `chunked`, once: nothing else is decoded, and a list
            // (`gzip, chunked`) names another coding.
            other_coding |= chunked || !value.eq_ignore_ascii_case(b"chunked");
            chunked = true;
        } else if name.eq_ignore_ascii_case(b"content-length") {
            // One value (RFC 9110 §8.6 lets a recipient refuse a list,
            // even of equal values); two headers must agree.
            let n = parse_length(value).ok_or(Error::Malformed)?;
            if length.is_some_and(|l| l != n) {
                return Err(Error::Malformed);
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case(b"retry-after") {
            retry_after = parse_retry_after(value);
        }
        Ok(())
    })?;
    if code < 200 {
        return Ok(None);
    }
    let framing = if no_body || code == 204 || code == 304 {
        Framing::Empty
    } else if chunked || other_coding {
        // Both framings at once is how responses are smuggled (RFC 9112
        // §6.3 rule 3): refused, as is a coding that cannot be decoded.
        if other_coding || length.is_some() {
            return Err(bad);
        }
        Framing::Chunked
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        Framing::Close
    };
    Ok(Some(Head {
        status: code,
        http11,
        framing,
        retry_after,
        reusable: http11 && !close && framing != Framing::Close,
        len: buf.len(),
    }))
}

/// A request's first line, as a server reads it ([`request_head`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLine<'a> {
    /// The method (`tchar`s).
    pub method: &'a [u8],
    /// The request target, as sent.
    pub target: &'a [u8],
    /// HTTP/1.1 (else 1.0).
    pub http11: bool,
}

/// A request head in `buf` (a server's side: the metrics endpoint's),
/// by the rules a [`Reader`] reads a response with: `Ok(None)` until its
/// empty line is there (empty lines before the request line skipped), then
/// its request line and its length; [`Error::Malformed`] for a bad request
/// line or header line, [`Error::HeadTooLarge`] past [`MAX_HEADERS`]
/// header lines. Its headers: [`header_lines`] of its bytes.
pub fn request_head(buf: &[u8]) -> Result<Option<(RequestLine<'_>, usize)>, Error> {
    let Some(len) = HeadEnd::new().find(buf) else {
        return Ok(None);
    };
    let bad = Error::Malformed;
    let mut lines = &buf[..len];
    // `METHOD SP target SP HTTP/1.x`
    let first = status_line(&mut lines);
    let mut parts = first.splitn(3, |&b| b == b' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad);
    };
    let http11 = match version {
        b"HTTP/1.1" => true,
        b"HTTP/1.0" => false,
        _ => return Err(bad),
    };
    if method.is_empty()
        || !method.iter().all(|&b| is_tchar(b))
        || target.is_empty()
        || !target.iter().all(|&b| b > 0x20 && b < 0x7f)
    {
        return Err(bad);
    }
    headers(lines, |_, _| Ok(()))?;
    Ok(Some((
        RequestLine {
            method,
            target,
            http11,
        },
        len,
    )))
}

/// The header lines (name, value) of a head a [`Reader`] accepted (its
/// bytes: see [`Head::len`]).
pub fn header_lines(head: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    let mut rest = head;
    status_line(&mut rest);
    core::iter::from_fn(move || {
        let l = line(&mut rest);
        (!l.is_empty()).then_some(l)
    })
    .filter_map(header)
}

#[cfg(test)]
mod tests;
