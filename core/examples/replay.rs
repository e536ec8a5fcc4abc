//! Replays outages on a manual clock and prints each log line at its
//! simulated time — no network, no sleeping, the same output every run.
//!
//! `cargo run -p outage-core --example replay`
//!
//! Timeline: the worker starts at 0 s and gets a task at 5 s that runs for
//! 6 s; the server goes down at 8 s and returns at 30 s (the task's outcome
//! is held and delivered), then goes down again at 60 s for 150 s, longer
//! than `max_unreachable` (120 s), and the worker shuts down.

#[path = "../tests/support/fleet.rs"]
#[allow(dead_code)] // only the RNG is used here
mod fleet;

use outage_core::{
    ClaimAction, Clock, Config, Event, Failure, HeartbeatAction, Instant, Level, Machine, ManualClock,
    Transport, Wake,
};

const DOWN: [(u64, u64); 2] = [(8_000, 30_000), (60_000, 210_000)];
const TASK_AT: u64 = 5_000;
const TASK_RUNS: u64 = 6_000;

fn server_up(t: Instant) -> bool {
    !DOWN.iter().any(|&(a, b)| (a..b).contains(&t.as_millis()))
}

fn log(t: Instant, e: &Event<'_>) {
    let level = match e.level() {
        Level::Error => "ERROR",
        Level::Warn => "WARN ",
        Level::Info => "INFO ",
        Level::Debug => return,
    };
    println!(
        "[{:>4}.{:03}s] {level} {e}",
        t.as_millis() / 1000,
        t.as_millis() % 1000
    );
}

fn result<T>(t: Instant, ok: T) -> Result<T, Failure> {
    if server_up(t) {
        Ok(ok)
    } else {
        Err(Failure::Transport(Transport::ConnectionRefused))
    }
}

fn main() {
    let clock = ManualClock::new(Instant::ZERO);
    let mut rng = fleet::Rng::new(7);
    let cfg = Config::DEFAULT;
    let mut m = Machine::new(cfg, clock.now(), rng.next_u32()).expect("default config is valid");
    println!(
        "Replaying on a manual clock: heartbeat {}s, poll {}s, max unreachable {}s, log interval {}s, equal jitter.",
        cfg.heartbeat_interval.as_secs(),
        cfg.poll_interval.as_secs(),
        cfg.max_unreachable.as_secs(),
        cfg.log_interval.as_secs()
    );
    println!("Server down from 8s to 30s, and from 60s for 150s.\n");

    let mut task_given = false;
    let mut task_done_at: Option<Instant> = None;
    let mut requests = 0u32;
    let mut hb_due = Instant::ZERO;
    let mut claim_due = Instant::ZERO;
    // Bounded: a bug cannot spin forever.
    for _ in 0..10_000 {
        let now = clock.now();
        let mut progressed = false;
        if now >= hb_due {
            match m.heartbeat_poll(now) {
                HeartbeatAction::Wait(t) => hb_due = t,
                // A fixed token: the core never asks to log in.
                HeartbeatAction::Stop(_) | HeartbeatAction::Login => hb_due = Instant::from_millis(u64::MAX),
                HeartbeatAction::Expire => {
                    let step = m.on_expired(now);
                    step.events.iter().for_each(|e| log(now, e));
                    if step.wake == Wake::Halt {
                        claim_due = now;
                    }
                    progressed = true;
                }
                HeartbeatAction::Beat => {
                    requests += 1;
                    let step = m.on_heartbeat(now, now, result(now, ()));
                    step.events.iter().for_each(|e| log(now, e));
                    if step.wake == Wake::Claim {
                        claim_due = now;
                    }
                    progressed = true;
                }
            }
        }
        if now >= claim_due {
            let r = rng.next_u32();
            let step = match m.claim_poll(now) {
                ClaimAction::Wait(t) => {
                    claim_due = t;
                    None
                }
                ClaimAction::Expire => {
                    let step = m.on_expired(now);
                    step.events.iter().for_each(|e| log(now, e));
                    hb_due = now;
                    None
                }
                ClaimAction::Stop(reason) => {
                    println!("\nWorker stopped at {}s: {reason}.", now.as_millis() / 1000);
                    println!("{requests} requests sent in all.");
                    return;
                }
                ClaimAction::Claim => {
                    requests += 1;
                    let got = !task_given && now.as_millis() >= TASK_AT;
                    let res = result(now, got);
                    task_given |= got && res.is_ok();
                    Some(m.on_claim(now, now, res, r))
                }
                ClaimAction::Start => {
                    requests += 1;
                    Some(m.on_started(now, now, result(now, ()), r))
                }
                ClaimAction::Execute => match task_done_at {
                    None => {
                        task_done_at = Some(now + outage_core::Duration::from_millis(TASK_RUNS));
                        claim_due = task_done_at.unwrap();
                        None
                    }
                    Some(_) => Some(m.on_executed(now, true)),
                },
                ClaimAction::Deliver => {
                    requests += 1;
                    Some(m.on_delivered(now, now, result(now, ()), r))
                }
                ClaimAction::Register => {
                    // Registering afresh after a lost claim answer.
                    requests += 2;
                    let res = result(now, ()).map_err(|f| (outage_core::Endpoint::CreateWorker, f));
                    Some(m.on_registered(now, now, res, r))
                }
                ClaimAction::Retire => {
                    requests += 1;
                    Some(m.on_retired(now, now, result(now, ()), r))
                }
                ClaimAction::Verify => {
                    requests += 1;
                    let state = outage_core::TaskState {
                        status: outage_core::protocol::TaskStatus::Running,
                        ours: true,
                    };
                    Some(m.on_verified(now, now, result(now, state), r))
                }
            };
            if let Some(step) = step {
                step.events.iter().for_each(|e| log(now, e));
                if matches!(step.wake, Wake::Everyone | Wake::Halt) {
                    hb_due = now;
                }
                progressed = true;
            }
        }
        if !progressed {
            clock.set(hb_due.min(claim_due));
        }
    }
    unreachable!("the replay ends with a stop");
}
