//! In-module tests of the loop decisions, on a manual clock.

extern crate std;

use super::*;
use crate::{Clock, ConfigError, Jitter, ManualClock, Transport};
use std::string::{String, ToString};
use std::vec::Vec;

const REFUSED: Failure = Failure::Transport(Transport::ConnectionRefused);

fn ms(v: u64) -> Instant {
    Instant::from_millis(v)
}

fn secs(v: u64) -> Duration {
    Duration::from_secs(v)
}

fn texts<A>(step: &Step<A>) -> Vec<String> {
    step.events.iter().map(|e| e.to_string()).collect()
}

fn reference() -> Machine {
    Machine::new(Config::REFERENCE, Instant::ZERO, 0).unwrap()
}

/// Drives the claim loop alone against a dead server; returns the instants
/// of its claims and the step that stopped it (a failure, or the expiry).
fn claims_until_stop(m: &mut Machine, clock: &ManualClock) -> (Vec<u64>, Step<()>) {
    let mut at = Vec::new();
    for _ in 0..1000 {
        match m.claim_poll(clock.now()) {
            ClaimAction::Wait(t) => clock.set(t),
            ClaimAction::Claim => {
                at.push(clock.now().as_millis());
                let step = m.on_claim(clock.now(), clock.now(), Err(REFUSED), 0);
                if let ClaimAction::Stop(_) = step.action {
                    let Step { events, wake, .. } = step;
                    return (
                        at,
                        Step {
                            action: (),
                            events,
                            wake,
                        },
                    );
                }
            }
            ClaimAction::Expire => return (at, m.on_expired(clock.now())),
            other => panic!("unexpected {other:?}"),
        }
    }
    panic!("no stop within 1000 steps");
}

#[test]
fn jitter_off_reproduces_the_reference_schedule() {
    let clock = ManualClock::new(Instant::ZERO);
    let mut m = reference();
    let (at, last) = claims_until_stop(&mut m, &clock);
    let secs: Vec<u64> = at.iter().map(|t| t / 1000).collect();
    // The reference's 2, 4, 8, 10, 10 … s, with the last try at the limit
    // (120 s, where the reference would wait until 124 s) and the stop at
    // 120 s + 1 ms: the outage deadline.
    assert_eq!(secs, [0, 2, 6, 14, 24, 34, 44, 54, 64, 74, 84, 94, 104, 114, 120]);
    assert_eq!(clock.now(), ms(120_001));
    assert_eq!(
        texts(&last),
        ["Server unreachable for >120s, shutting down. Last error: Connection refused"]
    );
    assert_eq!(last.wake, Wake::Halt);
    assert_eq!(
        m.stop_reason(),
        Some(StopReason::Unreachable { last_error: REFUSED })
    );
}

