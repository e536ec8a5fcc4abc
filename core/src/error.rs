//! Failures and their classification, decided once for both runtimes.

use crate::Duration;
use crate::render::{Render, Sink, Words, impl_render_outputs, words};

/// Which request failed. Classification depends on it: a 404 from the
/// heartbeat means the server forgot the worker, a 404 on a task update only
/// means that task is gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /workers`
    CreateWorker,
    /// `PUT /rooms/{room}/jobs`
    RegisterJob,
    /// `POST /tasks/claim`
    Claim,
    /// `PATCH /tasks/{id}`
    TaskStatus,
    /// `PATCH /workers/{id}`
    Heartbeat,
    /// `DELETE /workers/{id}`
    Disconnect,
    /// `POST /rooms/{room}/tasks/{job}` (clients, not workers)
    Submit,
    /// `GET /tasks/{id}`
    GetTask,
    /// `POST /v1/auth/jwt/login` (or reading a token file again)
    Login,
}

/// How a request failed below HTTP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// Nothing listens at the address (`ECONNREFUSED`).
    ConnectionRefused,
    /// The peer reset the connection.
    ConnectionReset,
    /// The peer closed the connection before any byte of a response.
    ConnectionClosed,
    /// The response started but was cut short (closed or reset mid-body).
    Truncated,
    /// No answer within the request timeout (the request was being sent,
    /// or had been: the server may have acted on it).
    Timeout,
    /// No connection within the request timeout (the host drops
    /// connection attempts, a network partition): nothing was sent.
    ConnectTimeout,
    /// The host name did not resolve.
    Dns,
    /// The TLS handshake failed (an untrusted or mismatched certificate, a
    /// refused handshake): reported before any byte of the request, so it
    /// never arrived.
    Tls,
    /// The request could not be written in full (the connection failed
    /// while sending): the server cannot have acted on it.
    SendFailed,
    /// Any other network error.
    Network,
}

/// A failed request, as a runtime reports it to the core. `Copy` and small.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// No usable HTTP response.
    Transport(Transport),
    /// An HTTP response with an unexpected status.
    Status {
        /// The status code.
        status: u16,
        /// A `Retry-After` header in delta-seconds, if present.
        retry_after: Option<Duration>,
    },
    /// The response body did not fit the buffer set aside for it.
    ResponseTooLarge,
    /// The response body could not be parsed.
    MalformedResponse,
    /// The worker could not even write the request: a problem of this
    /// worker (its buffers, its configuration), not of the server. Never
    /// sent, never an outage.
    Local(Local),
}

/// A request the worker could not write. Its own class
/// ([`Class::Local`]): retrying cannot help, so the worker stops with
/// [`crate::StopReason::Local`] and says which request and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Local {
    /// The request body does not fit the buffer set aside for it.
    BodyTooLarge,
    /// The request's URL (server URL and path) does not fit its buffer.
    UrlTooLong,
    /// The request could not be encoded (for example, a name the server
    /// sent that this worker cannot hold).
    Encoding,
    /// The credentials could not be renewed from what this worker was
    /// given: the token file cannot be read or holds no valid token. The
    /// server was not asked.
    TokenFile,
}

impl Failure {
    /// A status failure without `Retry-After`.
    pub const fn status(status: u16) -> Self {
        Failure::Status {
            status,
            retry_after: None,
        }
    }

    /// Classify this failure of a request to `endpoint`.
    pub const fn classify(self, endpoint: Endpoint) -> Class {
        classify(endpoint, self)
    }

    /// A request's timeout ran out: before its connection came up nothing
    /// was sent ([`Transport::ConnectTimeout`]); after, the server may have
    /// acted on it ([`Transport::Timeout`]). Both runtimes report a timeout
    /// so.
    pub const fn timed_out(connected: bool) -> Failure {
        Failure::Transport(if connected {
            Transport::Timeout
        } else {
            Transport::ConnectTimeout
        })
    }

