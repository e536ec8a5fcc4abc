//! An [`Event`]'s fields, by name: what a structured log (JSON lines, a
//! `log` record's key-values) carries beside the line the event renders.
//!
//! The text and the fields come from the one event: [`Event::fields`] hands
//! each field to a [`FieldSink`] (no allocation; durations in integer
//! milliseconds under keys ending in `_ms`), [`Event::name`] names the
//! event. Failures and stop reasons are handed over as `Display` values,
//! with the words of the log line.

use core::fmt::Display;

use crate::{AnswerClass, Duration, Endpoint, Event, Failure, Fatal, GiveUp};

/// Receives an event's fields, in order. Keys are `snake_case` and stable.
pub trait FieldSink {
    /// A text field (ids, names, the server's words).
    fn text(&mut self, key: &'static str, value: &str);
    /// An integer field (counts, statuses, milliseconds).
    fn num(&mut self, key: &'static str, value: u64);
    /// A yes/no field.
    fn flag(&mut self, key: &'static str, value: bool);
    /// A field with its own rendering (a failure, a stop reason): the
    /// words the log line uses for it.
    fn shown(&mut self, key: &'static str, value: &dyn Display);
}

fn ms<S: FieldSink + ?Sized>(out: &mut S, key: &'static str, d: Duration) {
    out.num(key, d.as_millis());
}

/// `error` (the words), `error_class` (what the core made of it, for a
/// request to `endpoint`) and `http_status` when there was one.
fn failure<S: FieldSink + ?Sized>(out: &mut S, endpoint: Endpoint, f: Failure) {
    out.shown("error", &f);
    out.text("error_class", AnswerClass::of_failure(endpoint, f).as_str());
    if let Failure::Status { status, .. } = f {
        out.num("http_status", u64::from(status));
    }
}

fn fatal<S: FieldSink + ?Sized>(out: &mut S, cause: Fatal) {
    let (name, status) = match cause {
        Fatal::WorkerUnknown => ("worker_unknown", None),
        Fatal::AuthRefused { status } => ("auth_refused", Some(status)),
        Fatal::NoJobApi => ("no_job_api", None),
        Fatal::LoginRefused { status } => ("login_refused", Some(status)),
    };
    out.text("cause", name);
    out.shown("reason", &cause);
    if let Some(s) = status {
        out.num("http_status", u64::from(s));
    }
}

impl Event<'_> {
    /// The event's name: `snake_case`, stable (`task_finished`,
    /// `outage_warning`, …).
    pub const fn name(&self) -> &'static str {
        match self {
            Event::OutageWarning { .. } => "outage_warning",
            Event::Recovered { .. } => "recovered",
            Event::Unreachable { .. } => "unreachable",
            Event::RegistrationLost { .. } => "registration_lost",
            Event::Reregistering => "reregistering",
            Event::Reregistered => "reregistered",
            Event::RegistrationRejected { .. } => "registration_rejected",
            Event::StartupRetry { .. } => "startup_retry",
            Event::StartupFailed { .. } => "startup_failed",
            Event::TaskSkipped { .. } => "task_skipped",
            Event::TaskFinished { .. } => "task_finished",
            Event::OutcomeHeld => "outcome_held",
            Event::OutcomeDelivered => "outcome_delivered",
            Event::OutcomeGivenUp { .. } => "outcome_given_up",
            Event::ClaimRefused { .. } => "claim_refused",
            Event::ClaimRepeated => "claim_repeated",
            Event::CredentialsExpired => "credentials_expired",
            Event::CredentialsRenewed => "credentials_renewed",
            Event::TokenFileUnusable { .. } => "token_file_unusable",
            Event::StopRequested => "stop_requested",
            Event::StopNow => "stop_now",
            Event::Registered { .. } => "registered",
            Event::Disconnected { .. } => "disconnected",
            Event::DisconnectFailed { .. } => "disconnect_failed",
            Event::StaleConnection { .. } => "stale_connection",
            Event::ClaimAnswerLost { .. } => "claim_answer_lost",
            Event::RegisteredAfresh => "registered_afresh",
            Event::RetiredOldWorker => "retired_old_worker",
            Event::RetireFailed { .. } => "retire_failed",
            Event::UpdateAlreadyApplied { .. } => "update_already_applied",
            Event::ServerSaid { .. } => "server_said",
            Event::TransportDetail { .. } => "transport_detail",
            Event::Summary { .. } => "summary",
            Event::Signal { .. } => "signal",
            Event::SignalsUnavailable => "signals_unavailable",
            Event::LocalError { .. } => "local_error",
            Event::TaskOutput { .. } => "task_output",
            Event::PushConnected { .. } => "push_connected",
            Event::PushDown { .. } => "push_down",
            Event::PushUnavailable => "push_unavailable",
            Event::PushTrace { .. } => "push_trace",
            Event::PushMalformed => "push_malformed",
            Event::Restarting { .. } => "restarting",
            Event::HandlerReady { .. } => "handler_ready",
            Event::HandlerEnded { .. } => "handler_ended",
            Event::HandlerRecycled { .. } => "handler_recycled",
            Event::HandlerGaveUp { .. } => "handler_gave_up",
            Event::HandlerOutput { .. } => "handler_output",
        }
    }

    /// Hand every field of the event to `out`, in order (not its name:
    /// [`Event::name`]). The same values the line renders, by name:
    ///
    /// ```
    /// use outage_core::{Duration, Event, FieldSink};
    /// #[derive(Default)]
    /// struct Keys(Vec<String>);
    /// impl FieldSink for Keys {
    ///     fn text(&mut self, k: &'static str, v: &str) { self.0.push(format!("{k}={v}")) }
    ///     fn num(&mut self, k: &'static str, v: u64) { self.0.push(format!("{k}={v}")) }
    ///     fn flag(&mut self, k: &'static str, v: bool) { self.0.push(format!("{k}={v}")) }
    ///     fn shown(&mut self, k: &'static str, v: &dyn std::fmt::Display) { self.0.push(format!("{k}={v}")) }
    /// }
    /// let e = Event::OutageWarning { elapsed: Duration::from_secs(30), max: Duration::from_secs(120) };
    /// let mut keys = Keys::default();
    /// e.fields(&mut keys);
    /// assert_eq!(keys.0, ["elapsed_ms=30000", "limit_ms=120000"]);
    /// ```
    pub fn fields<S: FieldSink + ?Sized>(&self, out: &mut S) {
        match *self {
            Event::OutageWarning { elapsed, max } => {
                ms(out, "elapsed_ms", elapsed);
                if max != crate::Config::NO_LIMIT {
                    ms(out, "limit_ms", max);
                }
            }
            Event::Recovered { outage } => ms(out, "outage_ms", outage),
            Event::Unreachable { max, last_error } => {
                ms(out, "limit_ms", max);
                // What ended an outage is an outage's failure: classified
                // as any request's would be.
                failure(out, Endpoint::Heartbeat, last_error);
            }
            Event::RegistrationLost { cause } => fatal(out, cause),
            Event::Reregistering
            | Event::Reregistered
            | Event::OutcomeHeld
            | Event::OutcomeDelivered
            | Event::CredentialsExpired
            | Event::CredentialsRenewed
            | Event::StopRequested
            | Event::StopNow
            | Event::RegisteredAfresh
            | Event::RetiredOldWorker
            | Event::ClaimRepeated
            | Event::SignalsUnavailable
            | Event::PushUnavailable
            | Event::PushMalformed => {}
            Event::RegistrationRejected { error } => failure(out, Endpoint::RegisterJob, error),
            Event::StartupRetry {
                what,
                error,
                retry,
                retries,
                wait,
            } => {
                out.text("endpoint", what.as_str());
                failure(out, what, error);
                out.num("retry", u64::from(retry));
                out.num("retries", u64::from(retries));
                ms(out, "wait_ms", wait);
            }
            Event::StartupFailed { what, error } => {
                out.text("endpoint", what.as_str());
                failure(out, what, error);
            }
            Event::TaskSkipped { error } => failure(out, Endpoint::TaskStatus, error),
            Event::OutcomeGivenUp {
                task_id,
                job,
                room,
                failed,
                why,
            } => {
                out.text("task_id", task_id);
                out.text("job", job);
                out.text("room", room);
                out.text("outcome", if failed { "failed" } else { "completed" });
                let (name, error) = match why {
                    GiveUp::Refused(e) => ("refused", Some(e)),
                    GiveUp::Holds(status) => {
                        out.text("task_status", status.as_str());
                        ("held_otherwise", None)
                    }
                    GiveUp::Unreachable(e) => ("unreachable", Some(e)),
                    GiveUp::Stopped => ("stopped", None),
                };
                out.text("given_up", name);
                if let Some(e) = error {
                    failure(out, Endpoint::TaskStatus, e);
                }
            }
            Event::ClaimRefused { error, retry_in } => {
                failure(out, Endpoint::Claim, error);
                ms(out, "retry_in_ms", retry_in);
            }
            Event::Signal { name, stops } => {
                out.text("signal", name);
                out.flag("stops", stops);
            }
            Event::TaskFinished {
                task_id,
                job,
                room,
                took,
                error,
            } => {
                out.text("task_id", task_id);
                out.text("job", job);
                out.text("room", room);
                ms(out, "duration_ms", took);
                out.text("outcome", if error.is_some() { "failed" } else { "completed" });
                if let Some(e) = error {
                    out.text("error", e);
                }
            }
            Event::TokenFileUnusable { why } => out.text("reason", why),
            Event::Registered { worker_id, jobs } => {
                out.text("worker_id", worker_id);
                out.num("jobs", u64::from(jobs));
            }
            Event::Disconnected { worker_id } => out.text("worker_id", worker_id),
            Event::DisconnectFailed { worker_id, error } => {
                out.text("worker_id", worker_id);
                failure(out, Endpoint::Disconnect, error);
            }
            Event::StaleConnection { what } => out.text("endpoint", what.as_str()),
            Event::ClaimAnswerLost { error } => failure(out, Endpoint::Claim, error),
            Event::RetireFailed { error } => failure(out, Endpoint::Disconnect, error),
            Event::UpdateAlreadyApplied { status } => out.text("task_status", status.as_str()),
            Event::ServerSaid { what, status, detail } => {
                out.text("endpoint", what.as_str());
                out.num("http_status", u64::from(status));
                out.text("detail", detail);
            }
            Event::TransportDetail { error } => out.text("detail", error),
            Event::Summary {
                completed,
                failed,
                delivered,
                given_up,
                requests,
                failed_requests,
                outages,
            } => {
                out.num("completed", completed);
                out.num("failed", failed);
                out.num("delivered", delivered);
                out.num("given_up", given_up);
                out.num("requests", requests);
                out.num("failed_requests", failed_requests);
                out.num("outages", outages);
            }
            Event::LocalError { what, error } => {
                out.text("endpoint", what.as_str());
                failure(out, what, Failure::Local(error));
            }
            Event::TaskOutput { output } => out.text("output", output),
            Event::PushConnected { jobs, poll } => {
                out.num("jobs", u64::from(jobs));
                ms(out, "poll_ms", poll);
            }
            Event::PushDown {
                why,
                was_up,
                retry_in,
            } => {
                out.text("reason", why);
                out.flag("was_up", was_up);
                ms(out, "retry_in_ms", retry_in);
            }
            Event::PushTrace { detail } => out.text("detail", detail),
            Event::Restarting { why, wait, restart } => {
                out.shown("reason", &why);
                ms(out, "wait_ms", wait);
                out.num("restart", u64::from(restart));
            }
            Event::HandlerReady { job, pid, took } => {
                out.text("job", job);
                out.num("pid", u64::from(pid));
                ms(out, "duration_ms", took);
            }
            Event::HandlerEnded {
                job,
                pid,
                why,
                restart_in,
            } => {
                out.text("job", job);
                out.num("pid", u64::from(pid));
                out.text("reason", why);
                ms(out, "restart_in_ms", restart_in);
            }
            Event::HandlerRecycled { job, pid, tasks } => {
                out.text("job", job);
                out.num("pid", u64::from(pid));
                out.num("tasks", u64::from(tasks));
            }
            Event::HandlerGaveUp {
                job,
                failed_starts,
                why,
            } => {
                out.text("job", job);
                out.num("failed_starts", u64::from(failed_starts));
                out.text("reason", why);
            }
            Event::HandlerOutput { job, task_id, line } => {
                out.text("job", job);
                if !task_id.is_empty() {
                    out.text("task_id", task_id);
                }
                out.text("output", line);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::Transport;
    use std::string::{String, ToString};
    use std::vec::Vec;

    #[derive(Default)]
    struct Pairs(Vec<(&'static str, String)>);
    impl FieldSink for Pairs {
        fn text(&mut self, k: &'static str, v: &str) {
            self.0.push((k, v.to_string()));
        }
        fn num(&mut self, k: &'static str, v: u64) {
            self.0.push((k, v.to_string()));
        }
        fn flag(&mut self, k: &'static str, v: bool) {
            self.0.push((k, v.to_string()));
        }
        fn shown(&mut self, k: &'static str, v: &dyn Display) {
            self.0.push((k, v.to_string()));
        }
    }

    fn pairs(e: &Event<'_>) -> Vec<(&'static str, String)> {
        let mut p = Pairs::default();
        e.fields(&mut p);
        p.0
    }

    #[test]
    fn a_task_line_carries_its_names_outcome_and_duration() {
        let e = Event::TaskFinished {
            task_id: "t-1",
            job: "@global:modifiers:Echo",
            room: "room1",
            took: Duration::from_millis(1_250),
            error: Some("exit status 2: boom"),
        };
        let p = pairs(&e);
        let keys: Vec<(&str, &str)> = p.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(
            keys,
            [
                ("task_id", "t-1"),
                ("job", "@global:modifiers:Echo"),
                ("room", "room1"),
                ("duration_ms", "1250"),
                ("outcome", "failed"),
                ("error", "exit status 2: boom"),
            ]
        );
        assert_eq!(e.name(), "task_finished");
    }

    #[test]
    fn failures_carry_their_words_and_the_cores_class() {
        let e = Event::StartupRetry {
            what: Endpoint::CreateWorker,
            error: Failure::status(503),
            retry: 2,
            retries: 5,
            wait: Duration::from_millis(1_400),
        };
        let p = pairs(&e);
        let get = |k: &str| p.iter().find(|(key, _)| *key == k).map(|(_, v)| v.as_str());
        assert_eq!(get("endpoint"), Some("create_worker"));
        assert_eq!(get("error_class"), Some("congested"));
        assert_eq!(get("http_status"), Some("503"));
        assert_eq!(get("error"), Some(Failure::status(503).to_string().as_str()));
        assert_eq!(get("wait_ms"), Some("1400"));
        let e = Event::Unreachable {
            max: Duration::from_secs(120),
            last_error: Failure::Transport(Transport::ConnectionRefused),
        };
        let p = pairs(&e);
        assert_eq!(p[0], ("limit_ms", "120000".to_string()));
        assert_eq!(p[1], ("error", "Connection refused".to_string()));
        assert_eq!(p[2], ("error_class", "transient".to_string()));
        let e = Event::OutageWarning {
            elapsed: Duration::from_secs(3),
            max: crate::Config::NO_LIMIT,
        };
        assert_eq!(pairs(&e), [("elapsed_ms", "3000".to_string())]);
    }
}
