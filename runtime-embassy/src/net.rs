//! One HTTP/1.1 exchange over reqwless and embedded-nal-async, with every
//! failure turned into the core's [`Failure`] here, once.

use embedded_nal_async::{Dns, TcpConnect};
use outage_core::protocol::Method;
use outage_core::{Duration, Failure, Transport, parse_retry_after};
use reqwless::client::{HttpClient, HttpRequestHandle};
use reqwless::headers::ContentType;
use reqwless::request::{RequestBody, RequestBuilder};

/// A response: its status, `Retry-After`, and where its body lies in the
/// caller's receive buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    /// Status code.
    pub status: u16,
    /// `Retry-After` in delta-seconds.
    pub retry_after: Option<Duration>,
    /// The body's bytes in the receive buffer.
    pub body: core::ops::Range<usize>,
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

/// Failures before the response head is complete.
fn head_failure(e: reqwless::Error) -> Failure {
    use reqwless::Error::*;
    match e {
        Dns => Failure::Transport(Transport::Dns),
        Network(k) => Failure::Transport(kind(k)),
        // The server closed the connection before a complete head: the
        // reqwless read returned 0 bytes.
        ConnectionAborted => Failure::Transport(Transport::ConnectionClosed),
        BufferTooSmall => Failure::ResponseTooLarge,
        Codec => Failure::MalformedResponse,
        _ => Failure::Transport(Transport::Network),
    }
}

/// Failures while reading the body: the response was cut short.
fn body_failure(e: reqwless::Error) -> Failure {
    use reqwless::Error::*;
    match e {
        BufferTooSmall => Failure::ResponseTooLarge,
        Codec => Failure::MalformedResponse,
        Network(embedded_io::ErrorKind::TimedOut) => Failure::Transport(Transport::Timeout),
        _ => Failure::Transport(Transport::Truncated),
    }
}

async fn finish<C, B>(mut handle: HttpRequestHandle<'_, C, B>, rx: &mut [u8]) -> Result<Exchange, Failure>
where
    C: embedded_io_async::Read + embedded_io_async::Write,
    B: RequestBody,
{
    let base = rx.as_ptr() as usize;
    let response = handle.send(rx).await.map_err(head_failure)?;
    let status = response.status.0;
    let retry_after = response
        .headers()
        .find(|(name, _)| name.eq_ignore_ascii_case("retry-after"))
        .and_then(|(_, value)| parse_retry_after(value));
    let body = response.body().read_to_end().await.map_err(body_failure)?;
    let start = body.as_ptr() as usize - base;
    Ok(Exchange {
        status,
        retry_after,
        body: start..start + body.len(),
    })
}

/// Send one request to `url` and read its response into `rx`.
#[allow(clippy::too_many_arguments)]
pub async fn exchange<T: TcpConnect, D: Dns>(
    tcp: &T,
    dns: &D,
    method: Method,
    url: &str,
    bearer: &str,
    body: Option<&[u8]>,
    rx: &mut [u8],
    timeout: Duration,
) -> Result<Exchange, Failure> {
    let method = match method {
        Method::Get => reqwless::request::Method::GET,
        Method::Post => reqwless::request::Method::POST,
        Method::Put => reqwless::request::Method::PUT,
        Method::Patch => reqwless::request::Method::PATCH,
        Method::Delete => reqwless::request::Method::DELETE,
    };
    let timeout = embassy_time::Duration::from_millis(timeout.as_millis());
    let work = async {
        let mut client = HttpClient::new(tcp, dns);
        let handle = client.request(method, url).await.map_err(head_failure)?;
        let headers = [("Authorization", bearer), ("Accept", "application/json")];
        let handle = handle.headers(&headers);
        match body {
            Some(b) => finish(handle.body(b).content_type(ContentType::ApplicationJson), rx).await,
            None => finish(handle, rx).await,
        }
    };
    match embassy_time::with_timeout(timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(Failure::Transport(Transport::Timeout)),
    }
}