    /// Connecting failed, so nothing was sent: refused, timed out, or any
    /// other failure ([`Transport::SendFailed`]: the one re-send at once).
    pub const fn connect_failed(refused: bool, timed_out: bool) -> Failure {
        Failure::Transport(match (refused, timed_out) {
            (true, _) => Transport::ConnectionRefused,
            (false, true) => Transport::ConnectTimeout,
            (false, false) => Transport::SendFailed,
        })
    }

    /// The request provably never reached the server: nothing listened,
    /// the name did not resolve, no connection came up in time, its TLS
    /// handshake failed, or the request could not be written in full. Anything else may have been
    /// acted on, even without an answer.
    pub const fn never_sent(self) -> bool {
        matches!(
            self,
            Failure::Transport(
                Transport::ConnectionRefused
                    | Transport::Dns
                    | Transport::ConnectTimeout
                    | Transport::SendFailed
                    | Transport::Tls
            ) | Failure::Local(_)
        )
    }

    /// Should the runtime send this request once more, at once, on a fresh
    /// connection? The core's rule for both runtimes:
    /// - a request that could not be written ([`Transport::SendFailed`]) is
    ///   re-sent whatever its method: the server never saw it;
    /// - a connection closed or reset before any byte of an answer — what a
    ///   request meets on a keep-alive connection the server had just closed
    ///   (uvicorn closes idle ones after 5 s) — is re-sent only when
    ///   `resendable` (the request's [`crate::Request::may_resend`]):
    ///   the server may have acted on it, so a `POST` is never re-sent
    ///   blindly; it becomes an ambiguous claim for the core instead.
    ///
    /// Only one re-send: a second failure is reported to the core.
    pub const fn resend_once(self, resendable: bool) -> bool {
        match self {
            Failure::Transport(Transport::SendFailed) => true,
            Failure::Transport(Transport::ConnectionClosed | Transport::ConnectionReset) => resendable,
            _ => false,
        }
    }

    /// Did the request reach the server, and may it have acted on it,
    /// without us learning the result? True for every failure but those
    /// that [never reached it](Failure::never_sent) and definite answers
    /// (a status the server chose: 4xx, 429, 503). A 500, 502 or 504 is
    /// ambiguous: the server (or the one behind a proxy) may have committed
    /// the change before it failed. A 200 whose body could not be read
    /// ([`Failure::MalformedResponse`], [`Failure::ResponseTooLarge`]) is
    /// ambiguous too: the server acted, and we do not know how.
    pub const fn maybe_acted(self) -> bool {
        match self {
            Failure::Transport(_) => !self.never_sent(),
            Failure::Status { status, .. } => status >= 500 && status != 503,
            Failure::ResponseTooLarge | Failure::MalformedResponse => true,
            Failure::Local(_) => false,
        }
    }
}

/// Why the server will not serve this worker any more.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fatal {
    /// 404 on a worker endpoint: the server does not know this worker
    /// (it was restarted without its state, or swept the worker).
    WorkerUnknown,
    /// 401 or 403: the token was refused.
    AuthRefused {
        /// 401 or 403.
        status: u16,
    },
    /// 404 on `POST /workers`: no job API at the configured URL.
    NoJobApi,
    /// Logging in was refused (400 bad credentials, 401, 403, 404 no login
    /// endpoint, 422): the user or password is wrong.
    LoginRefused {
        /// The status.
        status: u16,
    },
}

/// What a failure means for the worker. Decided once, here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Class {
    /// The server is unreachable or broken for now (connect/reset/timeout,
    /// DNS, 5xx other than 503, unusable body): an outage.
    Transient,
    /// The server is up but asks us to slow down (429, 503): an outage,
    /// waiting at least `retry_after` when given (capped by the core).
    Congested {
        /// The server's `Retry-After`, if any.
        retry_after: Option<Duration>,
    },
    /// The server will not serve this worker: stop (or register again).
    Fatal(Fatal),
    /// The request itself was refused (400, 409, 422, 404 task, ...): the
    /// request's problem, not an outage. The server is reachable.
    Rejected,
    /// The worker could not write the request ([`Failure::Local`]): its
    /// own problem; the server was not asked, so this says nothing about it.
    Local(Local),
}

