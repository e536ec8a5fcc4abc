//! The HTTP seam: the loops speak to [`Http`], never to surf directly, so
//! the client can be swapped without touching them. [`SurfHttp`] is surf
//! over our own HTTP/1.1 client, [`crate::h1::H1Client`] (see there why not
//! surf's async-h1 backend).
//!
//! Every failure is turned into the core's [`Failure`] here, once; the core
//! classifies it.

use std::future::Future;
use std::io;
use std::time::{Duration as StdDuration, Instant as StdInstant};

use futures_lite::AsyncReadExt;
use outage_core::protocol::Method;
use outage_core::{Duration, Failure, Transport, parse_retry_after};

use crate::deadline::Deadlines;
use crate::h1::{H1Client, H1Error, Progress, RawStatus};

/// One outgoing HTTP request (the core's [`outage_core::Request`] is
/// which protocol call it is).
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    /// Method.
    pub method: Method,
    /// Absolute URL.
    pub url: &'a str,
    /// JSON body, if any.
    pub json: Option<&'a [u8]>,
    /// The body is a form (`application/x-www-form-urlencoded`, a login),
    /// not JSON.
    pub form: bool,
    /// Give up after this long (send and receive together).
    pub timeout: StdDuration,
}

/// One response (any status).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// `Retry-After` in delta-seconds, if sent.
    pub retry_after: Option<Duration>,
    /// Body bytes (at most the client's limit).
    pub body: Vec<u8>,
}

/// A failed exchange, as the core's [`Failure`]. A failure while reading
/// the body is always [`Transport::Truncated`], never "closed" or "reset":
/// only failures before any byte of a response may count as a stale
/// connection ([`Failure::resend_once`]).
pub type HttpError = Failure;

/// An HTTP/1.1 client.
pub trait Http: Send + Sync + 'static {
    /// Send one request with its bearer token.
    fn send(
        &self,
        req: Outgoing<'_>,
        bearer: &str,
    ) -> impl Future<Output = Result<Response, HttpError>> + Send;
}

/// [`Http`] over surf with our [`H1Client`]: a keep-alive pool that reuses
/// only connections whose last exchange finished, and `TCP_NODELAY`.
pub struct SurfHttp {
    client: surf::Client,
    max_body: usize,
    /// The requests' timeouts, on timers kept from request to request.
    timers: Deadlines,
    /// The server's URL, parsed once.
    urls: Urls,
}

/// Request URLs built on the last origin (`scheme://authority`) parsed:
/// surf takes a parsed URL, and parsing one (its host with `idna`) per
/// request is a good part of a request's CPU; a URL of the same origin gets
/// its path and query set on a copy of the parsed origin instead, with the
/// same parser the whole URL would go through.
#[derive(Default)]
struct Urls(std::sync::Mutex<Option<(String, surf::Url)>>);

impl Urls {
    /// `url` parsed, or `None` if it does not parse.
    fn url(&self, url: &str) -> Option<surf::Url> {
        let split = url.find("://").and_then(|at| {
            let rest = at + 3;
            let path = url[rest..]
                .find(['/', '?', '#', '\\'])
                .map_or(url.len(), |i| rest + i);
            let (origin, tail) = url.split_at(path);
            (!tail.contains('#') && !tail.starts_with('\\')).then_some((origin, tail))
        });
        if let Some((origin, tail)) = split {
            let cached = crate::sync::lock(&self.0);
            if let Some((o, base)) = cached.as_ref()
                && o == origin
            {
                let mut built = base.clone();
                drop(cached);
                let (path, query) = match tail.split_once('?') {
                    Some((path, query)) => (path, Some(query)),
                    None => (tail, None),
                };
                built.set_path(path);
                built.set_query(query);
                return Some(built);
            }
        }
        let parsed = surf::Url::parse(url).ok()?;
        if let Some((origin, _)) = split
            && parsed.has_host()
            && !parsed.cannot_be_a_base()
        {
            let mut base = parsed.clone();
            base.set_path("");
            base.set_query(None);
            *crate::sync::lock(&self.0) = Some((origin.to_owned(), base));
        }
        Some(parsed)
    }
}

