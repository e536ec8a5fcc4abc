//! Faults the test server can inject, alone or on a schedule.

use std::time::{Duration, Instant};

/// One kind of misbehaviour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// The listener is closed: connecting is refused (`ECONNREFUSED`), and
    /// open connections are closed.
    Refuse,
    /// Connections are accepted and requests read, but never answered.
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
    /// The real answer, after this delay.
    Slow(Duration),
    /// The request is read, then the connection is closed without a byte
    /// of answer — what a client sees when it sends on a keep-alive
    /// connection the server has just closed.
    Drop,
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
            Fault::Drop => "drop",
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
