//! The socket under each connection, with the controls faults need:
//! activity tracking (idle keep-alive close) and cutting a response short
//! with a FIN (truncated body) or an RST (reset mid-response).

use std::io;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Where to cut the next response.
#[derive(Debug, Clone, Copy)]
pub struct Cut {
    /// Body bytes still allowed after the head.
    body_left: usize,
    /// Reset (RST) instead of a clean close (FIN).
    reset: bool,
    head_done: bool,
    matched: usize,
}

impl Cut {
    /// Let the head through, then `body_bytes` of the body, then close
    /// (`reset`: with an RST).
    pub fn after_body_bytes(body_bytes: usize, reset: bool) -> Cut {
        Cut {
            body_left: body_bytes,
            reset,
            head_done: false,
            matched: 0,
        }
    }

    /// How many bytes of `buf` may pass before the cut.
    fn allowance(&self, buf: &[u8]) -> usize {
        let mut probe = *self;
        let mut n = 0;
        for &b in buf {
            if !probe.advance(b) {
                break;
            }
            n += 1;
        }
        n
    }

    /// Account for one byte; false if it is past the cut.
    fn advance(&mut self, b: u8) -> bool {
        if !self.head_done {
            const END: &[u8; 4] = b"\r\n\r\n";
            if b == END[self.matched] {
                self.matched += 1;
            } else {
                self.matched = usize::from(b == b'\r');
            }
            if self.matched == 4 {
                self.head_done = true;
            }
            true
        } else if self.body_left > 0 {
            self.body_left -= 1;
            true
        } else {
            false
        }
    }

    fn at_cut(&self) -> bool {
        self.head_done && self.body_left == 0
    }
}

/// Shared controls of one connection.
#[derive(Debug)]
pub struct ConnCtl {
    last_activity: Mutex<Instant>,
    in_flight: AtomicUsize,
    cut: Mutex<Option<Cut>>,
}

impl ConnCtl {
    pub fn new() -> Self {
        ConnCtl {
            last_activity: Mutex::new(Instant::now()),
            in_flight: AtomicUsize::new(0),
            cut: Mutex::new(None),
        }
    }

    fn touch(&self) {
        *self.last_activity.lock().unwrap() = Instant::now();
    }

    /// Time since the last byte moved, or zero while a request is in flight.
    pub fn idle_for(&self) -> Duration {
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            return Duration::ZERO;
        }
        self.last_activity.lock().unwrap().elapsed()
    }

    /// Cut the next response.
    pub fn cut_next(&self, cut: Cut) {
        *self.cut.lock().unwrap() = Some(cut);
    }

    /// Mark a request in flight until the guard drops.
    pub fn request(self: &std::sync::Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.touch();
        InFlight(self.clone())
    }
}

/// A request in flight on a connection.
pub struct InFlight(std::sync::Arc<ConnCtl>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A `TcpStream` that reports activity and obeys [`Cut`]s.
pub struct CtlStream {
    inner: TcpStream,
    ctl: std::sync::Arc<ConnCtl>,
}

impl CtlStream {
    pub fn new(inner: TcpStream, ctl: std::sync::Arc<ConnCtl>) -> Self {
        CtlStream { inner, ctl }
    }
}

impl AsyncRead for CtlStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.ctl.touch();
        }
        r
    }
}

impl AsyncWrite for CtlStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.ctl.touch();
        let cut = *self.ctl.cut.lock().unwrap();
        let Some(cut) = cut else {
            return Pin::new(&mut self.inner).poll_write(cx, buf);
        };
        let allow = cut.allowance(buf);
        if allow == 0 || cut.at_cut() {
            if cut.reset {
                // SO_LINGER 0: closing the socket sends an RST.
                let _ = socket2::SockRef::from(&self.inner).set_linger(Some(Duration::ZERO));
            }
            *self.ctl.cut.lock().unwrap() = None;
            let kind = if cut.reset {
                io::ErrorKind::ConnectionReset
            } else {
                io::ErrorKind::BrokenPipe
            };
            return Poll::Ready(Err(io::Error::new(kind, "response cut by fault injection")));
        }
        let r = Pin::new(&mut self.inner).poll_write(cx, &buf[..allow]);
        if let Poll::Ready(Ok(n)) = r {
            let mut guard = self.ctl.cut.lock().unwrap();
            if let Some(c) = guard.as_mut() {
                for &b in &buf[..n] {
                    c.advance(b);
                }
            }
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let cut = *self.ctl.cut.lock().unwrap();
        if let Some(cut) = cut
            && cut.at_cut()
        {
            // Everything allowed is written: cut now rather than wait for
            // the rest of the body.
            if cut.reset {
                let _ = socket2::SockRef::from(&self.inner).set_linger(Some(Duration::ZERO));
            }
            *self.ctl.cut.lock().unwrap() = None;
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "response cut by fault injection",
            )));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_lets_the_head_and_some_body_through() {
        let resp = b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n0123456789";
        let cut = Cut::after_body_bytes(4, false);
        let head = resp.len() - 10;
        assert_eq!(cut.allowance(resp), head + 4);
        // Split across writes.
        let mut c = cut;
        for &b in &resp[..head - 2] {
            assert!(c.advance(b));
        }
        assert_eq!(c.allowance(&resp[head - 2..]), 2 + 4);
    }
}
