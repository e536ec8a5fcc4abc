//! A fleet of simulated workers driven through `outage-core` on one manual
//! clock: every worker starts at the same instant, the server goes down,
//! comes back, and we count requests. Used by `tests/fleet.rs` (which
//! asserts the jitter scheme's targets) and `examples/fleet.rs` (which prints
//! the comparison table).

// A test harness on the host: floats are fine here, never in the core.
#![allow(clippy::float_arithmetic)]

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use outage_core::{
    ClaimAction, Config, Duration, Failure, HeartbeatAction, Instant, Machine, Transport, Wake,
};

/// The caller's entropy, deterministic here.
pub use outage_core::SplitMix64 as Rng;

/// One simulated scenario.
#[derive(Clone, Copy, Debug)]
pub struct Scenario {
    pub workers: usize,
    pub config: Config,
    /// When the server goes down (ms after every worker started).
    pub down_at: u64,
    /// How long it stays down (ms).
    pub down_for: u64,
    /// How long to keep simulating after it returns (ms).
    pub after: u64,
    pub seed: u64,
}

/// What the scenario measured.
#[derive(Clone, Debug)]
pub struct Report {
    /// Most requests in any 100 ms window after the server returned.
    pub peak_per_100ms: usize,
    /// Requests per 100 ms of the whole fleet polling normally.
    pub steady_per_100ms: f64,
    /// Median time from the server's return to each worker's first
    /// successful claim (ms).
    pub median_recovery_ms: u64,
    /// Slowest worker's recovery (ms).
    pub max_recovery_ms: u64,
    /// Requests per worker while the server was down.
    pub requests_per_worker_during_outage: f64,
    /// Workers that stopped.
    pub stopped: usize,
}

impl Report {
    pub fn herd_factor(&self) -> f64 {
        self.peak_per_100ms as f64 / self.steady_per_100ms
    }
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Loop {
    Heartbeat,
    Claim,
}

pub fn simulate(s: &Scenario) -> Report {
    let mut rng = Rng::new(s.seed);
    let up_at = s.down_at + s.down_for;
    let end = up_at + s.after;
    let server_up = |t: u64| t < s.down_at || t >= up_at;
    let refused = Failure::Transport(Transport::ConnectionRefused);

    let mut machines: Vec<Machine> = (0..s.workers)
        .map(|_| Machine::new(s.config, Instant::ZERO, rng.next_u32()).unwrap())
        .collect();
    // Per worker and loop: the generation of its one scheduled wake-up, so a
    // wake-up replaced by an earlier one is ignored (a runtime's timer is
    // re-armed, not duplicated).
    let mut generation = vec![[0u64; 2]; s.workers];
    let mut queue: BinaryHeap<Reverse<(u64, usize, Loop, u64)>> = BinaryHeap::new();
    let schedule = |queue: &mut BinaryHeap<_>, generation: &mut Vec<[u64; 2]>, t: u64, w: usize, l: Loop| {
        let g = &mut generation[w][l as usize];
        *g += 1;
        queue.push(Reverse((t, w, l, *g)));
    };
    for w in 0..s.workers {
        schedule(&mut queue, &mut generation, 0, w, Loop::Heartbeat);
        schedule(&mut queue, &mut generation, 0, w, Loop::Claim);
    }

    let mut requests: Vec<u64> = Vec::new();
    let mut recovered: Vec<Option<u64>> = vec![None; s.workers];
    let mut stopped = vec![false; s.workers];

    while let Some(Reverse((t, w, l, g))) = queue.pop() {
        if t > end {
            break;
        }
        if generation[w][l as usize] != g {
            continue;
        }
        let now = Instant::from_millis(t);
        let m = &mut machines[w];
        let mut wake = Wake::Nobody;
        let next = match l {
            Loop::Heartbeat => match m.heartbeat_poll(now) {
                HeartbeatAction::Wait(d) => Some(d),
                HeartbeatAction::Stop(_) | HeartbeatAction::Login => None,
                HeartbeatAction::Expire => {
                    wake = m.on_expired(now).wake;
                    None
                }
                HeartbeatAction::Beat => {
                    requests.push(t);
                    let r = if server_up(t) { Ok(()) } else { Err(refused) };
                    let step = m.on_heartbeat(now, now, r);
                    wake = step.wake;
                    match step.action {
                        HeartbeatAction::Wait(d) => Some(d),
                        HeartbeatAction::Beat | HeartbeatAction::Login | HeartbeatAction::Expire => Some(now),
                        HeartbeatAction::Stop(_) => None,
                    }
                }
            },
            Loop::Claim => match m.claim_poll(now) {
                ClaimAction::Wait(d) => Some(d),
                ClaimAction::Stop(_) => None,
                ClaimAction::Expire => {
                    wake = m.on_expired(now).wake;
                    Some(now)
                }
                ClaimAction::Claim => {
                    requests.push(t);
                    let r = if server_up(t) { Ok(false) } else { Err(refused) };
                    if r.is_ok() && t >= up_at && recovered[w].is_none() {
                        recovered[w] = Some(t - up_at);
                    }
                    let step = m.on_claim(now, now, r, rng.next_u32());
                    wake = step.wake;
                    match step.action {
                        ClaimAction::Wait(d) => Some(d),
                        ClaimAction::Stop(_) => None,
                        _ => Some(now),
                    }
                }
                other => unreachable!("no tasks in this simulation: {other:?}"),
            },
        };
        match next {
            Some(d) => schedule(&mut queue, &mut generation, d.as_millis().max(t), w, l),
            None => stopped[w] = true,
        }
        if wake == Wake::Claim && l == Loop::Heartbeat {
            schedule(&mut queue, &mut generation, t, w, Loop::Claim);
        }
    }

    requests.sort_unstable();
    // Sliding 100 ms window over requests after the return.
    let after: Vec<u64> = requests.iter().copied().filter(|&t| t >= up_at).collect();
    let mut peak = 0;
    let mut lo = 0;
    for hi in 0..after.len() {
        while after[hi] - after[lo] >= 100 {
            lo += 1;
        }
        peak = peak.max(hi - lo + 1);
    }
    let poll = s.config.poll_interval.as_millis() as f64;
    let hb = s.config.heartbeat_interval.as_millis() as f64;
    let steady = s.workers as f64 * (100.0 / poll + 100.0 / hb);
    let during = requests.iter().filter(|&&t| t >= s.down_at && t < up_at).count();
    let mut rec: Vec<u64> = recovered.iter().map(|r| r.unwrap_or(s.after)).collect();
    rec.sort_unstable();
    Report {
        peak_per_100ms: peak,
        steady_per_100ms: steady,
        median_recovery_ms: rec[rec.len() / 2],
        max_recovery_ms: *rec.last().unwrap(),
        requests_per_worker_during_outage: during as f64 / s.workers as f64,
        stopped: stopped.iter().filter(|&&x| x).count(),
    }
}

/// The scenario of the issue: `workers` started together, server down at
/// 20 s for `down_secs`, measured for 60 s after it returns.
pub fn scenario(workers: usize, config: Config, down_secs: u64, seed: u64) -> Scenario {
    Scenario {
        workers,
        config,
        down_at: 20_000,
        down_for: Duration::from_secs(down_secs).as_millis(),
        after: 60_000,
        seed,
    }
}
