//! Property tests: any interleaving of the two loops' results, on a manual
//! clock, keeps the outage invariants.

use outage_core::{
    ClaimAction, Clock, Config, Duration, Endpoint, Event, Failure, HeartbeatAction, Instant, Jitter,
    Machine, ManualClock, OnRegistrationLost, StopReason, Transport,
};
use proptest::prelude::*;

#[derive(Clone, Copy, Debug)]
enum Reply {
    Ok { got_task: bool },
    Down(Transport),
    Congested { status: u16, retry_after: Option<u64> },
    ServerError(u16),
    Rejected(u16),
    Fatal(u16),
}

#[derive(Clone, Copy, Debug)]
enum Op {
    /// Let time pass.
    Advance(u64),
    /// The heartbeat loop's next beat (time jumps to its deadline), taking `took` ms.
    Heartbeat { reply: Reply, took: u64 },
    /// The claim loop's next request, whatever it is.
    ClaimLoop { reply: Reply, took: u64, rand: u32 },
    /// The application asks to stop.
    Stop,
}

fn reply() -> impl Strategy<Value = Reply> {
    prop_oneof![
        6 => any::<bool>().prop_map(|got_task| Reply::Ok { got_task }),
        8 => prop_oneof![Just(Transport::ConnectionRefused), Just(Transport::Timeout), Just(Transport::ConnectionReset), Just(Transport::Dns)].prop_map(Reply::Down),
        2 => (prop_oneof![Just(429u16), Just(503)], proptest::option::of(0u64..200)).prop_map(|(status, retry_after)| Reply::Congested { status, retry_after }),
        2 => prop_oneof![Just(500u16), Just(502), Just(504)].prop_map(Reply::ServerError),
        1 => prop_oneof![Just(409u16), Just(422), Just(400)].prop_map(Reply::Rejected),
        1 => prop_oneof![Just(404u16), Just(401), Just(403)].prop_map(Reply::Fatal),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u64..20_000).prop_map(Op::Advance),
        4 => (reply(), 0u64..6_000).prop_map(|(reply, took)| Op::Heartbeat { reply, took }),
        8 => (reply(), 0u64..6_000, any::<u32>()).prop_map(|(reply, took, rand)| Op::ClaimLoop { reply, took, rand }),
        1 => Just(Op::Stop),
    ]
}

fn config() -> impl Strategy<Value = Config> {
    (
        prop_oneof![Just(Jitter::Off), Just(Jitter::Equal), Just(Jitter::Full)],
        prop_oneof![Just(OnRegistrationLost::Stop), Just(OnRegistrationLost::Register)],
        1_000u64..5_000,
        30_000u64..130_000,
        0u64..10_000,
        any::<bool>(),
    )
        .prop_map(|(jitter, policy, poll, max, log, renew)| Config {
            jitter,
            on_registration_lost: policy,
            renew_credentials: renew,
            poll_interval: Duration::from_millis(poll),
            max_unreachable: Duration::from_millis(max),
            log_interval: Duration::from_millis(log),
            ..Config::DEFAULT
        })
}

fn failure(r: Reply) -> Option<Failure> {
    match r {
        Reply::Ok { .. } => None,
        Reply::Down(t) => Some(Failure::Transport(t)),
        Reply::Congested { status, retry_after } => Some(Failure::Status {
            status,
            retry_after: retry_after.map(Duration::from_secs),
        }),
        Reply::ServerError(s) | Reply::Rejected(s) | Reply::Fatal(s) => Some(Failure::status(s)),
    }
}

fn is_outage(r: Reply) -> bool {
    matches!(
        r,
        Reply::Down(_) | Reply::Congested { .. } | Reply::ServerError(_)
    )
}

/// Everything observable from one run, for the determinism check.
type Trace = Vec<String>;

