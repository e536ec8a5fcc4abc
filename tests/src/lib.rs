//! Test infrastructure for `outage`: the Rust test job server with fault
//! injection ([`server`]), a launcher for the real ZnDraw job server from
//! `../shared/jobserver` ([`real`]), and a plain HTTP/1.1 client for
//! protocol-level tests ([`http`]). The cross-crate integration tests live
//! in `tests/tests/`.

pub mod http;
pub mod real;
pub mod server;
