//! "Never give up": `max_unreachable: Config::NO_LIMIT`. Both loops against
//! a server that is down for 30 days, on a manual clock (no sleeping): the
//! worker never stops, never expires, retries on the capped backoff, warns
//! without a limit, and serves again the moment the server answers. A
//! refused token still stops it.

use outage_core::{
    Config, Duration, Event, Failure, Fatal, Instant, Jitter, Lifecycle, Notice, Op, Outcome, Reply, Request,
    StopReason, Transport,
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

/// A worker whose lifecycle starts at 0 with `seed`; its startup (the
/// worker's creation) is answered at once, so it serves from 0 on.
fn worker(cfg: Config, seed: u64) -> Lifecycle<1> {
    Lifecycle::new(cfg, 0, false, seed, Instant::ZERO).unwrap()
}

/// What the worker did while the server answered `reply`.
#[derive(Default)]
struct Seen {
    claims: Vec<u64>,
    beats: Vec<u64>,
    warnings: Vec<(u64, String)>,
    other: Vec<String>,
}

/// Drives the lifecycle on a manual clock (`now`, in ms), as the driver
/// does, until `until` or until it stops: at each instant it acts, every
/// request it starts is answered at once, the worker's creation with
/// success, a heartbeat and a claim (which finds no task) by `reply`.
fn drive(lc: &mut Lifecycle<1>, now: &mut u64, until: u64, reply: Result<(), Failure>) -> Seen {
    let mut seen = Seen::default();
    let mut log = |t: u64, n: Notice| {
        if let Notice::Event(e) = n {
            match e {
                Event::OutageWarning { .. } => seen.warnings.push((t, e.to_string())),
                _ => seen.other.push(e.to_string()),
            }
        }
    };
    let (mut claims, mut beats) = (Vec::new(), Vec::new());
    while *now < until && lc.stop_reason().is_none() {
        let t = Instant::from_millis(*now);
        lc.handle_timeout(t, &mut |n| log(*now, n));
        while let Some((lane, op)) = lc.poll_start(t, &mut |n| log(*now, n)) {
            let answer = match op {
                Op::Send(Request::CreateWorker) => Ok(Reply::Done),
                Op::Send(Request::Heartbeat) => {
                    beats.push(*now);
                    reply.map(|()| Reply::Done)
                }
                Op::Send(Request::Claim) => {
                    claims.push(*now);
                    reply.map(|()| Reply::Claimed(false))
                }
                other => panic!("at {now} ms: {other:?}"),
            };
            lc.handle(lane, t, Outcome::Replied(answer), &mut |n| log(*now, n));
        }
        if lc.stop_reason().is_some() {
            break;
        }
        let next = lc.poll_timeout().expect("never stopped").as_millis();
        assert!(next > *now, "due at {now} ms and did nothing");
        *now = next.min(until);
    }
    seen.claims = claims;
    seen.beats = beats;
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
        let mut lc = worker(cfg, 7);
        let mut now = 0;
        let seen = drive(&mut lc, &mut now, 30 * DAY, Err(REFUSED));

        assert_eq!(lc.stop_reason(), None, "{jitter:?}");
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
        // The outage began with the first request, which failed (a
        // jittered first phase may put it after 0).
        let began = seen.claims[0].min(seen.beats[0]);
        let (at, last) = seen.warnings.last().unwrap();
        assert_eq!(
            *last,
            format!(
                "Server unreachable — retrying ({}s elapsed, no limit)",
                (at - began) / 1000
            )
        );

        // The server answers again: the next request ends the outage, and
        // the claim loop is back within one capped backoff.
        let back = now;
        let seen = drive(&mut lc, &mut now, back + 60_000, Ok(()));
        let first = seen.claims[0].min(seen.beats.first().copied().unwrap_or(u64::MAX));
        assert!(first - back <= cap, "{jitter:?}");
        let line = format!("Server reachable again after {}s", (first - began) / 1000);
        assert_eq!(seen.other.first(), Some(&line), "{jitter:?}");
        assert!(seen.claims[0] - back <= cap, "{jitter:?}");
        assert!(seen.warnings.is_empty());
        // Healthy again: nothing more to say for the rest of the minute.
        assert_eq!(seen.other.len(), 1, "{:?}", seen.other);
        assert_eq!(lc.stop_reason(), None);
    }
}

#[test]
fn a_refused_token_still_stops_a_worker_without_an_outage_limit() {
    let cfg = never_give_up(Jitter::Off);
    let mut lc = worker(cfg, 0);
    let mut now = 0;
    drive(&mut lc, &mut now, DAY, Err(REFUSED));
    let seen = drive(&mut lc, &mut now, 2 * DAY, Err(Failure::status(401)));
    let cause = Fatal::AuthRefused { status: 401 };
    assert_eq!(lc.stop_reason(), Some(StopReason::RegistrationLost(cause)));
    // At its next request, a day into the outage.
    assert!(now - DAY <= cfg.backoff_cap.as_millis(), "stopped at {now} ms");
    assert_eq!(seen.claims.len() + seen.beats.len(), 1);
}

#[test]
fn retry_after_is_honoured_up_to_the_cap_without_a_limit() {
    let cfg = never_give_up(Jitter::Off);
    let mut lc = worker(cfg, 0);
    let busy = Failure::Status {
        status: 503,
        retry_after: Some(Duration::from_secs(3600)),
    };
    let mut now = 0;
    let cap = cfg.backoff_cap.as_millis();
    let seen = drive(&mut lc, &mut now, cap + 1, Err(busy));
    // Without jitter the first claim goes at once, the next one a capped
    // backoff later, not after the hour the server asked for.
    assert_eq!(seen.claims, [0, cap]);
}