/// Classify a failure of a request to `endpoint`.
pub const fn classify(endpoint: Endpoint, failure: Failure) -> Class {
    match failure {
        Failure::Local(local) => Class::Local(local),
        Failure::Transport(_) | Failure::ResponseTooLarge | Failure::MalformedResponse => Class::Transient,
        Failure::Status { status, retry_after } if matches!(endpoint, Endpoint::Login) => match status {
            408 | 500..=502 | 504..=599 => Class::Transient,
            429 | 503 => Class::Congested { retry_after },
            _ => Class::Fatal(Fatal::LoginRefused { status }),
        },
        Failure::Status { status, retry_after } => match status {
            401 | 403 => Class::Fatal(Fatal::AuthRefused { status }),
            404 => match endpoint {
                Endpoint::Heartbeat | Endpoint::Claim | Endpoint::RegisterJob => {
                    Class::Fatal(Fatal::WorkerUnknown)
                }
                Endpoint::CreateWorker => Class::Fatal(Fatal::NoJobApi),
                Endpoint::TaskStatus
                | Endpoint::Disconnect
                | Endpoint::Submit
                | Endpoint::GetTask
                | Endpoint::Login => Class::Rejected,
            },
            408 => Class::Transient,
            429 | 503 => Class::Congested { retry_after },
            500..=599 => Class::Transient,
            _ => Class::Rejected,
        },
    }
}

/// Parse a `Retry-After` value in delta-seconds (`"5"`). The HTTP-date form
/// and anything unparsable give `None`: the core's own backoff applies.
pub fn parse_retry_after(value: &[u8]) -> Option<Duration> {
    let value = value.trim_ascii();
    if value.is_empty() || value.len() > 9 {
        return None;
    }
    let mut secs: u64 = 0;
    for &b in value {
        if !b.is_ascii_digit() {
            return None;
        }
        secs = secs * 10 + u64::from(b - b'0');
    }
    Some(Duration::from_secs(secs))
}

fn reason(status: u16) -> Words {
    match status {
        400 => words!(" Bad Request"),
        401 => words!(" Unauthorized"),
        403 => words!(" Forbidden"),
        404 => words!(" Not Found"),
        408 => words!(" Request Timeout"),
        409 => words!(" Conflict"),
        422 => words!(" Unprocessable Content"),
        429 => words!(" Too Many Requests"),
        500 => words!(" Internal Server Error"),
        502 => words!(" Bad Gateway"),
        503 => words!(" Service Unavailable"),
        504 => words!(" Gateway Timeout"),
        _ => words!(""),
    }
}

impl Render for Transport {
    fn render<S: Sink + ?Sized>(&self, out: &mut S) {
        out.words(match self {
            Transport::ConnectionRefused => words!("Connection refused"),
            Transport::ConnectionReset => words!("Connection reset"),
            Transport::ConnectionClosed => words!("Connection closed"),
            Transport::Truncated => words!("Response cut short"),
            Transport::Timeout => words!("Request timed out"),
            Transport::ConnectTimeout => words!("Connection timed out"),
            Transport::Dns => words!("Host name did not resolve"),
            Transport::Tls => words!("TLS error"),
            Transport::SendFailed => words!("Request could not be sent"),
            Transport::Network => words!("Network error"),
        });
    }
}

impl Render for Failure {
    fn render<S: Sink + ?Sized>(&self, out: &mut S) {
        match self {
            Failure::Transport(t) => t.render(out),
            Failure::Status { status, retry_after } => {
                out.words(words!("HTTP "));
                out.num(u64::from(*status));
                out.words(reason(*status));
                if let Some(d) = retry_after {
                    out.words(words!(" (Retry-After "));
                    crate::render::WholeSecs(*d).render(out);
                    out.words(words!(")"));
                }
            }
            Failure::ResponseTooLarge => out.words(words!("Response too large for its buffer")),
            Failure::MalformedResponse => out.words(words!("Malformed response")),
            Failure::Local(local) => local.render(out),
        }
    }
}

