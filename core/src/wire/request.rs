//! Writing a request: [`RequestHead`], piece by piece through a sink.

use super::response::is_tchar;
pub use crate::protocol::Full;
use crate::protocol::Route;

/// Should a request of `method` with `body_len` bytes of content say its
/// length? Always when it has content; without, only for the methods whose
/// meaning anticipates content (`POST`, `PUT`, `PATCH`: RFC 9110 §8.6 —
/// "SHOULD NOT send … when the method semantics do not anticipate such
/// data", so a `GET` or `DELETE` without a body says nothing).
pub fn content_length(method: &str, body_len: usize) -> bool {
    // Of RFC 9110's methods and PATCH, exactly these three begin with P.
    body_len > 0 || method.starts_with('P')
}

/// Is `name` a header a [`RequestHead`] writes itself or rules out
/// (`Host`, `Content-Length`, `Transfer-Encoding`)? A caller with headers
/// of its own leaves these out of [`RequestHead::headers`].
pub fn is_own_header(name: &[u8]) -> bool {
    [&b"host"[..], b"content-length", b"transfer-encoding"]
        .iter()
        .any(|h| name.eq_ignore_ascii_case(h))
}

/// Where a request goes on its server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    /// A request target already encoded (path and query).
    Raw(&'a [u8]),
    /// A path under a base path (`base` then `path`, both as they are).
    Path {
        /// The server URL's path, without a trailing slash.
        base: &'a [u8],
        /// The path under it.
        path: &'a [u8],
    },
    /// A protocol route under a base path (a server behind a proxy path:
    /// `/zndraw`, or empty), its segments percent-encoded on the way out.
    Route {
        /// The server URL's path, without a trailing slash.
        base: &'a [u8],
        /// The route.
        route: Route<'a>,
    },
}

/// The head of a request: request line, `Host`, the bearer token, the
/// caller's headers, `Content-Length` by [`content_length`].
#[derive(Debug, Clone, Copy)]
pub struct RequestHead<'a> {
    /// The method's name (`GET`, …).
    pub method: &'a str,
    /// The request target.
    pub target: Target<'a>,
    /// The `Host` header's value: the server's authority (`host[:port]`).
    pub host: &'a [u8],
    /// A bearer token for `Authorization: Bearer …`.
    pub bearer: Option<&'a [u8]>,
    /// More headers, written as given: not `Host` or `Content-Length`,
    /// which this head writes, nor `Transfer-Encoding` (the body is sent
    /// whole) — [`is_own_header`] tells them.
    pub headers: &'a [(&'a [u8], &'a [u8])],
    /// The length of the body that follows the head.
    pub body_len: usize,
}

impl RequestHead<'_> {
    /// Can this head be written as it says: a method and header names of
    /// `tchar`s, a target, host, token and values free of CR, LF and NUL
    /// (else a value could end its line and inject another), a target and
    /// host without spaces?
    pub fn is_valid(&self) -> bool {
        let free = |v: &[u8]| !v.iter().any(|&b| matches!(b, b'\r' | b'\n' | 0));
        let word = |v: &[u8]| free(v) && !v.contains(&b' ');
        let token = |v: &[u8]| !v.is_empty() && v.iter().all(|&b| is_tchar(b));
        let target = match self.target {
            Target::Raw(t) => word(t),
            Target::Path { base, path } => word(base) && word(path),
            Target::Route { base, .. } => word(base),
        };
        token(self.method.as_bytes())
            && target
            && word(self.host)
            && self.bearer.is_none_or(word)
            && self
                .headers
                .iter()
                .all(|&(n, v)| token(n) && free(v) && !is_own_header(n))
    }

    /// Writes the head through `out`, piece by piece, up to and with the
    /// empty line that ends it (the body is the caller's to write next).
    pub fn write(&self, out: &mut dyn FnMut(&[u8]) -> Result<(), Full>) -> Result<(), Full> {
        let mut digits = [0u8; 20];
        let (base, path, route): (&[u8], &[u8], _) = match self.target {
            Target::Raw(t) => (b"", if t.is_empty() { b"/" } else { t }, None),
            Target::Path { base, path } => (base, path, None),
            Target::Route { base, route } => (base, b"", Some(route)),
        };
        pieces(out, &[self.method.as_bytes(), b" ", base])?;
        if let Some(route) = route {
            route.write_path(out)?;
        }
        pieces(out, &[path, b" HTTP/1.1\r\nHost: ", self.host])?;
        if let Some(token) = self.bearer {
            pieces(out, &[b"\r\nAuthorization: Bearer ", token])?;
        }
        for &(name, value) in self.headers {
            pieces(out, &[b"\r\n", name, b": ", value])?;
        }
        if content_length(self.method, self.body_len) {
            pieces(
                out,
                &[b"\r\nContent-Length: ", decimal(self.body_len, &mut digits)],
            )?;
        }
        out(b"\r\n\r\n")
    }
}

