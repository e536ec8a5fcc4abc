//! A small HTTP/1.1 server for `/metrics`, `/healthz` and `/readyz` on
//! async-std (feature `metrics`).
//!
//! It faces the network, so it is bounded: 16 connections at once (more
//! are closed at once), one request per connection, a request head of at
//! most 8 KiB read within 5 s, no request body, `GET` and `HEAD` only. It
//! serves nothing but the three paths; nothing it serves is secret (no
//! token, no payload), but bind it to loopback or a private address.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_std::io::{ReadExt, WriteExt};
use async_std::net::{TcpListener, TcpStream};
use futures_lite::FutureExt;

use super::Metrics;

/// Connections served at once.
const MAX_CONNECTIONS: usize = 16;
/// The largest request head read.
const MAX_HEAD: usize = 8 << 10;
/// Time to read a request and write its answer.
const TIMEOUT: Duration = Duration::from_secs(5);

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The running server ([`serve`]); dropping it stops it (connections
/// being answered finish).
#[derive(Debug)]
pub struct MetricsServer {
    addr: SocketAddr,
    stop: async_std::channel::Sender<()>,
}

impl MetricsServer {
    /// Where it listens (the port chosen, for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.close();
    }
}

/// Serve `metrics` on `addr` (`127.0.0.1:9100`): `GET /metrics` (OpenMetrics
/// text when the client accepts it, as Prometheus does; else Prometheus's
/// text format 0.0.4), `/healthz` (200 while the worker's driver is alive,
/// else 503) and `/readyz` (200 when ready, else 503), each with a line of
/// text saying why ([`crate::metrics::Health`]). Binds before it returns:
/// an address in use is an error here.
pub fn serve(addr: impl ToSocketAddrs, metrics: Metrics) -> io::Result<MetricsServer> {
    let listener = std::net::TcpListener::bind(addr)?;
    let addr = listener.local_addr()?;
    listener.set_nonblocking(true)?;
    let listener = TcpListener::from(listener);
    let (stop, stopped) = async_std::channel::bounded::<()>(1);
    let active = Arc::new(AtomicUsize::new(0));
    async_std::task::spawn(async move {
        loop {
            let accepted = async { Some(listener.accept().await) }
                .or(async {
                    let _ = stopped.recv().await;
                    None
                })
                .await;
            let Some(accepted) = accepted else { return };
            let Ok((stream, _)) = accepted else {
                // Out of file descriptors and the like: do not spin.
                async_std::task::sleep(Duration::from_millis(50)).await;
                continue;
            };
            if active.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
                active.fetch_sub(1, Ordering::AcqRel);
                drop(stream);
                continue;
            }
            let (metrics, active) = (metrics.clone(), active.clone());
            async_std::task::spawn(async move {
                let _ = async_std::future::timeout(TIMEOUT, answer(stream, &metrics)).await;
                active.fetch_sub(1, Ordering::AcqRel);
            });
        }
    });
    Ok(MetricsServer { addr, stop })
}

/// What a request asks for.
#[derive(Debug, PartialEq, Eq)]
struct Asked {
    head_only: bool,
    path: String,
    openmetrics: bool,
}

/// Header lines a request may have here (the answer to more is 431).
const MAX_REQUEST_HEADERS: usize = 32;

/// Parse a request head (ending with its empty line) by the core's rules
/// ([`outage_core::wire::request_head`]); `Err` is the status to answer.
fn parse(head: &[u8]) -> Result<Asked, u16> {
    use outage_core::wire::{self, Error};
    let (line, len) = match wire::request_head(head) {
        Ok(Some(found)) => found,
        Ok(None) | Err(Error::Malformed) => return Err(400),
        Err(_) => return Err(431),
    };
    let headers = &head[..len];
    if wire::header_lines(headers).count() > MAX_REQUEST_HEADERS {
        return Err(431);
    }
    let head_only = match line.method {
        b"GET" => false,
        b"HEAD" => true,
        _ => return Err(405),
    };
    let target = String::from_utf8_lossy(line.target);
    let path = target.split_once('?').map_or(&*target, |(p, _)| p).to_owned();
    let openmetrics = wire::header_lines(headers).any(|(name, value)| {
        name.eq_ignore_ascii_case(b"accept")
            && std::str::from_utf8(value).is_ok_and(|v| v.contains("application/openmetrics-text"))
    });
    Ok(Asked {
        head_only,
        path,
        openmetrics,
    })
}