impl Render for Local {
    fn render<S: Sink + ?Sized>(&self, out: &mut S) {
        out.words(match self {
            Local::BodyTooLarge => words!("the request body does not fit the worker's buffer"),
            Local::UrlTooLong => words!("the request URL does not fit the worker's buffer"),
            Local::Encoding => words!("the request could not be encoded"),
            Local::TokenFile => words!("the token file is unusable"),
        });
    }
}

impl Render for Fatal {
    fn render<S: Sink + ?Sized>(&self, out: &mut S) {
        match self {
            Fatal::WorkerUnknown => out.words(words!("the server does not know this worker")),
            Fatal::AuthRefused { status } => {
                out.words(words!("the server refused the token (HTTP "));
                out.num(u64::from(*status));
                out.words(words!(")"));
            }
            Fatal::NoJobApi => out.words(words!("no job API at the configured URL (HTTP 404)")),
            Fatal::LoginRefused { status } => {
                out.words(words!("the server refused the login (HTTP "));
                out.num(u64::from(*status));
                out.words(words!("): check the user name and password"));
            }
        }
    }
}

impl_render_outputs!(Transport, Failure, Fatal);

/// Why a worker could not start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StartupError {
    /// The request that failed.
    pub what: Endpoint,
    /// Its last failure.
    pub error: Failure,
    /// How many retries were made before giving up.
    pub retries: u32,
}

impl Render for StartupError {
    fn render<S: Sink + ?Sized>(&self, out: &mut S) {
        self.what.render(out);
        out.words(words!(" failed: "));
        self.error.render(out);
        if self.retries > 0 {
            out.words(words!(" (after "));
            out.num(u64::from(self.retries));
            out.words(if self.retries == 1 {
                words!(" retry)")
            } else {
                words!(" retries)")
            });
        }
    }
}

