//! Test infrastructure for `outage`: the Rust test job server with fault
//! injection ([`server`]), a launcher for the real ZnDraw job server from
//! `../shared/jobserver` ([`real`]), a plain HTTP/1.1 client for
//! protocol-level tests ([`http`]), a capturing logger ([`capture`]), the
//! one scenario list every worker runtime must pass ([`scenarios`]) and the
//! record of what its handlers ran ([`record`]).

pub mod capture;
pub mod cli;
pub mod embassy_rt;
pub mod http;
pub mod real;
pub mod record;
pub mod scenarios;
pub mod server;
pub mod std_rt;
