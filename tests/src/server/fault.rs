//! Faults the test server can inject, alone or on a schedule.

use std::time::{Duration, Instant};

/// One kind of misbehaviour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// The listener is closed: connecting is refused (`ECONNREFUSED`), and
    /// open connections are closed.
    Refuse,
    /// Connections are accepted and requests read, but never answered:
    /// when the fault ends (or the client gives up) the connection is
    /// closed without a word, and the request is never processed.
    Blackhole,
    /// The connection is reset (RST) in the middle of the response.
    Reset,
    /// Answer with this status (500, 502, 503, 429 …) and an optional
    /// `Retry-After` in seconds, instead of the real answer.
    Status {
        /// The status code.
        status: u16,
        /// `Retry-After` seconds, if any.
        retry_after: Option<u32>,
    },
    /// 200 with a body that is not valid JSON.
    MalformedJson,
    /// The real answer, with the body cut short and the connection closed.
    TruncatedBody,
    /// 200 with a valid JSON body of about this many bytes.
    OversizedBody(usize),
    /// The real answer, after this delay. The delay comes *before* the
    /// request is processed, and it is part of the connection's service:
    /// a client that gives up and closes the connection during the delay
    /// cancels it, and the request is never processed (the journal shows
    /// `processed: false`). A slow *network* in front of a server, not a
    /// slow server. See [`Fault::Late`] for the other kind.
    Slow(Duration),
    /// The request is processed at once (its state changes commit), and the
    /// answer is sent after this delay. A client that gives up before then
    /// never learns the result, but the change stays committed: a slow
    /// server whose work is done, or an answer lost on the way back. The
    /// journal shows `processed: true` and the status that was (or would
    /// have been) sent. A `POST /tasks/claim` under `Late` longer than the
    /// client's timeout is an ambiguous claim.
    Late(Duration),
    /// A stopped server (SIGSTOP): connections are still accepted and
    /// requests read, but none is processed or answered while the pause
    /// lasts. When no pause plan is active any more, every held request is
    /// processed in arrival order and answered (late), also those whose
    /// clients have gone — as uvicorn does after SIGCONT; no request that
    /// arrives after the pause overtakes a held one. Idle keep-alive
    /// connections are not closed during a pause (a stopped process closes
    /// nothing). Unlike [`Fault::Blackhole`], which never processes what it
    /// held.
    Pause,
    /// The request is read, then the connection is closed without a byte
    /// of answer — what a client sees when it sends on a keep-alive
    /// connection the server has just closed.
    Drop,
    /// The request is processed (its state changes commit), and answered
    /// with the last answer to the same method and path instead of its own
    /// (if there was one): an answer delivered twice, as a caching or
    /// broken proxy does. On `POST /tasks/claim` the client sees the task
    /// it claimed before, while the server may have claimed another for
    /// it.
    Repeat,
}

impl Fault {
    /// A short name for journals and messages.
    pub fn name(&self) -> &'static str {
        match self {
            Fault::Refuse => "refuse",
            Fault::Blackhole => "blackhole",
            Fault::Reset => "reset",
            Fault::Status { .. } => "status",
            Fault::MalformedJson => "malformed-json",
            Fault::TruncatedBody => "truncated-body",
            Fault::OversizedBody(_) => "oversized-body",
            Fault::Slow(_) => "slow",
            Fault::Late(_) => "late",
            Fault::Pause => "pause",
            Fault::Drop => "drop",
            Fault::Repeat => "repeat",
        }
    }
}

/// A fault, when it applies, and to which requests.
#[derive(Debug, Clone)]
pub struct FaultPlan {
    /// The fault.
    pub fault: Fault,
    /// Active from this instant (inclusive).
    pub from: Instant,
    /// Active until this instant (exclusive); `None`: until cleared.
    pub until: Option<Instant>,
    /// Only requests whose path contains this (ignored by `Refuse`).
    pub path_contains: Option<String>,
    /// Only requests with this method (ignored by `Refuse`).
    pub method: Option<String>,
    /// Only this many requests (then the plan is spent); `None`: all.
    pub times: Option<u32>,
    /// Let this many matching requests through first.
    pub skip: u32,
}

impl FaultPlan {
    /// Is the plan active at `t`?
    pub fn active_at(&self, t: Instant) -> bool {
        t >= self.from && self.until.is_none_or(|u| t < u)
    }

    /// Path and method match, whatever the count.
    pub fn applies_ignoring_count(&self, method: &str, path: &str) -> bool {
        self.path_contains.as_deref().is_none_or(|p| path.contains(p))
            && self
                .method
                .as_deref()
                .is_none_or(|m| m.eq_ignore_ascii_case(method))
    }

    /// Does the plan apply to this request at `t`?
    pub fn applies(&self, t: Instant, method: &str, path: &str) -> bool {
        self.active_at(t)
            && self.times != Some(0)
            && self.path_contains.as_deref().is_none_or(|p| path.contains(p))
            && self
                .method
                .as_deref()
                .is_none_or(|m| m.eq_ignore_ascii_case(method))
    }
}
