//! "Never give up": `max_unreachable: Config::NO_LIMIT`. Both loops against
//! a server that is down for 30 days, on a manual clock (no sleeping): the
//! worker never stops, never expires, retries on the capped backoff, warns
//! without a limit, and serves again the moment the server answers. A
//! refused token still stops it.

use outage_core::{
    ClaimAction, Clock, Config, Duration, Event, Failure, Fatal, HeartbeatAction, Instant, Jitter, Machine,
    ManualClock, StopReason, Transport,
};

const REFUSED: Failure = Failure::Transport(Transport::ConnectionRefused);
const DAY: u64 = 24 * 3600 * 1000;

fn never_give_up(jitter: Jitter) -> Config {
    Config {
        max_unreachable: Config::NO_LIMIT,
        jitter,
        ..Config::DEFAULT
    }
}

/// What the loops did while the server was down.
#[derive(Default)]
struct Seen {
    claims: Vec<u64>,
    beats: Vec<u64>,
    warnings: Vec<(u64, String)>,
    other: Vec<String>,
}

fn log(seen: &mut Seen, now: Instant, events: &outage_core::Events) {
    for e in events.iter() {
        match e {
            Event::OutageWarning { .. } => seen.warnings.push((now.as_millis(), e.to_string())),
            _ => seen.other.push(e.to_string()),
        }
    }
}

/// Drives both loops, whichever is due first, until `until`, every request
/// answered by `reply`.
fn drive(
    m: &mut Machine,
    clock: &ManualClock,
    until: Instant,
    rand: &mut u32,
    reply: Result<(), Failure>,
) -> Seen {
    let mut seen = Seen::default();
    while clock.now() < until {
        let now = clock.now();
        *rand = rand.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        match m.heartbeat_poll(now) {
            HeartbeatAction::Beat => {
                seen.beats.push(now.as_millis());
                let step = m.on_heartbeat(now, now, reply);
                log(&mut seen, now, &step.events);
                continue;
            }
            HeartbeatAction::Wait(_) => {}
            other => panic!("heartbeat loop at {now:?}: {other:?}"),
        }
        match m.claim_poll(now) {
            ClaimAction::Claim => {
                seen.claims.push(now.as_millis());
                let result = reply.map(|()| false);
                let step = m.on_claim(now, now, result, *rand);
                log(&mut seen, now, &step.events);
                continue;
            }
            ClaimAction::Wait(_) => {}
            other => panic!("claim loop at {now:?}: {other:?}"),
        }
        let next = m.poll_at().expect("never stopped");
        assert!(next > now, "a loop due at {now:?} did nothing");
        clock.set(next.min(until));
    }
    seen
}

#[test]
fn no_limit_is_a_valid_config_and_says_so() {
    let c = never_give_up(Jitter::Equal);
    assert_eq!(c.validate(), Ok(()));
    assert!(!c.has_outage_limit());
    assert!(Config::DEFAULT.has_outage_limit());
    // Any other duration beyond 30 days is still a unit slip.
    let slip = Config {
        max_unreachable: Duration::from_millis(u64::MAX - 1),
        ..Config::DEFAULT
    };
    assert!(slip.validate().is_err());
}

#[test]
fn never_stops_for_an_outage_of_thirty_days_and_recovers_at_once() {
    for jitter in [Jitter::Off, Jitter::Equal, Jitter::Full] {
        let cfg = never_give_up(jitter);
        let clock = ManualClock::new(Instant::ZERO);
        let mut m = Machine::new(cfg, clock.now(), 7).unwrap();
        let mut rand = 1;
        let down_until = Instant::from_millis(30 * DAY);
        let seen = drive(&mut m, &clock, down_until, &mut rand, Err(REFUSED));

        assert_eq!(m.stop_reason(), None, "{jitter:?}");
        assert!(seen.other.is_empty(), "{jitter:?}: {:?}", seen.other);
        // The backoff stays capped: no gap between claims above the cap,
        // and (past the first few) none below half of it (equal jitter) —
        // a dead server sees about one claim per `backoff_cap`.
        let cap = cfg.backoff_cap.as_millis();
        let gaps: Vec<u64> = seen.claims.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps.iter().all(|&g| g <= cap), "{jitter:?}: a gap above the cap");
        let expected = 30 * DAY / cap;
        let n = seen.claims.len() as u64;
        match jitter {
            Jitter::Off => assert!(n.abs_diff(expected) <= 5, "{n} claims, expected {expected}"),
            _ => assert!(n >= expected && n <= 4 * expected, "{jitter:?}: {n} claims"),
        }
        // Heartbeats go on at their interval (each one fails too).
        let hb = cfg.heartbeat_interval.as_millis();
        assert!(seen.beats.windows(2).all(|w| w[1] - w[0] == hb), "{jitter:?}");
        // Warnings: at most one per log interval, each without a limit.
        let log = cfg.log_interval.as_millis();
        assert!(seen.warnings.windows(2).all(|w| w[1].0 - w[0].0 >= log));
        assert!(seen.warnings.len() as u64 >= 30 * DAY / cap / 2);
        assert_eq!(
            seen.warnings[0].1,
            "Server unreachable — retrying (0s elapsed, no limit)"
        );
        let (at, last) = seen.warnings.last().unwrap();
        assert_eq!(
            *last,
            format!("Server unreachable — retrying ({}s elapsed, no limit)", at / 1000)
        );

        // The server answers again: the next request ends the outage, and
        // the claim loop is back within one capped backoff.
        let back = clock.now();
        let seen = drive(&mut m, &clock, back + Duration::from_secs(60), &mut rand, Ok(()));
        assert_eq!(
            seen.other.first().map(String::as_str),
            Some("Server reachable again after 2592000s")
        );
        assert!(seen.claims[0] - back.as_millis() <= cap, "{jitter:?}");
        assert!(seen.warnings.is_empty());
        assert!(m.outage().is_healthy());
    }
}

#[test]
fn a_refused_token_still_stops_a_worker_without_an_outage_limit() {
    let cfg = never_give_up(Jitter::Off);
    let clock = ManualClock::new(Instant::ZERO);
    let mut m = Machine::new(cfg, clock.now(), 0).unwrap();
    let mut rand = 0;
    drive(&mut m, &clock, Instant::from_millis(DAY), &mut rand, Err(REFUSED));
    let now = clock.now();
    let step = m.on_claim(now, now, Err(Failure::status(401)), 0);
    let cause = Fatal::AuthRefused { status: 401 };
    assert_eq!(
        step.action,
        ClaimAction::Stop(StopReason::RegistrationLost(cause))
    );
}

#[test]
fn retry_after_is_honoured_up_to_the_cap_without_a_limit() {
    let cfg = never_give_up(Jitter::Off);
    let clock = ManualClock::new(Instant::ZERO);
    let mut m = Machine::new(cfg, clock.now(), 0).unwrap();
    // Without jitter the first claim goes at once.
    assert_eq!(m.claim_poll(clock.now()), ClaimAction::Claim);
    let busy = Failure::Status {
        status: 503,
        retry_after: Some(Duration::from_secs(3600)),
    };
    let now = clock.now();
    let step = m.on_claim(now, now, Err(busy), 0);
    assert_eq!(step.action, ClaimAction::Wait(now + cfg.backoff_cap));
}
