//! Every request the test server saw.

use std::time::Duration;

/// One request, with what became of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Arrival, since the server started.
    pub at: Duration,
    /// Method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Status sent, or `None` when no (complete) answer was sent.
    pub status: Option<u16>,
    /// Request headers, names lower case, in arrival order.
    pub headers: Vec<(String, String)>,
    /// The fault injected, if any.
    pub fault: Option<&'static str>,
    /// The connection it arrived on (a counter, for keep-alive checks).
    pub connection: u64,
}

impl Entry {
    /// The value of a request header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}