/// Runs the ops, asserting the invariants after every step.
fn run(cfg: Config, seed: u32, ops: &[Op]) -> Result<Trace, TestCaseError> {
    let clock = ManualClock::new(Instant::from_millis(1_000));
    let mut m = Machine::new(cfg, clock.now(), seed).unwrap();
    let mut trace = Trace::new();
    let mut last_warning: Option<Instant> = None;
    let cap = cfg.backoff_cap;

    for &op in ops {
        let stopped_before = m.stop_reason();
        let mut events: Vec<Event<'static>> = Vec::new();
        let mut report: Option<(Reply, Instant)> = None;
        match op {
            Op::Advance(d) => clock.advance(Duration::from_millis(d)),
            Op::Stop => events.extend(m.request_stop().events.iter().copied()),
            Op::Heartbeat { reply, took } => {
                if let HeartbeatAction::Wait(t) = m.heartbeat_poll(clock.now()) {
                    clock.set(t);
                }
                if m.heartbeat_poll(clock.now()) == HeartbeatAction::Expire {
                    let step = m.on_expired(clock.now());
                    events.extend(step.events.iter().copied());
                    trace.push(format!("expired {:?} {:?}", step.action, step.wake));
                    // The deadline stops the worker once the outage outlasts
                    // its limit (exactly at it when the loops sleep until it,
                    // as the unit tests pin; here time may jump past it).
                    let unreachable = matches!(m.stop_reason(), Some(StopReason::Unreachable { .. }));
                    prop_assert!(unreachable, "expired without stopping");
                    prop_assert!(m.outage().elapsed(clock.now()) > cfg.max_unreachable);
                    prop_assert_eq!(step.events.iter().count(), 1);
                } else if m.heartbeat_poll(clock.now()) == HeartbeatAction::Login {
                    let started = clock.now();
                    clock.advance(Duration::from_millis(took));
                    let step = m.on_login(started, clock.now(), failure(reply).map_or(Ok(()), Err), seed);
                    events.extend(step.events.iter().copied());
                    trace.push(format!("login {:?} {:?}", step.action, step.wake));
                    if let HeartbeatAction::Wait(t) = step.action {
                        prop_assert!(
                            t <= clock.now() + cap.max(cfg.heartbeat_interval),
                            "login wait {t:?}"
                        );
                    }
                    report = Some((reply, started));
                } else if m.heartbeat_poll(clock.now()) == HeartbeatAction::Beat {
                    let started = clock.now();
                    clock.advance(Duration::from_millis(took));
                    let step = m.on_heartbeat(started, clock.now(), failure(reply).map_or(Ok(()), Err));
                    events.extend(step.events.iter().copied());
                    trace.push(format!("hb {:?} {:?}", step.action, step.wake));
                    if let HeartbeatAction::Wait(t) = step.action {
                        prop_assert!(t <= started + cfg.heartbeat_interval);
                    }
                    report = Some((reply, started));
                }
            }
            Op::ClaimLoop { reply, took, rand } => {
                let mut action = m.claim_poll(clock.now());
                if let ClaimAction::Wait(t) = action {
                    prop_assert!(t >= clock.now());
                    clock.set(t);
                    action = m.claim_poll(clock.now());
                }
                let started = clock.now();
                clock.advance(Duration::from_millis(took));
                let now = clock.now();
                let result = failure(reply).map_or(Ok(()), Err);
                let step = match action {
                    ClaimAction::Claim => Some(m.on_claim(
                        started,
                        now,
                        result.map(|()| matches!(reply, Reply::Ok { got_task: true })),
                        rand,
                    )),
                    ClaimAction::Start => Some(m.on_started(started, now, result, rand)),
                    ClaimAction::Execute => Some(m.on_executed(now, true)),
                    ClaimAction::Deliver => Some(m.on_delivered(started, now, result, rand)),
                    ClaimAction::Register => Some(m.on_registered(
                        started,
                        now,
                        result.map_err(|f| (Endpoint::CreateWorker, f)),
                        rand,
                    )),
                    ClaimAction::Retire => Some(m.on_retired(started, now, result, rand)),
                    ClaimAction::Expire => {
                        events.extend(m.on_expired(now).events.iter().copied());
                        None
                    }
                    ClaimAction::Verify => Some(m.on_verified(
                        started,
                        now,
                        result.map(|()| outage_core::TaskState {
                            status: outage_core::protocol::TaskStatus::Running,
                            ours: true,
                        }),
                        rand,
                    )),
                    ClaimAction::Stop(_) | ClaimAction::Wait(_) => None,
                };
                if let Some(step) = step {
                    events.extend(step.events.iter().copied());
                    trace.push(format!("claim {action:?} -> {:?} {:?}", step.action, step.wake));
                    if let ClaimAction::Wait(t) = step.action {
                        // Every wait is within [0, cap] of the attempt's start
                        // (Retry-After included: it is capped too), or one poll
                        // interval after a normal claim.
                        // (While the token is renewed the claim loop waits to
                        // be woken, re-polling after a heartbeat interval.)
                        prop_assert!(
                            t <= started + cap.max(cfg.poll_interval) || m.is_renewing(),
                            "wait until {t:?} from {started:?}"
                        );
                    }
                    if action != ClaimAction::Execute {
                        report = Some((reply, started));
                    }
                }
            }
        }

        let now = clock.now();
        let outage = m.outage();
        // elapsed is zero iff healthy (at the very instant a failure starts
        // the outage, elapsed is zero too).
        if outage.is_healthy() {
            prop_assert_eq!(outage.elapsed(now), Duration::ZERO);
        } else if now > outage.started_at().unwrap() {
            prop_assert!(outage.elapsed(now) > Duration::ZERO);
        }
        // Stop iff elapsed > max, decided at the failure that crossed it.
        if let (Some((reply, _)), None) = (report, stopped_before)
            && is_outage(reply)
        {
            let unreachable = matches!(m.stop_reason(), Some(StopReason::Unreachable { .. }));
            prop_assert_eq!(unreachable, outage.elapsed(now) > cfg.max_unreachable);
        }
        if matches!(m.stop_reason(), Some(StopReason::Unreachable { .. })) {
            prop_assert!(outage.elapsed(now) > cfg.max_unreachable);
        }
        // Never two warnings inside one log interval within one outage.
        for e in &events {
            match e {
                Event::Recovered { .. } => last_warning = None,
                Event::OutageWarning { elapsed, max } => {
                    prop_assert!(*elapsed <= *max);
                    if let Some(prev) = last_warning {
                        prop_assert!(now - prev >= cfg.log_interval, "warnings at {prev:?} and {now:?}");
                    }
                    last_warning = Some(now);
                }
                _ => {}
            }
            trace.push(format!("{} {e}", now.as_millis()));
        }
        // A stop is visible to both loops at once.
        // (A requested stop beats on while its tasks finish: the lifecycle
        // ends that lane; never an outage expiry then.)
        if let Some(reason) = m.stop_reason() {
            let beat = m.heartbeat_poll(now);
            if reason == StopReason::Requested {
                prop_assert!(
                    matches!(
                        beat,
                        HeartbeatAction::Wait(_) | HeartbeatAction::Beat | HeartbeatAction::Login
                    ),
                    "{beat:?}"
                );
            } else {
                prop_assert_eq!(beat, HeartbeatAction::Stop(reason));
            }
            let claim = m.claim_poll(now);
            prop_assert!(
                claim == ClaimAction::Stop(reason)
                    || (reason == StopReason::Requested
                        && matches!(
                            claim,
                            ClaimAction::Deliver
                                | ClaimAction::Execute
                                | ClaimAction::Verify
                                | ClaimAction::Retire
                                | ClaimAction::Wait(_)
                        )),
                "{claim:?}"
            );
        }
    }
    Ok(trace)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn invariants_hold_under_any_interleaving(cfg in config(), seed in any::<u32>(), ops in proptest::collection::vec(op(), 1..120)) {
        run(cfg, seed, &ops)?;
    }

    #[test]
    fn same_inputs_same_outputs(cfg in config(), seed in any::<u32>(), ops in proptest::collection::vec(op(), 1..80)) {
        let a = run(cfg, seed, &ops)?;
        let b = run(cfg, seed, &ops)?;
        prop_assert_eq!(a, b);
    }
}