/// Each of `pieces` through `out`, in order.
fn pieces(out: &mut dyn FnMut(&[u8]) -> Result<(), Full>, pieces: &[&[u8]]) -> Result<(), Full> {
    pieces.iter().try_for_each(|p| out(p))
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

/// A sink into a caller's buffer: [`Cursor::put`] appends, or fails
/// ([`Full`]) when the buffer has no room left.
#[derive(Debug)]
pub struct Cursor<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl<'a> Cursor<'a> {
    /// An empty cursor over `buf`.
    pub fn new(buf: &'a mut [u8]) -> Cursor<'a> {
        Cursor { buf, len: 0 }
    }

    /// Appends `piece` whole, or nothing.
    pub fn put(&mut self, piece: &[u8]) -> Result<(), Full> {
        let to = self.buf.get_mut(self.len..self.len + piece.len()).ok_or(Full)?;
        to.copy_from_slice(piece);
        self.len += piece.len();
        Ok(())
    }

    /// The bytes written.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Nothing written yet?
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use std::vec::Vec;

    fn bytes(head: &RequestHead<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        head.write(&mut |b: &[u8]| {
            out.extend_from_slice(b);
            Ok(())
        })
        .unwrap();
        out
    }

    #[test]
    fn heads_carry_host_token_headers_and_the_length() {
        let head = RequestHead {
            method: "PATCH",
            target: Target::Route {
                base: b"/zndraw",
                route: Route::TaskStatus { task_id: "a b" },
            },
            host: b"example.org:8123",
            bearer: Some(b"t0k"),
            headers: &[(b"Accept", b"application/json")],
            body_len: 2,
        };
        assert!(head.is_valid());
        for own in [&b"Host"[..], b"content-length", b"Transfer-Encoding"] {
            let headers: &[(&[u8], &[u8])] = &[(own, b"x")];
            assert!(is_own_header(own));
            assert!(!RequestHead { headers, ..head }.is_valid());
        }
        assert_eq!(
            bytes(&head),
            b"PATCH /zndraw/v1/joblib/tasks/a%20b HTTP/1.1\r\nHost: example.org:8123\r\nAuthorization: Bearer t0k\r\nAccept: application/json\r\nContent-Length: 2\r\n\r\n"
        );
        let get = RequestHead {
            method: "GET",
            target: Target::Raw(b""),
            host: b"h",
            bearer: None,
            headers: &[(b"Authorization", b"Bearer kept")],
            body_len: 0,
        };
        assert_eq!(
            bytes(&get),
            b"GET / HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer kept\r\n\r\n"
        );
        let post = RequestHead {
            method: "POST",
            target: Target::Raw(b"/p?q=1"),
            headers: &[],
            ..get
        };
        assert_eq!(
            bytes(&post),
            b"POST /p?q=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n"
        );
        let delete = RequestHead {
            method: "DELETE",
            ..post
        };
        assert_eq!(bytes(&delete), b"DELETE /p?q=1 HTTP/1.1\r\nHost: h\r\n\r\n");
    }

    #[test]
    fn the_length_is_said_when_content_is_expected() {
        for (method, len, said) in [
            ("GET", 0, false),
            ("DELETE", 0, false),
            ("HEAD", 0, false),
            ("GET", 1, true),
            ("POST", 0, true),
            ("PUT", 0, true),
            ("PATCH", 0, true),
            ("DELETE", 3, true),
        ] {
            assert_eq!(content_length(method, len), said, "{method} {len}");
        }
    }

    #[test]
    fn heads_that_would_inject_a_line_are_refused() {
        let ok = RequestHead {
            method: "GET",
            target: Target::Raw(b"/x"),
            host: b"h",
            bearer: Some(b"t"),
            headers: &[(b"X-A", b"a b\tc")],
            body_len: 0,
        };
        assert!(ok.is_valid());
        let bad = [
            RequestHead { method: "G T", ..ok },
            RequestHead { method: "", ..ok },
            RequestHead {
                target: Target::Raw(b"/x HTTP/1.0\r\nX: y"),
                ..ok
            },
            RequestHead {
                host: b"h\r\nX: y",
                ..ok
            },
            RequestHead {
                bearer: Some(b"a\r\nX-Evil: 1"),
                ..ok
            },
            RequestHead {
                headers: &[(b"X A", b"b")],
                ..ok
            },
            RequestHead {
                headers: &[(b"X-A", b"b\nc")],
                ..ok
            },
            RequestHead {
                headers: &[(b"X-A", b"b\0c")],
                ..ok
            },
        ];
        for head in bad {
            assert!(!head.is_valid(), "{head:?}");
        }
    }

    #[test]
    fn cursors_take_whole_pieces_or_none() {
        let mut buf = [0u8; 5];
        let mut c = Cursor::new(&mut buf);
        assert!(c.is_empty());
        assert_eq!(c.put(b"abc"), Ok(()));
        assert_eq!(c.put(b"def"), Err(Full));
        assert_eq!(c.put(b"de"), Ok(()));
        assert_eq!(c.len(), 5);
        assert_eq!(&buf, b"abcde");
    }
}