impl SurfHttp {
    /// A client that accepts response bodies up to `max_body` bytes, and
    /// reuses idle connections for up to [`crate::h1::DEFAULT_IDLE_LIMIT`].
    pub fn new(max_body: usize) -> io::Result<SurfHttp> {
        SurfHttp::with_idle_limit(max_body, crate::h1::DEFAULT_IDLE_LIMIT)
    }

    /// As [`SurfHttp::new`], closing idle connections older than
    /// `idle_limit` instead of reusing them. Keep it below the server's own
    /// keep-alive timeout (uvicorn: 5 s).
    pub fn with_idle_limit(max_body: usize, idle_limit: StdDuration) -> io::Result<SurfHttp> {
        let h1 = H1Client::new(max_body).idle_limit(idle_limit);
        Ok(SurfHttp {
            client: surf::Client::with_http_client(h1),
            max_body,
            timers: Deadlines::default(),
            urls: Urls::default(),
        })
    }

    async fn exchange(
        &self,
        req: Outgoing<'_>,
        bearer: &str,
        progress: Progress,
    ) -> Result<Response, HttpError> {
        let method = match req.method {
            Method::Get => surf::http::Method::Get,
            Method::Post => surf::http::Method::Post,
            Method::Put => surf::http::Method::Put,
            Method::Patch => surf::http::Method::Patch,
            Method::Delete => surf::http::Method::Delete,
        };
        let url = self
            .urls
            .url(req.url)
            .ok_or(Failure::Transport(Transport::Network))?;
        // Not `self.client.request(method, url)`: that parses the URL again
        // (it takes a string). The client adds no headers of its own.
        let mut builder = surf::RequestBuilder::new(method, url).header("Accept", "application/json");
        if !bearer.is_empty() {
            builder = builder.header("Authorization", format!("Bearer {bearer}"));
        }
        if let Some(body) = req.json {
            // Constants: a `&str` would be parsed as a MIME type every time.
            let kind = if req.form {
                surf::http::mime::FORM
            } else {
                surf::http::mime::JSON
            };
            builder = builder
                .body(surf::Body::from_bytes(body.to_vec()))
                .content_type(kind);
        }
        let mut request = builder.build();
        request.set_ext(progress);
        let mut res = self.client.send(request).await.map_err(|e| {
            // The underlying words, at debug level; the core gets the kind.
            crate::emit(&outage_core::Event::TransportDetail {
                error: &e.to_string(),
            });
            match e.downcast_ref::<H1Error>() {
                Some(h1) => h1.failure(),
                // Not ours (a custom `HttpClient`): read the kind from its words.
                None => Failure::Transport(transport_kind(&e)),
            }
        })?;
        let status = res.ext::<RawStatus>().map_or(res.status().into(), |s| s.0);
        let retry_after = res
            .header("Retry-After")
            .and_then(|v| parse_retry_after(v.last().as_str().as_bytes()));
        let limit = self.max_body;
        if res.len().is_some_and(|len| len > limit) {
            return Err(Failure::ResponseTooLarge);
        }
        // Our client has read the body whole, within the limit; the reads
        // below copy it out (and bound the TLS client's).
        let mut body = Vec::with_capacity(res.len().unwrap_or(0));
        let reader = res.take_body().into_reader();
        let read = reader.take(limit as u64 + 1).read_to_end(&mut body).await;
        if let Err(e) = read {
            let kind = match io_kind(&e) {
                Transport::Timeout => Transport::Timeout,
                _ => Transport::Truncated,
            };
            return Err(Failure::Transport(kind));
        }
        if body.len() > limit {
            return Err(Failure::ResponseTooLarge);
        }
        Ok(Response {
            status,
            retry_after,
            body,
        })
    }
}

impl Http for SurfHttp {
    async fn send(&self, req: Outgoing<'_>, bearer: &str) -> Result<Response, HttpError> {
        let progress = Progress::default();
        let Some(deadline) = StdInstant::now().checked_add(req.timeout) else {
            return self.exchange(req, bearer, progress).await; // never times out
        };
        let mut timer = self.timers.lease();
        // The exchange is polled first, as async_std::future::timeout does.
        futures_lite::future::or(self.exchange(req, bearer, progress.clone()), async {
            timer.until(deadline).await;
            // Before the first byte went out (a host that drops connection
            // attempts) nothing was sent; a client that does not mark its
            // progress may have sent it.
            Err(Failure::timed_out(progress.get() != Progress::CONNECTING))
        })
        .await
    }
}