/// The answer to a request: status, content type, body.
fn respond(asked: &Asked, metrics: &Metrics) -> (u16, &'static str, String) {
    const TEXT: &str = "text/plain; charset=utf-8";
    match asked.path.as_str() {
        "/metrics" if asked.openmetrics => (200, OPENMETRICS, metrics.encode_openmetrics()),
        "/metrics" => (200, PROMETHEUS_TEXT, metrics.encode_prometheus()),
        "/healthz" => {
            let h = metrics.health();
            let (code, word) = if h.alive { (200, "ok") } else { (503, "unhealthy") };
            (code, TEXT, format!("{word}: {}\n", h.status))
        }
        "/readyz" => {
            let h = metrics.health();
            let (code, word) = if h.ready {
                (200, "ready")
            } else {
                (503, "not ready")
            };
            (code, TEXT, format!("{word}: {}\n", h.status))
        }
        _ => (
            404,
            TEXT,
            "not found: try /metrics, /healthz or /readyz\n".to_owned(),
        ),
    }
}

fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

async fn answer(mut stream: TcpStream, metrics: &Metrics) -> io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    let parsed = loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break if end + 4 > MAX_HEAD {
                Err(431)
            } else {
                parse(&head[..end + 4])
            };
        }
        if head.len() > MAX_HEAD {
            break Err(431);
        }
    };
    let (code, content_type, body, head_only) = match parsed {
        Ok(asked) => {
            let (code, ct, body) = respond(&asked, metrics);
            (code, ct, body, asked.head_only)
        }
        Err(code) => (
            code,
            "text/plain; charset=utf-8",
            format!("{}\n", reason(code)),
            false,
        ),
    };
    let allow = if code == 405 { "Allow: GET, HEAD\r\n" } else { "" };
    let mut out = format!(
        "HTTP/1.1 {code} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{allow}Cache-Control: no-store\r\nConnection: close\r\n\r\n",
        reason(code),
        body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
    stream.write_all(&out).await?;
    stream.flush().await?;
    let _ = stream.shutdown(std::net::Shutdown::Write);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_parsed_and_bounded() {
        let a = parse(b"GET /metrics?x=1 HTTP/1.1\r\nHost: h\r\nAccept: application/openmetrics-text;version=1.0.0\r\n\r\n")
            .unwrap();
        assert_eq!(
            a,
            Asked {
                head_only: false,
                path: "/metrics".into(),
                openmetrics: true
            }
        );
        let a = parse(b"HEAD /readyz HTTP/1.0\r\n\r\n").unwrap();
        assert!(a.head_only && !a.openmetrics);
        assert_eq!(parse(b"POST /metrics HTTP/1.1\r\n\r\n"), Err(405));
        assert_eq!(parse(b"\x00\x01 nonsense\r\n\r\n"), Err(400));
        let many: String = (0..40).map(|i| format!("X-{i}: y\r\n")).collect();
        assert_eq!(
            parse(format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes()),
            Err(431)
        );
    }

    fn get(addr: SocketAddr, request: &[u8]) -> String {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.write_all(request).unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    }

    #[test]
    fn serves_the_three_paths_and_refuses_the_rest() {
        let metrics = Metrics::new();
        let server = serve("127.0.0.1:0", metrics).unwrap();
        let addr = server.local_addr();
        let r = get(addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(r.ends_with("ok: starting\n"), "{r}");
        let r = get(addr, b"GET /readyz HTTP/1.1\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 503 "), "{r}");
        let r = get(
            addr,
            b"GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text\r\n\r\n",
        );
        assert!(r.contains(OPENMETRICS) && r.ends_with("# EOF\n"), "{r}");
        let r = get(addr, b"GET /metrics HTTP/1.1\r\n\r\n");
        assert!(r.contains(PROMETHEUS_TEXT) && !r.contains("# EOF"), "{r}");
        let r = get(addr, b"GET /secret HTTP/1.1\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 404 "), "{r}");
        let r = get(addr, b"DELETE /metrics HTTP/1.1\r\n\r\n");
        assert!(
            r.starts_with("HTTP/1.1 405 ") && r.contains("Allow: GET, HEAD"),
            "{r}"
        );
        let r = get(addr, b"HEAD /healthz HTTP/1.1\r\n\r\n");
        assert!(r.ends_with("\r\n\r\n"), "no body for HEAD: {r}");
        let huge = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD));
        let r = get(addr, huge.as_bytes());
        assert!(r.starts_with("HTTP/1.1 431 "), "{r}");
        // Connections beyond the limit are closed, the rest still served.
        let idle: Vec<std::net::TcpStream> = (0..MAX_CONNECTIONS + 4)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        drop(idle);
        std::thread::sleep(Duration::from_millis(300));
        let r = get(addr, b"GET /healthz HTTP/1.1\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        drop(server);
    }
}
