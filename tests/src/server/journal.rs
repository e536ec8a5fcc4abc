//! Every request the test server saw, and what became of it.

use std::time::Duration;

/// One request, with what became of it. Entries are in arrival order (a
/// request arrives when its body has been read), and each names its
/// connection, so a test can tell which answer went to which request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The request's number, counted from 0 since the server started (it
    /// keeps counting across [`super::TestServer::clear_journal`]).
    pub seq: u64,
    /// Arrival, since the server started.
    pub at: Duration,
    /// Method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Status sent in full (handed to the connection with the client still
    /// there), or `None` when no complete answer was sent: the fault sent
    /// none (blackhole, drop), cut it short (reset, truncated body), or the
    /// client had gone before it was ready (late, pause, slow).
    pub status: Option<u16>,
    /// The status the server produced for the request: the one sent, or the
    /// one it would have sent had the answer not been cut or its client not
    /// gone. `None` while nothing was produced (blackhole, drop, a request
    /// still held by a pause, a slow one whose client left).
    pub reply: Option<u16>,
    /// The API processed the request: its state changes (a claim, a status
    /// update, a new worker …) are committed. False when a fault answered
    /// instead (status, malformed or oversized body), sent nothing
    /// (blackhole, drop), or the request was cancelled (slow) or is still
    /// held (pause).
    pub processed: bool,
    /// When it was processed, since the server started.
    pub processed_at: Option<Duration>,
    /// When its answer was handed to the connection (with `status`), since
    /// the server started.
    pub answered_at: Option<Duration>,
    /// The body the API answered with, when processed (for a claim: which
    /// task it handed out), whether or not it reached the client.
    pub reply_body: Option<String>,
    /// The request body (lossy UTF-8).
    pub body: String,
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

    /// Processed, but its answer never reached the client in full: the
    /// request's effect is committed and the client cannot know it.
    pub fn answer_lost(&self) -> bool {
        self.processed && self.status.is_none()
    }

    /// For a processed `POST /tasks/claim`: the id of the task it handed
    /// out (`None` for `{"task":null}` or any other request).
    pub fn claimed_task(&self) -> Option<String> {
        if !self.path.ends_with("/tasks/claim") || self.reply != Some(200) {
            return None;
        }
        let v: serde_json::Value = serde_json::from_str(self.reply_body.as_deref()?).ok()?;
        v["task"]["id"].as_str().map(str::to_owned)
    }
}
