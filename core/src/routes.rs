//! Requests counted by route and by what their answer meant
//! ([`RouteStats`], in [`crate::Stats`] with the `ops` feature).
//!
//! The class of an answer is the core's own [`crate::classify`]: a metrics
//! exporter shows the same split the worker acts on (an outage, a refusal,
//! a stop), not a second reading of status codes.

use crate::{Class, Endpoint, Failure};

/// A counter of [`crate::Stats`]: the target's word. `u64` on a 64-bit host;
/// `u32` on a microcontroller, where the worker's counters, kept twice
/// (the lifecycle's and the worker's view), then take 64 bytes less RAM, and
/// where 2^32 requests at one every second would take 136 years.
#[cfg(target_pointer_width = "64")]
pub type Count = u64;
/// A counter of [`crate::Stats`]: the target's word (`u64` on a 64-bit host,
/// `u32` on a microcontroller).
#[cfg(not(target_pointer_width = "64"))]
pub type Count = u32;

impl Endpoint {
    /// Every endpoint, in [`Endpoint::index`] order.
    pub const ALL: [Endpoint; 9] = [
        Endpoint::CreateWorker,
        Endpoint::RegisterJob,
        Endpoint::Claim,
        Endpoint::TaskStatus,
        Endpoint::Heartbeat,
        Endpoint::Disconnect,
        Endpoint::Submit,
        Endpoint::GetTask,
        Endpoint::Login,
    ];

    /// Its position in [`Endpoint::ALL`].
    pub const fn index(self) -> usize {
        match self {
            Endpoint::CreateWorker => 0,
            Endpoint::RegisterJob => 1,
            Endpoint::Claim => 2,
            Endpoint::TaskStatus => 3,
            Endpoint::Heartbeat => 4,
            Endpoint::Disconnect => 5,
            Endpoint::Submit => 6,
            Endpoint::GetTask => 7,
            Endpoint::Login => 8,
        }
    }

    /// A short name for labels and log fields (`claim`, `heartbeat`, …).
    pub const fn as_str(self) -> &'static str {
        match self {
            Endpoint::CreateWorker => "create_worker",
            Endpoint::RegisterJob => "register_job",
            Endpoint::Claim => "claim",
            Endpoint::TaskStatus => "task_status",
            Endpoint::Heartbeat => "heartbeat",
            Endpoint::Disconnect => "disconnect",
            Endpoint::Submit => "submit",
            Endpoint::GetTask => "get_task",
            Endpoint::Login => "login",
        }
    }
}

/// What a request's answer meant, as the core classified it: accepted, or
/// one of [`Class`]'s kinds, or no answer at all because the worker
/// dropped the request (a stop's hard limit, a halt).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum AnswerClass {
    /// Accepted.
    Ok,
    /// [`Class::Transient`]: part of an outage.
    Transient,
    /// [`Class::Congested`]: the server asked to slow down (an outage too).
    Congested,
    /// [`Class::Fatal`]: the server will not serve this worker.
    Fatal,
    /// [`Class::Rejected`]: the request itself was refused.
    Rejected,
    /// [`Class::Local`]: the worker could not write it.
    Local,
    /// Dropped before its answer (a stop's hard limit, a halt).
    Cancelled,
}

impl AnswerClass {
    /// Every class, in [`AnswerClass::index`] order.
    pub const ALL: [AnswerClass; 7] = [
        AnswerClass::Ok,
        AnswerClass::Transient,
        AnswerClass::Congested,
        AnswerClass::Fatal,
        AnswerClass::Rejected,
        AnswerClass::Local,
        AnswerClass::Cancelled,
    ];

    /// Its position in [`AnswerClass::ALL`].
    pub const fn index(self) -> usize {
        self as usize
    }

    /// A short name for labels and log fields (`ok`, `transient`, …).
    pub const fn as_str(self) -> &'static str {
        match self {
            AnswerClass::Ok => "ok",
            AnswerClass::Transient => "transient",
            AnswerClass::Congested => "congested",
            AnswerClass::Fatal => "fatal",
            AnswerClass::Rejected => "rejected",
            AnswerClass::Local => "local",
            AnswerClass::Cancelled => "cancelled",
        }
    }

    /// The kind of a [`Class`].
    pub const fn of_class(class: Class) -> AnswerClass {
        match class {
            Class::Transient => AnswerClass::Transient,
            Class::Congested { .. } => AnswerClass::Congested,
            Class::Fatal(_) => AnswerClass::Fatal,
            Class::Rejected => AnswerClass::Rejected,
            Class::Local(_) => AnswerClass::Local,
        }
    }

    /// The class of a failure of a request to `endpoint`.
    pub const fn of_failure(endpoint: Endpoint, failure: Failure) -> AnswerClass {
        AnswerClass::of_class(crate::classify(endpoint, failure))
    }
}

/// Requests by route ([`Endpoint`]) and [`AnswerClass`]: one count per
/// pair. Each request is counted once it ends (a re-send on a fresh
/// connection counts again), so the sum is [`crate::Stats::requests`] less
/// those in flight.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct RouteStats {
    counts: [[Count; 7]; 9],
}

impl RouteStats {
    /// Requests to `endpoint` whose answer meant `class`.
    pub const fn get(&self, endpoint: Endpoint, class: AnswerClass) -> Count {
        self.counts[endpoint.index()][class.index()]
    }

    /// Every pair with its count (zeros too), in a fixed order.
    pub fn iter(&self) -> impl Iterator<Item = (Endpoint, AnswerClass, Count)> + '_ {
        Endpoint::ALL
            .iter()
            .flat_map(move |e| AnswerClass::ALL.iter().map(move |c| (*e, *c, self.get(*e, *c))))
    }

    /// All requests counted.
    pub fn total(&self) -> Count {
        self.iter().map(|(_, _, n)| n).sum()
    }

    #[cfg_attr(not(any(test, feature = "ops")), allow(dead_code))]
    pub(crate) fn count(&mut self, endpoint: Endpoint, class: AnswerClass) {
        let n = &mut self.counts[endpoint.index()][class.index()];
        *n = n.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Transport;

    #[test]
    fn indices_match_the_lists() {
        for (i, e) in Endpoint::ALL.iter().enumerate() {
            assert_eq!(e.index(), i);
        }
        for (i, c) in AnswerClass::ALL.iter().enumerate() {
            assert_eq!(c.index(), i);
        }
    }

    #[test]
    fn classes_are_the_cores() {
        let refused = Failure::Transport(Transport::ConnectionRefused);
        assert_eq!(
            AnswerClass::of_failure(Endpoint::Claim, refused),
            AnswerClass::Transient
        );
        assert_eq!(
            AnswerClass::of_failure(Endpoint::Claim, Failure::status(503)),
            AnswerClass::Congested
        );
        assert_eq!(
            AnswerClass::of_failure(Endpoint::Heartbeat, Failure::status(404)),
            AnswerClass::Fatal
        );
        assert_eq!(
            AnswerClass::of_failure(Endpoint::TaskStatus, Failure::status(404)),
            AnswerClass::Rejected
        );
        let mut r = RouteStats::default();
        r.count(Endpoint::Claim, AnswerClass::Ok);
        r.count(Endpoint::Claim, AnswerClass::Ok);
        r.count(Endpoint::Heartbeat, AnswerClass::Transient);
        assert_eq!(r.get(Endpoint::Claim, AnswerClass::Ok), 2);
        assert_eq!(r.total(), 3);
        assert_eq!(r.iter().count(), 63);
    }
}