fn io_kind(e: &io::Error) -> Transport {
    use io::ErrorKind::*;
    match e.kind() {
        ConnectionRefused => Transport::ConnectionRefused,
        ConnectionReset | ConnectionAborted => Transport::ConnectionReset,
        UnexpectedEof | BrokenPipe | NotConnected => Transport::ConnectionClosed,
        TimedOut | WouldBlock => Transport::Timeout,
        _ => message_kind(&e.to_string()),
    }
}

/// For another `HttpClient` than ours (ours reports [`H1Error`]s):
/// it reports some failures as text only (pool errors, "connection
/// closed"); read the kind from the io::Error when there is one, else from
/// the words.
fn transport_kind(e: &surf::Error) -> Transport {
    if let Some(io) = e.downcast_ref::<io::Error>() {
        return io_kind(io);
    }
    if e.downcast_ref::<async_std::future::TimeoutError>().is_some() {
        return Transport::Timeout;
    }
    message_kind(&e.to_string())
}

fn message_kind(msg: &str) -> Transport {
    let m = msg.to_ascii_lowercase();
    if m.contains("refused") {
        Transport::ConnectionRefused
    } else if m.contains("reset") {
        Transport::ConnectionReset
    } else if m.contains("connection closed")
        || m.contains("empty response")
        || m.contains("eof")
        || m.contains("broken pipe")
    {
        Transport::ConnectionClosed
    } else if m.contains("timed out") || m.contains("timeout") {
        Transport::Timeout
    } else if m.contains("lookup")
        || m.contains("resolve")
        || m.contains("name or service")
        || m.contains("dns")
    {
        Transport::Dns
    } else {
        // Also a TLS failure of another client: it may have come after the
        // request went out, so not `Transport::Tls` (never sent), which
        // only our own client reports, for a failed handshake.
        Transport::Network
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_built_on_a_parsed_origin_are_the_urls_parsed_whole() {
        let urls = Urls::default();
        let cases = [
            "http://127.0.0.1:8000/v1/joblib/workers",
            "http://127.0.0.1:8000/v1/joblib/tasks/claim",
            "http://127.0.0.1:8000/v1/joblib/rooms/@global/jobs",
            "http://127.0.0.1:8000/v1/joblib/tasks/abc?worker_id=x%20y&z=1",
            "http://127.0.0.1:8000/a/../b/./c d/%41é?q=é ü",
            "http://127.0.0.1:8000",
            "http://127.0.0.1:8000?x=1",
            "http://127.0.0.1:8000/x#frag",
            "http://127.0.0.1:8000\\x\\y",
            "http://127.0.0.1:8000//double//slash/",
            "http://127.0.0.1:8000/%2e%2E/x",
            "http://user:pw@Example.COM:80/p?a",
            "http://user:pw@Example.COM:80/q",
            "http://bücher.example/p",
            "http://bücher.example/p/q?r",
            "HTTP://127.0.0.1:8000/upper",
            "http://127.0.0.1:8000/upper",
        ];
        for _ in 0..2 {
            for case in cases {
                let parsed = surf::Url::parse(case).unwrap();
                assert_eq!(urls.url(case).as_ref(), Some(&parsed), "{case}");
            }
        }
        assert_eq!(urls.url("not a url"), None);
        assert_eq!(
            urls.url("http://127.0.0.1:8000/after"),
            surf::Url::parse("http://127.0.0.1:8000/after").ok()
        );
    }

    #[test]
    fn messages_map_to_kinds() {
        assert_eq!(
            message_kind("Connection refused (os error 111)"),
            Transport::ConnectionRefused
        );
        assert_eq!(message_kind("connection closed"), Transport::ConnectionClosed);
        assert_eq!(
            message_kind("failed to lookup address information"),
            Transport::Dns
        );
        assert_eq!(message_kind("something odd"), Transport::Network);
        assert_eq!(
            io_kind(&io::Error::from(io::ErrorKind::ConnectionReset)),
            Transport::ConnectionReset
        );
    }
}