impl_render_outputs!(StartupError);

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::string::ToString;

    const ALL: [Endpoint; 8] = [
        Endpoint::CreateWorker,
        Endpoint::RegisterJob,
        Endpoint::Claim,
        Endpoint::TaskStatus,
        Endpoint::Heartbeat,
        Endpoint::Disconnect,
        Endpoint::Submit,
        Endpoint::GetTask,
    ];

    #[test]
    fn transport_failures_are_transient_everywhere() {
        for e in ALL {
            for t in [
                Transport::ConnectionRefused,
                Transport::Timeout,
                Transport::ConnectTimeout,
                Transport::Dns,
                Transport::ConnectionReset,
            ] {
                assert_eq!(classify(e, Failure::Transport(t)), Class::Transient);
            }
            assert_eq!(classify(e, Failure::MalformedResponse), Class::Transient);
            assert_eq!(classify(e, Failure::ResponseTooLarge), Class::Transient);
            assert_eq!(classify(e, Failure::status(500)), Class::Transient);
            assert_eq!(classify(e, Failure::status(502)), Class::Transient);
            assert_eq!(classify(e, Failure::status(504)), Class::Transient);
        }
    }

    #[test]
    fn congestion_keeps_retry_after() {
        let ra = Some(Duration::from_secs(7));
        assert_eq!(
            classify(
                Endpoint::Claim,
                Failure::Status {
                    status: 429,
                    retry_after: ra
                }
            ),
            Class::Congested { retry_after: ra }
        );
        assert_eq!(
            classify(Endpoint::Heartbeat, Failure::status(503)),
            Class::Congested { retry_after: None }
        );
    }

    #[test]
    fn fatal_and_rejected() {
        for e in ALL {
            assert_eq!(
                classify(e, Failure::status(401)),
                Class::Fatal(Fatal::AuthRefused { status: 401 })
            );
            assert_eq!(
                classify(e, Failure::status(403)),
                Class::Fatal(Fatal::AuthRefused { status: 403 })
            );
            assert_eq!(classify(e, Failure::status(409)), Class::Rejected);
            assert_eq!(classify(e, Failure::status(422)), Class::Rejected);
            assert_eq!(classify(e, Failure::status(400)), Class::Rejected);
        }
        assert_eq!(
            classify(Endpoint::Heartbeat, Failure::status(404)),
            Class::Fatal(Fatal::WorkerUnknown)
        );
        assert_eq!(
            classify(Endpoint::Claim, Failure::status(404)),
            Class::Fatal(Fatal::WorkerUnknown)
        );
        assert_eq!(
            classify(Endpoint::TaskStatus, Failure::status(404)),
            Class::Rejected
        );
        assert_eq!(
            classify(Endpoint::CreateWorker, Failure::status(404)),
            Class::Fatal(Fatal::NoJobApi)
        );
    }

    #[test]
    fn resend_only_what_never_reached_the_server_or_is_safe() {
        let closed = Failure::Transport(Transport::ConnectionClosed);
        let reset = Failure::Transport(Transport::ConnectionReset);
        let unsent = Failure::Transport(Transport::SendFailed);
        // Idempotent routes: a close before any answer is re-sent once.
        assert!(closed.resend_once(true));
        assert!(reset.resend_once(true));
        // POST: never re-sent unless it provably was not sent.
        assert!(!closed.resend_once(false));
        assert!(!reset.resend_once(false));
        assert!(unsent.resend_once(false));
        for f in [
            Failure::Transport(Transport::Truncated),
            Failure::Transport(Transport::ConnectionRefused),
            Failure::Transport(Transport::Timeout),
            // Never sent, but a second wait for a connection would only
            // delay the outage's clock: reported at once.
            Failure::Transport(Transport::ConnectTimeout),
            Failure::status(503),
            Failure::MalformedResponse,
        ] {
            assert!(!f.resend_once(true), "{f:?}");
            assert!(!f.resend_once(false), "{f:?}");
        }
    }

    #[test]
    fn timeouts_and_failed_connects_say_whether_anything_was_sent() {
        assert!(Failure::timed_out(true).maybe_acted());
        assert!(Failure::timed_out(false).never_sent());
        for (refused, timed_out) in [(true, false), (true, true), (false, true), (false, false)] {
            assert!(Failure::connect_failed(refused, timed_out).never_sent());
        }
        assert_eq!(
            Failure::connect_failed(true, false),
            Failure::Transport(Transport::ConnectionRefused)
        );
    }

    #[test]
    fn what_may_have_been_acted_on() {
        for f in [
            Failure::Transport(Transport::ConnectionRefused),
            Failure::Transport(Transport::Dns),
            Failure::Transport(Transport::ConnectTimeout),
            Failure::Transport(Transport::SendFailed),
            // A handshake that failed: before any byte of the request.
            Failure::Transport(Transport::Tls),
            Failure::status(400),
            Failure::status(404),
            Failure::status(409),
            Failure::status(429),
            Failure::status(503),
        ] {
            assert!(!f.maybe_acted(), "{f:?}");
        }
        for f in [
            Failure::Transport(Transport::Timeout),
            Failure::Transport(Transport::ConnectionClosed),
            Failure::Transport(Transport::ConnectionReset),
            Failure::Transport(Transport::Truncated),
            Failure::Transport(Transport::Network),
            Failure::status(500),
            Failure::status(502),
            Failure::status(504),
            Failure::MalformedResponse,
            Failure::ResponseTooLarge,
        ] {
            assert!(f.maybe_acted(), "{f:?}");
        }
    }

    #[test]
    fn retry_after_parsing() {
        assert_eq!(parse_retry_after(b" 5 "), Some(Duration::from_secs(5)));
        assert_eq!(parse_retry_after(b"0"), Some(Duration::ZERO));
        assert_eq!(parse_retry_after(b"Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(parse_retry_after(b"-1"), None);
        assert_eq!(parse_retry_after(b""), None);
        assert_eq!(parse_retry_after(b"99999999999"), None);
    }

    #[test]
    fn failures_render_without_debug_noise() {
        assert_eq!(
            Failure::Transport(Transport::ConnectionRefused).to_string(),
            "Connection refused"
        );
        assert_eq!(Failure::status(502).to_string(), "HTTP 502 Bad Gateway");
        assert_eq!(
            Failure::Status {
                status: 429,
                retry_after: Some(Duration::from_secs(3))
            }
            .to_string(),
            "HTTP 429 Too Many Requests (Retry-After 3s)"
        );
        assert_eq!(Failure::status(599).to_string(), "HTTP 599");
    }
}
