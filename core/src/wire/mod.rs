//! HTTP/1.1, sans-IO: the one place a request is framed and a response
//! is read, for both runtimes (the host's pooled client and the device's
//! one-connection exchange keep only sockets, pools, timers and buffers).
//!
//! Modelled on hyper's `proto/h1` and smoltcp's `wire`: no I/O, no heap,
//! no `core::fmt`; bytes in, meanings out.
//!
//! - [`RequestHead`] writes a request's head through a caller's sink,
//!   piece by piece (a device gathers the pieces into a small buffer; a
//!   host appends them to one `Vec`), with the one `Content-Length` rule
//!   of RFC 9110 §8.6.
//! - [`Reader`] is fed the bytes of a response as they arrive and says
//!   what they are: more needed, the final head ([`Head`]: status,
//!   framing, `Retry-After`, whether the connection may be reused), a run
//!   of body bytes (a range of the input, decoded if chunked) or the end.
//!   It follows RFC 9112: interim `1xx` heads are skipped (a `101` is
//!   refused unless the request was an upgrade: `Reader::for_upgrade`),
//!   the whole head — interim
//!   ones included — is bounded, `Content-Length` and `Transfer-Encoding`
//!   together are refused (§6.3: how responses are smuggled), a body is
//!   framed by `Content-Length`, `chunked` or the end of the connection
//!   (§6.3 rules 1–8), and the body is bounded.
//!
//! - `websocket` (with the `push` feature) is the client's side of the
//!   WebSocket opening handshake (RFC 6455 §4.1): the key, the request's
//!   headers, the check of the `101` (the host's push connection is
//!   opened with it).
//! - [`request_head`] reads a request head by the same rules, for the one
//!   server a host runs (its metrics endpoint).
//!
//! Every failure is an [`Error`], `Copy`, whose [`Error::failure`] is the
//! core's [`Failure`](crate::Failure).

mod chunked;
mod request;
mod response;
#[cfg(feature = "push")]
pub mod websocket;

pub use request::{Cursor, Full, RequestHead, Target, content_length, is_own_header};
pub use response::{
    Error, Framing, Head, Limits, MAX_HEADERS, Read, Reader, RequestLine, header_lines, request_head,
};