#[test]
fn warnings_count_down_at_most_once_per_log_interval() {
    let clock = ManualClock::new(Instant::ZERO);
    let mut m = reference();
    let mut lines = Vec::new();
    for _ in 0..200 {
        match m.claim_poll(clock.now()) {
            ClaimAction::Wait(t) => clock.set(t),
            ClaimAction::Claim => {
                let step = m.on_claim(clock.now(), clock.now(), Err(REFUSED), 0);
                for e in step.events.iter() {
                    lines.push(std::format!("{}: {e}", clock.now().as_millis() / 1000));
                }
            }
            ClaimAction::Expire => {
                for e in m.on_expired(clock.now()).events.iter() {
                    lines.push(std::format!("{}: {e}", clock.now().as_millis() / 1000));
                }
            }
            ClaimAction::Stop(_) => break,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(lines[0], "0: Server unreachable — retrying (0s/120s elapsed)");
    // 2 s after the first warning: throttled. 6 s: allowed again.
    assert_eq!(lines[1], "6: Server unreachable — retrying (6s/120s elapsed)");
    assert_eq!(lines[2], "14: Server unreachable — retrying (14s/120s elapsed)");
    assert!(
        lines
            .last()
            .unwrap()
            .starts_with("120: Server unreachable for >120s")
    );
}

#[test]
fn heartbeat_alone_stops_at_max_not_a_beat_later() {
    let clock = ManualClock::new(Instant::ZERO);
    let mut m = reference();
    let mut beats = Vec::new();
    let last = loop {
        match m.heartbeat_poll(clock.now()) {
            HeartbeatAction::Wait(t) => clock.set(t),
            HeartbeatAction::Beat => {
                beats.push(clock.now().as_millis() / 1000);
                let step = m.on_heartbeat(clock.now(), clock.now(), Err(REFUSED));
                assert!(!matches!(step.action, HeartbeatAction::Stop(_)));
            }
            HeartbeatAction::Expire => break m.on_expired(clock.now()),
            HeartbeatAction::Stop(_) | HeartbeatAction::Login => unreachable!(),
        }
    };
    // The outage began at the first failed beat (30 s): the stop comes at
    // 150 s + 1 ms, not at the beat of 180 s.
    assert_eq!(beats, [30, 60, 90, 120, 150]);
    assert_eq!(clock.now(), ms(150_001));
    assert_eq!(
        texts(&last),
        ["Server unreachable for >120s, shutting down. Last error: Connection refused"]
    );
    assert_eq!(last.wake, Wake::Halt);
    assert!(matches!(m.heartbeat_poll(clock.now()), HeartbeatAction::Stop(_)));
}

#[test]
fn a_long_task_does_not_hide_the_outage_limit() {
    let mut m = reference();
    // A task runs for ten minutes; the claim loop is busy in its handler.
    m.on_claim(ms(0), ms(0), Ok(true), 0);
    m.on_started(ms(0), ms(10), Ok(()), 0);
    assert_eq!(m.claim_poll(ms(10)), ClaimAction::Execute);
    // One heartbeat fails at 30 s; the next would be at 60, 90 … s.
    let step = m.on_heartbeat(ms(30_000), ms(30_000), Err(REFUSED));
    assert_eq!(step.action, HeartbeatAction::Wait(ms(60_000)));
    // With a long heartbeat interval the deadline comes first.
    let cfg = Config {
        heartbeat_interval: secs(300),
        ..Config::REFERENCE
    };
    let mut m = Machine::new(cfg, Instant::ZERO, 0).unwrap();
    m.on_claim(ms(0), ms(0), Ok(true), 0);
    m.on_started(ms(0), ms(10), Ok(()), 0);
    m.on_heartbeat(ms(300_000), ms(300_000), Err(REFUSED));
    // The next beat comes at the limit (300 s after the outage began it
    // would be far later), then the deadline.
    assert_eq!(m.heartbeat_poll(ms(300_001)), HeartbeatAction::Wait(ms(420_000)));
    assert_eq!(m.outage_deadline(), Some(ms(420_001)));
    assert_eq!(m.heartbeat_poll(ms(420_000)), HeartbeatAction::Beat);
    let step = m.on_heartbeat(ms(420_000), ms(420_000), Err(REFUSED));
    assert_eq!(step.action, HeartbeatAction::Wait(ms(420_001)));
    assert_eq!(m.heartbeat_poll(ms(420_001)), HeartbeatAction::Expire);
    let step = m.on_expired(ms(420_001));
    assert_eq!(step.wake, Wake::Halt);
    assert_eq!(
        m.claim_poll(ms(420_001)),
        ClaimAction::Stop(m.stop_reason().unwrap())
    );
}

#[test]
fn a_spurious_expiry_changes_nothing() {
    let mut m = reference();
    let step = m.on_expired(ms(1_000_000));
    assert!(step.events.is_empty());
    assert_eq!(m.stop_reason(), None);
    // Recovered before the deadline: no deadline any more.
    m.on_heartbeat(ms(0), ms(0), Err(REFUSED));
    assert_eq!(m.outage_deadline(), Some(ms(120_001)));
    m.on_heartbeat(ms(30_000), ms(30_000), Ok(()));
    assert_eq!(m.outage_deadline(), None);
    assert!(m.on_expired(ms(200_000)).events.is_empty());
}

/// Review finding 2: when the heartbeat loop decides to stop, the claim loop
/// must not sleep on until its backoff ends.
#[test]
fn review_finding_2_a_stop_from_one_loop_is_seen_by_all_at_once() {
    let mut m = reference();
    // Claim loop in a long backoff.
    let step = m.on_claim(ms(100_000), ms(100_000), Err(REFUSED), 0);
    assert!(matches!(step.action, ClaimAction::Wait(_)));
    // Heartbeat hits a fatal error at 101 s.
    let hb = m.on_heartbeat(ms(101_000), ms(101_000), Err(Failure::status(404)));
    assert_eq!(hb.wake, Wake::Halt);
    assert_eq!(
        hb.action,
        HeartbeatAction::Stop(StopReason::RegistrationLost(Fatal::WorkerUnknown))
    );
    // The claim loop, woken at once, stops without waiting for its deadline.
    assert_eq!(
        m.claim_poll(ms(101_001)),
        ClaimAction::Stop(StopReason::RegistrationLost(Fatal::WorkerUnknown))
    );
    assert_eq!(
        m.heartbeat_poll(ms(101_001)),
        HeartbeatAction::Stop(StopReason::RegistrationLost(Fatal::WorkerUnknown))
    );
}

/// Review finding 3 lives in the runtimes' tests (every loop has exited);
/// here: once stopped, every later poll and report says Stop.
#[test]
fn review_finding_3_stopped_is_terminal_for_every_entry_point() {
    let mut m = reference();
    m.on_heartbeat(ms(0), ms(0), Err(Failure::status(401)));
    let reason = StopReason::RegistrationLost(Fatal::AuthRefused { status: 401 });
    assert_eq!(m.heartbeat_poll(ms(1)), HeartbeatAction::Stop(reason));
    assert_eq!(m.claim_poll(ms(1)), ClaimAction::Stop(reason));
    assert_eq!(
        m.on_claim(ms(1), ms(1), Ok(true), 0).action,
        ClaimAction::Stop(reason)
    );
    assert_eq!(
        m.on_heartbeat(ms(1), ms(1), Ok(())).action,
        HeartbeatAction::Stop(reason)
    );
    assert!(
        m.request_stop().events.is_empty(),
        "already stopped: nothing new to log"
    );
    assert_eq!(m.stop_reason(), Some(reason));
}

#[test]
fn fatal_errors_stop_immediately_with_the_reference_words() {
    let mut m = reference();
    let step = m.on_claim(ms(0), ms(0), Err(Failure::status(404)), 0);
    assert_eq!(
        step.action,
        ClaimAction::Stop(StopReason::RegistrationLost(Fatal::WorkerUnknown))
    );
    assert_eq!(
        texts(&step),
        ["Registration lost, shutting down: the server does not know this worker"]
    );
}

#[test]
fn heartbeat_success_wakes_the_claim_loop_out_of_its_backoff() {
    let mut m = reference();
    for t in [0, 2_000, 6_000, 14_000] {
        m.on_claim(ms(t), ms(t), Err(REFUSED), 0);
    }
    assert_eq!(m.claim_poll(ms(15_000)), ClaimAction::Wait(ms(24_000)));
    let step = m.on_heartbeat(ms(15_000), ms(15_000), Ok(()));
    assert_eq!(step.wake, Wake::Claim);
    assert_eq!(texts(&step), ["Server reachable again after 15s"]);
    assert_eq!(m.claim_poll(ms(15_000)), ClaimAction::Claim);
    // The backoff starts over after recovery.
    let step = m.on_claim(ms(15_000), ms(15_000), Err(REFUSED), 0);
    assert_eq!(step.action, ClaimAction::Wait(ms(17_000)));
}

#[test]
fn deadlines_count_from_the_start_of_the_attempt() {
    let mut m = reference();
    // A claim that took 5 s to fail: next one 2 s after it started.
    let step = m.on_claim(ms(0), ms(5_000), Err(Failure::status(503)), 0);
    assert_eq!(
        step.action,
        ClaimAction::Claim,
        "deadline 2 s already passed at 5 s"
    );
    // A heartbeat that took 4 s: next 30 s after it started.
    let step = m.on_heartbeat(ms(30_000), ms(34_000), Ok(()));
    assert_eq!(step.action, HeartbeatAction::Wait(ms(60_000)));
    // Success: poll interval from the start of the claim.
    let step = m.on_claim(ms(40_000), ms(40_500), Ok(false), 0);
    assert_eq!(step.action, ClaimAction::Wait(ms(42_000)));
}

#[test]
fn retry_after_is_honoured_within_the_cap_and_the_budget() {
    let mut m = reference();
    let congested = |s| Failure::Status {
        status: 503,
        retry_after: Some(secs(s)),
    };
    // 7 s asked, 2 s backoff: wait 7 s.
    let step = m.on_claim(ms(0), ms(0), Err(congested(7)), 0);
    assert_eq!(step.action, ClaimAction::Wait(ms(7_000)));
    // 60 s asked: capped at 10 s.
    let step = m.on_claim(ms(7_000), ms(7_000), Err(congested(60)), 0);
    assert_eq!(step.action, ClaimAction::Wait(ms(17_000)));
    // 429 counts as an outage too: it began at 0 s.
    assert_eq!(m.outage().elapsed(ms(17_000)), secs(17));
    // Near the end of the budget: Retry-After is cut to what is left, so
    // the last try is at the limit and the stop is not delayed.
    let mut m = reference();
    m.on_claim(ms(0), ms(0), Err(REFUSED), 0);
    let step = m.on_claim(ms(117_000), ms(117_000), Err(congested(10)), 0);
    // backoff would be 4 s (second failure); the budget left is 3 s.
    assert_eq!(step.action, ClaimAction::Wait(ms(120_000)));
    let step = m.on_claim(ms(120_000), ms(120_000), Err(congested(10)), 0);
    assert_eq!(step.action, ClaimAction::Wait(ms(120_001)), "then the deadline");
    assert_eq!(m.claim_poll(ms(120_001)), ClaimAction::Expire);
    let step = m.on_expired(ms(120_001));
    assert!(matches!(
        m.claim_poll(ms(120_001)),
        ClaimAction::Stop(StopReason::Unreachable { .. })
    ));
    assert_eq!(
        texts(&step),
        [
            "Server unreachable for >120s, shutting down. Last error: HTTP 503 Service Unavailable (Retry-After 10s)"
        ]
    );
}

#[test]
fn rejected_requests_are_not_an_outage() {
    let mut m = reference();
    m.on_claim(ms(0), ms(0), Err(REFUSED), 0);
    let step = m.on_claim(ms(2_000), ms(2_000), Err(Failure::status(422)), 0);
    assert!(m.outage().is_healthy(), "the server answered");
    assert_eq!(
        texts(&step),
        [
            "Server reachable again after 2s",
            "The server refused the claim (HTTP 422 Unprocessable Content); backing off while it refuses, claiming again in 2s"
        ]
    );
    assert_eq!(
        step.action,
        ClaimAction::Wait(ms(4_000)),
        "the first refusal waits one poll interval"
    );
}

#[test]
fn a_claim_refused_for_good_backs_off_and_says_so_once_per_log_interval() {
    let mut m = reference();
    let mut at = 0;
    let mut waits = Vec::new();
    let mut lines = Vec::new();
    for _ in 0..8 {
        let step = m.on_claim(ms(at), ms(at), Err(Failure::status(308)), 0);
        let ClaimAction::Wait(next) = step.action else {
            panic!("{:?}", step.action)
        };
        waits.push(next.as_millis() - at);
        lines.extend(texts(&step).into_iter().map(|l| (at, l)));
        at = next.as_millis();
    }
    // The reference schedule of an outage, capped: 2, 4, 8, 10, 10 … s.
    assert_eq!(
        waits,
        [2_000, 4_000, 8_000, 10_000, 10_000, 10_000, 10_000, 10_000]
    );
    assert!(m.outage().is_healthy(), "a refusal is no outage");
    // One line per log interval (5 s) at most: at 0, 6, 14, 24 … s.
    let times: Vec<u64> = lines.iter().map(|(t, _)| *t).collect();
    assert_eq!(times, [0, 6_000, 14_000, 24_000, 34_000, 44_000, 54_000]);
    assert!(lines[0].1.starts_with("The server refused the claim (HTTP 308"));
    // A claim answered again resets the backoff and the line.
    let step = m.on_claim(ms(at), ms(at), Ok(false), 0);
    assert_eq!(step.action, ClaimAction::Wait(ms(at + 2_000)));
    let step = m.on_claim(ms(at + 2_000), ms(at + 2_000), Err(Failure::status(400)), 0);
    assert_eq!(step.action, ClaimAction::Wait(ms(at + 4_000)));
    assert_eq!(texts(&step).len(), 1);
}

#[test]
fn a_task_runs_through_start_execute_deliver() {
    let mut m = reference();
    let step = m.on_claim(ms(0), ms(10), Ok(true), 0);
    assert_eq!(step.action, ClaimAction::Start);
    assert_eq!(
        m.on_started(ms(10), ms(20), Ok(()), 0).action,
        ClaimAction::Execute
    );
    assert_eq!(m.phase(), Phase::Executing);
    assert_eq!(m.on_executed(ms(500), true).action, ClaimAction::Deliver);
    let step = m.on_delivered(ms(500), ms(510), Ok(()), 0);
    assert!(step.events.is_empty());
    assert_eq!(
        step.action,
        ClaimAction::Claim,
        "claims again at once after a task"
    );
    assert_eq!(m.phase(), Phase::Idle);
}

#[test]
fn a_task_that_cannot_be_started_is_skipped() {
    let mut m = reference();
    m.on_claim(ms(0), ms(0), Ok(true), 0);
    // A 404 (the task is gone): skipped at once.
    let step = m.on_started(ms(0), ms(5), Err(Failure::status(404)), 0);
    assert_eq!(
        texts(&step),
        ["Could not mark the claimed task running (HTTP 404 Not Found); skipping it"]
    );
    assert_eq!(step.action, ClaimAction::Claim);
    // A 409: the core asks the server first; a cancelled task is skipped.
    m.on_claim(ms(10), ms(10), Ok(true), 0);
    let step = m.on_started(ms(10), ms(15), Err(Failure::status(409)), 0);
    assert!(step.events.is_empty());
    assert_eq!(step.action, ClaimAction::Verify);
    let cancelled = TaskState {
        status: TaskStatus::Cancelled,
        ours: true,
    };
    let step = m.on_verified(ms(15), ms(20), Ok(cancelled), 0);
    assert_eq!(
        texts(&step),
        ["Could not mark the claimed task running (HTTP 409 Conflict); skipping it"]
    );
    assert_eq!(step.action, ClaimAction::Claim);
}

#[test]
fn starting_is_retried_through_an_outage() {
    let mut m = reference();
    m.on_claim(ms(0), ms(0), Ok(true), 0);
    let step = m.on_started(ms(0), ms(0), Err(REFUSED), 0);
    assert_eq!(step.action, ClaimAction::Wait(ms(2_000)));
    assert_eq!(m.claim_poll(ms(2_000)), ClaimAction::Start);
}

#[test]
fn an_outcome_is_held_through_an_outage_and_delivered_first() {
    let mut m = reference();
    m.on_claim(ms(0), ms(0), Ok(true), 0);
    m.on_started(ms(0), ms(0), Ok(()), 0);
    m.on_executed(ms(1_000), true);
    let step = m.on_delivered(ms(1_000), ms(1_000), Err(REFUSED), 0);
    assert_eq!(
        texts(&step),
        [
            "Task outcome held until the server is reachable again",
            "Server unreachable — retrying (0s/120s elapsed)"
        ]
    );
    assert_eq!(step.action, ClaimAction::Wait(ms(3_000)));
    // Retries deliver, never claim, while the outcome is held.
    assert_eq!(m.claim_poll(ms(3_000)), ClaimAction::Deliver);
    let step = m.on_delivered(ms(3_000), ms(3_000), Err(REFUSED), 0);
    assert!(texts(&step).is_empty(), "held once, warning throttled");
    // The heartbeat sees the server first: the claim loop is woken to deliver.
    let hb = m.on_heartbeat(ms(4_000), ms(4_000), Ok(()));
    assert_eq!(hb.wake, Wake::Claim);
    assert_eq!(m.claim_poll(ms(4_000)), ClaimAction::Deliver);
    let step = m.on_delivered(ms(4_000), ms(4_000), Ok(()), 0);
    assert_eq!(
        texts(&step),
        ["Delivered the task outcome held during the outage"]
    );
    assert_eq!(step.action, ClaimAction::Claim);
}

#[test]
fn a_refused_outcome_is_dropped() {
    let mut m = reference();
    m.on_claim(ms(0), ms(0), Ok(true), 0);
    m.on_started(ms(0), ms(0), Ok(()), 0);
    m.on_executed(ms(1), true);
    // 404: the task is gone; given up at once (the lifecycle names it).
    let step = m.on_delivered(ms(1), ms(2), Err(Failure::status(404)), 0);
    assert!(texts(&step).is_empty());
    assert_eq!(
        m.take_settled(),
        Some(Settled::GivenUp(GiveUp::Refused(Failure::status(404))))
    );
    assert_eq!(step.action, ClaimAction::Claim);
}

#[test]
fn register_policy_registers_again_and_carries_on() {
    let cfg = Config {
        on_registration_lost: OnRegistrationLost::Register,
        ..Config::REFERENCE
    };
    let mut m = Machine::new(cfg, Instant::ZERO, 0).unwrap();
    let hb = m.on_heartbeat(ms(30_000), ms(30_000), Err(Failure::status(404)));
    assert_eq!(hb.wake, Wake::Claim);
    assert_eq!(
        texts(&hb),
        ["Registration lost: the server does not know this worker; registering again"]
    );
    assert!(m.is_reregistering());
    // Heartbeats pause while there is no worker id.
    assert_eq!(m.heartbeat_poll(ms(60_000)), HeartbeatAction::Wait(ms(90_000)));
    assert_eq!(m.claim_poll(ms(30_000)), ClaimAction::Register);
    // Registering during an outage backs off like any claim-loop request.
    let step = m.on_registered(ms(30_000), ms(30_000), Err((Endpoint::CreateWorker, REFUSED)), 0);
    assert_eq!(step.action, ClaimAction::Wait(ms(32_000)));
    let step = m.on_registered(ms(32_000), ms(32_100), Ok(()), 0);
    assert_eq!(
        texts(&step),
        ["Server reachable again after 2s", "Registered again; serving"]
    );
    assert_eq!(step.action, ClaimAction::Claim);
    assert_eq!(m.heartbeat_poll(ms(90_000)), HeartbeatAction::Beat);
    // A schema conflict when registering again stops the worker.
    m.on_claim(ms(40_000), ms(40_000), Err(Failure::status(404)), 0);
    let step = m.on_registered(
        ms(40_000),
        ms(40_000),
        Err((Endpoint::RegisterJob, Failure::status(409))),
        0,
    );
    assert_eq!(
        step.action,
        ClaimAction::Stop(StopReason::RegistrationRejected(Failure::status(409)))
    );
    assert_eq!(step.wake, Wake::Halt);
}

#[test]
fn auth_refused_stops_even_with_the_register_policy() {
    let cfg = Config {
        on_registration_lost: OnRegistrationLost::Register,
        ..Config::REFERENCE
    };
    let mut m = Machine::new(cfg, Instant::ZERO, 0).unwrap();
    let step = m.on_claim(ms(0), ms(0), Err(Failure::status(403)), 0);
    assert_eq!(
        step.action,
        ClaimAction::Stop(StopReason::RegistrationLost(Fatal::AuthRefused { status: 403 }))
    );
}

#[test]
fn request_stop_wakes_everyone_and_delivers_a_pending_outcome_once() {
    let mut m = reference();
    m.on_claim(ms(0), ms(0), Ok(true), 0);
    m.on_started(ms(0), ms(0), Ok(()), 0);
    let step = m.request_stop();
    assert_eq!(step.wake, Wake::Everyone);
    assert_eq!(
        step.events.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
        ["Stop requested, shutting down"]
    );
    assert_eq!(
        m.heartbeat_poll(ms(1)),
        HeartbeatAction::Wait(ms(30_000)),
        "beats on while the task finishes (the lifecycle ends the lane)"
    );
    assert_eq!(
        m.claim_poll(ms(1)),
        ClaimAction::Execute,
        "the running task may finish"
    );
    assert_eq!(m.on_executed(ms(2), true).action, ClaimAction::Deliver);
    // Without a stop limit (the lifecycle sets one), one try: given up.
    let step = m.on_delivered(ms(2), ms(3), Err(REFUSED), 0);
    assert_eq!(step.action, ClaimAction::Stop(StopReason::Requested));
    assert_eq!(
        m.take_settled(),
        Some(Settled::GivenUp(GiveUp::Unreachable(REFUSED)))
    );
}

#[test]
fn a_stop_tries_an_outcome_again_until_its_limit() {
    let mut m = reference();
    m.on_claim(ms(0), ms(0), Ok(true), 0);
    m.on_started(ms(0), ms(0), Ok(()), 0);
    m.stop_requested();
    m.set_stop_limit(ms(9_000));
    assert_eq!(m.on_executed(ms(2), true).action, ClaimAction::Deliver);
    // Unreachable: the outage schedule (2, 4 s …), the last try pulled to
    // the limit; the outage clock runs and warns, the stop stays one.
    let step = m.on_delivered(ms(2), ms(3), Err(REFUSED), 0);
    assert_eq!(step.action, ClaimAction::Wait(ms(2_002)));
    assert_eq!(
        texts(&step),
        [
            "Server unreachable — retrying (0s/120s elapsed)",
            "Task outcome held until the server is reachable again"
        ]
    );
    let step = m.on_delivered(ms(2_002), ms(2_003), Err(Failure::status(503)), 0);
    assert_eq!(step.action, ClaimAction::Wait(ms(6_002)));
    let step = m.on_delivered(ms(6_002), ms(6_003), Err(Failure::status(502)), 0);
    assert_eq!(step.action, ClaimAction::Wait(ms(9_000)), "pulled to the limit");
    assert_eq!(m.take_settled(), None);
    let step = m.on_delivered(ms(9_000), ms(9_001), Err(REFUSED), 0);
    assert_eq!(step.action, ClaimAction::Stop(StopReason::Requested));
    assert_eq!(
        m.take_settled(),
        Some(Settled::GivenUp(GiveUp::Unreachable(REFUSED)))
    );
    assert_eq!(m.stop_reason(), Some(StopReason::Requested));

    // Delivered on a later try: the server has it.
    let mut m = reference();
    m.on_claim(ms(0), ms(0), Ok(true), 0);
    m.on_started(ms(0), ms(0), Ok(()), 0);
    m.stop_requested();
    m.set_stop_limit(ms(9_000));
    m.on_executed(ms(2), false);
    m.on_delivered(ms(2), ms(3), Err(REFUSED), 0);
    let step = m.on_delivered(ms(2_002), ms(2_010), Ok(()), 0);
    assert_eq!(
        texts(&step),
        [
            "Server reachable again after 2s",
            "Delivered the task outcome held during the outage"
        ]
    );
    assert_eq!(m.take_settled(), Some(Settled::Delivered));

    // A refusal is final at once; a 409 is checked first, and its check
    // is tried again like the delivery.
    let mut m = reference();
    m.on_claim(ms(0), ms(0), Ok(true), 0);
    m.on_started(ms(0), ms(0), Ok(()), 0);
    m.stop_requested();
    m.set_stop_limit(ms(9_000));
    m.on_executed(ms(2), true);
    m.on_delivered(ms(2), ms(3), Err(Failure::status(422)), 0);
    assert_eq!(
        m.take_settled(),
        Some(Settled::GivenUp(GiveUp::Refused(Failure::status(422))))
    );
    let mut m = reference();
    m.on_claim(ms(0), ms(0), Ok(true), 0);
    m.on_started(ms(0), ms(0), Ok(()), 0);
    m.stop_requested();
    m.set_stop_limit(ms(9_000));
    m.on_executed(ms(2), true);
    assert_eq!(
        m.on_delivered(ms(2), ms(3), Err(Failure::status(409)), 0).action,
        ClaimAction::Verify
    );
    let step = m.on_verified(ms(3), ms(4), Err(REFUSED), 0);
    assert_eq!(step.action, ClaimAction::Wait(ms(2_003)));
    let state = TaskState {
        status: TaskStatus::Completed,
        ours: false,
    };
    m.on_verified(ms(2_003), ms(2_004), Ok(state), 0);
    assert_eq!(m.take_settled(), Some(Settled::Delivered));
}

#[test]
fn jitter_spreads_first_phases_and_waits() {
    let cfg = Config {
        jitter: Jitter::Equal,
        ..Config::DEFAULT
    };
    let mut a = Machine::new(cfg, Instant::ZERO, 0x1000_0000).unwrap();
    let mut b = Machine::new(cfg, Instant::ZERO, 0xC000_0000).unwrap();
    assert_eq!(a.claim_poll(Instant::ZERO), ClaimAction::Wait(ms(125)));
    assert_eq!(b.claim_poll(Instant::ZERO), ClaimAction::Wait(ms(1_500)));
    let mut m = Machine::new(cfg, Instant::ZERO, 0).unwrap();
    let s1 = m.on_claim(ms(0), ms(0), Err(REFUSED), 0).action;
    assert_eq!(
        s1,
        ClaimAction::Wait(ms(1_000)),
        "equal jitter: at least half the backoff"
    );
}

#[test]
fn invalid_config_is_refused() {
    let cfg = Config {
        poll_interval: Duration::ZERO,
        ..Config::DEFAULT
    };
    assert_eq!(
        Machine::new(cfg, Instant::ZERO, 0).unwrap_err(),
        ConfigError::Zero("poll_interval")
    );
}

#[test]
fn a_success_elsewhere_does_not_cut_a_retry_after_short() {
    let mut m = reference();
    let congested = Failure::Status {
        status: 429,
        retry_after: Some(secs(8)),
    };
    m.on_claim(ms(0), ms(0), Err(congested), 0);
    let hb = m.on_heartbeat(ms(1_000), ms(1_000), Ok(()));
    assert_eq!(hb.wake, Wake::Claim, "the outage ended");
    assert_eq!(
        m.claim_poll(ms(1_000)),
        ClaimAction::Wait(ms(8_000)),
        "but the server asked for 8 s"
    );
    assert_eq!(m.claim_poll(ms(8_000)), ClaimAction::Claim);
}

// ------------------------------------------------- exactly-once at the wire

const TIMEOUT: Failure = Failure::Transport(Transport::Timeout);

#[test]
fn a_lost_claim_answer_registers_afresh_and_retires_the_old_id() {
    let mut m = reference();
    let step = m.on_claim(ms(0), ms(1_000), Err(TIMEOUT), 0);
    assert_eq!(
        texts(&step),
        [
            "Claim answer lost (Request timed out); a task may be held under this worker id: registering afresh once the server answers",
            "Server unreachable — retrying (0s/120s elapsed)"
        ]
    );
    assert!(m.is_claim_ambiguous());
    // After the backoff the claim loop does not claim under the old id.
    let ClaimAction::Wait(t) = step.action else {
        panic!("{:?}", step.action)
    };
    assert_eq!(m.claim_poll(t), ClaimAction::Register);
    // Still down: an outage like any other, and still ambiguous.
    let step = m.on_registered(t, t, Err((Endpoint::CreateWorker, REFUSED)), 0);
    let ClaimAction::Wait(t) = step.action else {
        panic!("{:?}", step.action)
    };
    assert_eq!(m.claim_poll(t), ClaimAction::Register);
    // The server answers: registered afresh, then the old id is retired.
    let step = m.on_registered(t, t + secs(1), Ok(()), 0);
    assert_eq!(
        texts(&step),
        [
            "Server reachable again after 6s",
            "Registered afresh after a lost claim answer; deleting the old worker id so the server fails any task it held"
        ]
    );
    assert_eq!(step.action, ClaimAction::Retire);
    assert!(!m.is_claim_ambiguous());
    assert!(m.is_retiring());
    let step = m.on_retired(t + secs(1), t + secs(1), Ok(()), 0);
    assert_eq!(texts(&step), ["Old worker id deleted; serving"]);
    assert_eq!(step.action, ClaimAction::Claim);
}

#[test]
fn only_claims_that_may_have_been_acted_on_are_ambiguous() {
    for (failure, ambiguous) in [
        (REFUSED, false),
        (Failure::Transport(Transport::Dns), false),
        (Failure::Transport(Transport::SendFailed), false),
        // The timeout ran out before a connection came up.
        (Failure::Transport(Transport::ConnectTimeout), false),
        (Failure::status(503), false),
        (Failure::status(429), false),
        (Failure::status(400), false),
        (TIMEOUT, true),
        (Failure::Transport(Transport::ConnectionClosed), true),
        (Failure::Transport(Transport::Truncated), true),
        (Failure::status(500), true),
        (Failure::status(502), true),
        // A 200 whose body could not be read: the server claimed something.
        (Failure::MalformedResponse, true),
        (Failure::ResponseTooLarge, true),
    ] {
        let mut m = reference();
        m.on_claim(ms(0), ms(1), Err(failure), 0);
        assert_eq!(m.is_claim_ambiguous(), ambiguous, "{failure:?}");
        let next = m.claim_poll(ms(60_000));
        let expected = if ambiguous {
            ClaimAction::Register
        } else {
            ClaimAction::Claim
        };
        assert_eq!(next, expected, "{failure:?}");
    }
}

#[test]
fn a_server_that_forgot_the_worker_needs_no_retirement() {
    let cfg = Config {
        on_registration_lost: OnRegistrationLost::Register,
        ..Config::REFERENCE
    };
    let mut m = Machine::new(cfg, Instant::ZERO, 0).unwrap();
    m.on_claim(ms(0), ms(10), Err(TIMEOUT), 0);
    m.on_heartbeat(ms(20), ms(30), Err(Failure::status(404)));
    assert!(m.is_reregistering() && m.is_claim_ambiguous());
    let step = m.on_registered(ms(40), ms(50), Ok(()), 0);
    assert!(texts(&step).contains(&"Registered again; serving".to_string()));
    assert_eq!(step.action, ClaimAction::Claim);
    assert!(!m.is_retiring());
}

#[test]
fn retiring_is_retried_through_an_outage_and_ends_on_a_refusal() {
    let mut m = reference();
    m.on_claim(ms(0), ms(10), Err(TIMEOUT), 0);
    m.on_registered(ms(20), ms(30), Ok(()), 0);
    let step = m.on_retired(ms(30), ms(40), Err(REFUSED), 0);
    let ClaimAction::Wait(t) = step.action else {
        panic!("{:?}", step.action)
    };
    assert_eq!(m.claim_poll(t), ClaimAction::Retire, "retried after the backoff");
    // 404: the server had already dropped the old id.
    let step = m.on_retired(t, t, Err(Failure::status(404)), 0);
    assert_eq!(
        texts(&step),
        [
            "Server reachable again after 1s",
            "Could not delete the old worker id (HTTP 404 Not Found); the server fails its tasks once its heartbeats are stale"
        ]
    );
    assert_eq!(step.action, ClaimAction::Claim);
}

#[test]
fn a_stop_still_retires_the_old_id_once() {
    let mut m = reference();
    m.on_claim(ms(0), ms(10), Err(TIMEOUT), 0);
    m.on_registered(ms(20), ms(30), Ok(()), 0);
    m.request_stop();
    assert_eq!(m.claim_poll(ms(31)), ClaimAction::Retire);
    let step = m.on_retired(ms(31), ms(32), Err(REFUSED), 0);
    assert_eq!(step.action, ClaimAction::Stop(StopReason::Requested));
}

#[test]
fn a_conflict_on_running_is_checked_and_the_task_runs_if_it_is_ours() {
    let mut m = reference();
    m.on_claim(ms(0), ms(0), Ok(true), 0);
    // The first `running` timed out (the server applied it); the retry gets 409.
    let step = m.on_started(ms(0), ms(1_000), Err(TIMEOUT), 0);
    let ClaimAction::Wait(t) = step.action else {
        panic!("{:?}", step.action)
    };
    assert_eq!(m.claim_poll(t), ClaimAction::Start);
    let step = m.on_started(t, t, Err(Failure::status(409)), 0);
    assert_eq!(step.action, ClaimAction::Verify);
    let running = |ours| TaskState {
        status: TaskStatus::Running,
        ours,
    };
    // Asking failed: retried after the backoff, still verifying.
    let step = m.on_verified(t, t, Err(REFUSED), 0);
    let ClaimAction::Wait(t2) = step.action else {
        panic!("{:?}", step.action)
    };
    assert_eq!(m.claim_poll(t2), ClaimAction::Verify);
    let step = m.on_verified(t2, t2, Ok(running(true)), 0);
    assert_eq!(step.action, ClaimAction::Execute);
    assert!(texts(&step).contains(
        &"Task was already running on the server (an earlier update's answer was lost)".to_string()
    ));
    // Running under another worker: not ours to run.
    let mut m = reference();
    m.on_claim(ms(0), ms(0), Ok(true), 0);
    m.on_started(ms(0), ms(1), Err(Failure::status(409)), 0);
    let step = m.on_verified(ms(1), ms(2), Ok(running(false)), 0);
    assert_eq!(step.action, ClaimAction::Claim);
    assert_eq!(m.phase(), Phase::Idle);
}

#[test]
fn a_conflict_on_delivery_is_checked_against_the_outcome() {
    for (ok, server, delivered) in [
        (true, TaskStatus::Completed, true),
        (false, TaskStatus::Failed, true),
        (true, TaskStatus::Cancelled, false),
        (false, TaskStatus::Completed, false),
    ] {
        let mut m = reference();
        m.on_claim(ms(0), ms(0), Ok(true), 0);
        m.on_started(ms(0), ms(1), Ok(()), 0);
        m.on_executed(ms(2), ok);
        let step = m.on_delivered(ms(2), ms(3), Err(Failure::status(409)), 0);
        assert_eq!(step.action, ClaimAction::Verify);
        let state = TaskState {
            status: server,
            ours: false,
        };
        let step = m.on_verified(ms(3), ms(4), Ok(state), 0);
        let lines = texts(&step);
        assert_eq!(step.action, ClaimAction::Claim, "{ok} {server:?}");
        if delivered {
            assert!(lines[0].starts_with("Task was already "), "{lines:?}");
            assert_eq!(m.take_settled(), Some(Settled::Delivered));
        } else {
            assert!(lines.is_empty(), "{lines:?}");
            assert_eq!(m.take_settled(), Some(Settled::GivenUp(GiveUp::Holds(server))));
        }
    }
}

#[test]
fn a_heartbeat_for_the_retired_id_does_not_stop_the_worker() {
    let mut m = reference();
    m.on_claim(ms(0), ms(10), Err(TIMEOUT), 0);
    // A heartbeat leaves under the old id; meanwhile the claim loop
    // registers afresh and deletes the old id; the heartbeat gets 404.
    let started = ms(20);
    m.on_registered(ms(15), ms(30), Ok(()), 0);
    m.on_retired(ms(30), ms(40), Ok(()), 0);
    let step = m.on_heartbeat(started, ms(50), Err(Failure::status(404)));
    assert!(step.events.is_empty(), "{:?}", texts(&step));
    assert_eq!(m.stop_reason(), None);
    assert_eq!(step.action, HeartbeatAction::Beat, "beats again for the new id");
    // A 404 for a heartbeat sent after the registration is the real thing.
    let step = m.on_heartbeat(ms(60), ms(70), Err(Failure::status(404)));
    assert!(matches!(step.action, HeartbeatAction::Stop(_)));
}

// ------------------------------------------------------------- credentials

fn renewable() -> Machine {
    let cfg = Config {
        renew_credentials: true,
        ..Config::REFERENCE
    };
    Machine::new(cfg, Instant::ZERO, 0).unwrap()
}

const UNAUTHORIZED: Failure = Failure::Status {
    status: 401,
    retry_after: None,
};

#[test]
#[cfg(feature = "renew")]
fn an_expired_token_is_renewed_once_and_the_request_goes_again() {
    let mut m = renewable();
    m.on_claim(ms(0), ms(5), Ok(false), 0);
    let step = m.on_claim(ms(2_000), ms(2_010), Err(UNAUTHORIZED), 0);
    assert_eq!(
        texts(&step),
        ["Token refused (HTTP 401): renewing the credentials"]
    );
    assert_eq!(step.wake, Wake::Heartbeat, "the heartbeat loop logs in");
    assert!(
        matches!(step.action, ClaimAction::Wait(_)),
        "no claim until renewed"
    );
    assert_eq!(m.heartbeat_poll(ms(2_010)), HeartbeatAction::Login);
    let step = m.on_login(ms(2_010), ms(2_100), Ok(()), 0);
    assert_eq!(texts(&step), ["Credentials renewed; serving"]);
    assert_eq!(step.wake, Wake::Claim);
    assert_eq!(step.action, HeartbeatAction::Beat, "a beat proves the new token");
    assert_eq!(m.claim_poll(ms(2_100)), ClaimAction::Claim);
    assert_eq!(m.stop_reason(), None);
    // The new token works; an hour later it expires too: renewed again.
    m.on_heartbeat(ms(2_100), ms(2_110), Ok(()));
    let step = m.on_heartbeat(ms(3_600_000), ms(3_600_010), Err(UNAUTHORIZED));
    assert_eq!(
        texts(&step),
        ["Token refused (HTTP 401): renewing the credentials"]
    );
    assert_eq!(step.action, HeartbeatAction::Login);
    m.on_login(ms(3_600_010), ms(3_600_020), Ok(()), 0);
    assert_eq!(m.stop_reason(), None);
}

#[test]
#[cfg(feature = "renew")]
fn a_renewed_token_that_is_refused_too_stops_the_worker() {
    let mut m = renewable();
    m.on_heartbeat(ms(0), ms(1), Err(UNAUTHORIZED));
    m.on_login(ms(1), ms(2), Ok(()), 0);
    // A request sent with the new token, before any success: refused.
    let step = m.on_heartbeat(ms(3), ms(4), Err(UNAUTHORIZED));
    assert_eq!(
        texts(&step),
        ["Registration lost, shutting down: the server refused the token (HTTP 401)"]
    );
    assert_eq!(step.wake, Wake::Halt);
}

#[test]
#[cfg(feature = "renew")]
fn a_401_for_a_request_sent_with_the_old_token_is_sent_again() {
    let mut m = renewable();
    m.on_claim(ms(0), ms(5), Ok(false), 0);
    m.on_heartbeat(ms(10), ms(20), Err(UNAUTHORIZED));
    m.on_login(ms(20), ms(30), Ok(()), 0);
    // A claim that left at 15 ms, with the old token, comes back 401.
    let step = m.on_claim(ms(15), ms(40), Err(UNAUTHORIZED), 0);
    assert!(step.events.is_empty(), "{:?}", texts(&step));
    assert_eq!(step.action, ClaimAction::Claim);
    assert_eq!(m.stop_reason(), None);
}

#[test]
#[cfg(feature = "renew")]
fn a_refused_login_stops_with_a_clear_line_and_an_outage_retries() {
    let mut m = renewable();
    m.on_heartbeat(ms(0), ms(1), Err(UNAUTHORIZED));
    // The server is down while logging in: an outage, retried.
    let step = m.on_login(ms(1), ms(2), Err(REFUSED), 0);
    assert_eq!(texts(&step), ["Server unreachable — retrying (0s/120s elapsed)"]);
    let HeartbeatAction::Wait(t) = step.action else {
        panic!("{:?}", step.action)
    };
    assert_eq!(m.heartbeat_poll(t), HeartbeatAction::Login);
    let step = m.on_login(t, t, Err(Failure::status(400)), 0);
    assert_eq!(
        texts(&step),
        [
            "Server reachable again after 2s",
            "Registration lost, shutting down: the server refused the login (HTTP 400): check the user name and password"
        ][1..]
    );
    assert_eq!(step.wake, Wake::Halt);
    assert!(matches!(
        m.stop_reason(),
        Some(StopReason::RegistrationLost(Fatal::LoginRefused { status: 400 }))
    ));
}

#[test]
fn without_renewable_credentials_401_stops_at_once() {
    let mut m = reference();
    let step = m.on_claim(ms(0), ms(1), Err(UNAUTHORIZED), 0);
    assert_eq!(step.wake, Wake::Halt);
    assert!(matches!(step.action, ClaimAction::Stop(_)));
}

#[test]
#[cfg(not(feature = "renew"))]
fn without_the_renew_feature_401_stops_at_once_whatever_the_config_says() {
    let mut m = renewable();
    let step = m.on_claim(ms(0), ms(1), Err(UNAUTHORIZED), 0);
    assert_eq!(
        texts(&step),
        ["Registration lost, shutting down: the server refused the token (HTTP 401)"]
    );
    assert_eq!(step.wake, Wake::Halt);
    assert!(!m.is_renewing());
}

// ------------------------------------------------------------------ push

#[test]
#[cfg(feature = "push")]
fn push_stretches_the_idle_poll_and_a_hint_claims_at_once() {
    let mut m = reference();
    assert_eq!(m.claim_poll(ms(0)), ClaimAction::Claim);
    let step = m.on_claim(ms(0), ms(5), Ok(false), 0);
    assert_eq!(step.action, ClaimAction::Wait(ms(2_000)), "polling without push");
    // Push comes up: claim at once (events sent before it listened are lost).
    m.set_push(true, ms(1_000));
    assert!(m.is_push_connected());
    assert_eq!(m.claim_poll(ms(1_000)), ClaimAction::Claim);
    let step = m.on_claim(ms(1_000), ms(1_005), Ok(false), 0);
    assert_eq!(step.action, ClaimAction::Wait(ms(61_000)), "push_poll_interval");
    // A hint: claim now.
    m.hint(ms(4_000));
    assert_eq!(m.claim_poll(ms(4_000)), ClaimAction::Claim);
    let step = m.on_claim(ms(4_000), ms(4_005), Ok(true), 0);
    assert_eq!(step.action, ClaimAction::Start);
    // Hints while a task is being started change nothing.
    m.hint(ms(4_006));
    assert_eq!(m.claim_poll(ms(4_006)), ClaimAction::Start);
    m.on_started(ms(4_006), ms(4_010), Ok(()), 0);
    m.on_executed(ms(5_000), true);
    let step = m.on_delivered(ms(5_000), ms(5_005), Ok(()), 0);
    assert_eq!(step.action, ClaimAction::Claim, "after a task, at once");
    let step = m.on_claim(ms(5_005), ms(5_010), Ok(false), 0);
    assert_eq!(step.action, ClaimAction::Wait(ms(65_005)));
    // Push lost: claim at once, then poll on poll_interval again.
    m.set_push(false, ms(6_000));
    assert_eq!(m.claim_poll(ms(6_000)), ClaimAction::Claim);
    let step = m.on_claim(ms(6_000), ms(6_005), Ok(false), 0);
    assert_eq!(step.action, ClaimAction::Wait(ms(8_000)));
    // Repeating the same state changes nothing.
    m.set_push(false, ms(7_000));
    assert_eq!(m.claim_poll(ms(7_000)), ClaimAction::Wait(ms(8_000)));
    // Push never touches the outage clock.
    assert_eq!(m.outage().started_at(), None);
}

#[test]
#[cfg(feature = "push")]
fn a_hint_during_a_claim_in_flight_claims_again() {
    let mut m = reference();
    m.set_push(true, ms(0));
    assert_eq!(m.claim_poll(ms(0)), ClaimAction::Claim);
    // The task was submitted just after the claim left: its hint arrives
    // while the claim is out, which comes back empty.
    m.hint(ms(3));
    let step = m.on_claim(ms(0), ms(5), Ok(false), 0);
    assert_eq!(step.action, ClaimAction::Claim);
    // Without a new hint, the next empty claim waits the long interval.
    let step = m.on_claim(ms(5), ms(9), Ok(false), 0);
    assert_eq!(step.action, ClaimAction::Wait(ms(60_005)));
}

#[test]
#[cfg(feature = "push")]
fn a_hint_does_not_override_the_outage_backoff_or_retry_after() {
    let mut m = reference();
    m.set_push(true, ms(0));
    let step = m.on_claim(ms(0), ms(0), Err(REFUSED), 0);
    assert_eq!(step.action, ClaimAction::Wait(ms(2_000)));
    m.hint(ms(500));
    assert_eq!(
        m.claim_poll(ms(500)),
        ClaimAction::Wait(ms(2_000)),
        "outage: backoff stands"
    );
    // Losing push during an outage neither speeds the backoff up nor
    // touches the outage clock.
    m.set_push(false, ms(600));
    assert_eq!(m.claim_poll(ms(600)), ClaimAction::Wait(ms(2_000)));
    assert_eq!(m.outage().started_at(), Some(ms(0)));

    let mut m = reference();
    m.set_push(true, ms(0));
    let congested = Failure::Status {
        status: 429,
        retry_after: Some(secs(8)),
    };
    m.on_claim(ms(0), ms(0), Err(congested), 0);
    m.on_heartbeat(ms(1_000), ms(1_000), Ok(()));
    m.hint(ms(2_000));
    assert_eq!(
        m.claim_poll(ms(2_000)),
        ClaimAction::Wait(ms(8_000)),
        "Retry-After stands"
    );
}

#[test]
fn push_poll_interval_is_validated() {
    let cfg = Config {
        push_poll_interval: Duration::ZERO,
        ..Config::REFERENCE
    };
    assert_eq!(
        Machine::new(cfg, Instant::ZERO, 0).unwrap_err(),
        ConfigError::Zero("push_poll_interval")
    );
}

#[test]
#[cfg(feature = "push")]
fn a_registration_lost_on_a_heartbeat_registers_at_once_not_after_the_idle_poll() {
    let cfg = Config {
        on_registration_lost: OnRegistrationLost::Register,
        ..Config::REFERENCE
    };
    let mut m = Machine::new(cfg, Instant::ZERO, 0).unwrap();
    m.set_push(true, ms(0));
    assert_eq!(m.claim_poll(ms(0)), ClaimAction::Claim);
    let step = m.on_claim(ms(0), ms(5), Ok(false), 0);
    assert_eq!(step.action, ClaimAction::Wait(ms(60_000)));
    let step = m.on_heartbeat(ms(1_000), ms(1_005), Err(Failure::status(404)));
    assert_eq!(step.wake, Wake::Claim);
    assert_eq!(m.claim_poll(ms(1_005)), ClaimAction::Register);
}
