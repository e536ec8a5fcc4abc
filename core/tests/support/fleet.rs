//! A fleet of simulated workers, each a whole [`Lifecycle`] (the path both
//! runtimes ship, through `outage_core::driver`), on one manual clock: the
//! workers start together (or spread), the server goes down,
//! comes back, and we count requests. Used by `tests/fleet.rs` (which
//! asserts the jitter scheme's targets), `examples/fleet.rs` (which prints
//! the comparison table) and `tests/benches/fleet.rs` (BENCHMARKS.md).

// A test harness on the host: floats are fine here, never in the core.
#![allow(clippy::float_arithmetic)]

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use outage_core::{Config, Duration, Failure, Instant, Lifecycle, Op, Outcome, Reply, Request, Transport};

/// The caller's entropy, deterministic here.
pub use outage_core::SplitMix64 as Rng;

/// One simulated scenario.
#[derive(Clone, Copy, Debug)]
pub struct Scenario {
    pub workers: usize,
    pub config: Config,
    /// Worker `w` starts at `w * spread / workers` ms (0: all together).
    pub spread: u64,
    /// When the server goes down (ms after the first worker started).
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
    /// Requests per worker while the server was down: the mean, the
    /// median and the most.
    pub requests_per_worker_during_outage: f64,
    pub during_median: u64,
    pub during_max: u64,
    /// Workers that stopped.
    pub stopped: usize,
    /// Requests in each 100 ms of the run.
    pub histogram: Vec<u32>,
    /// Worker turns simulated (a wake-up: its deadlines, the operations it
    /// starts and their answers).
    pub steps: u64,
}

impl Report {
    pub fn herd_factor(&self) -> f64 {
        self.peak_per_100ms as f64 / self.steady_per_100ms
    }
}

/// One worker's turn at `now`, as the driver takes it: the deadlines that
/// passed, then every operation the lifecycle starts, each answered at once
/// by `answer` (the server's reply, or how the request failed). Returns
/// when the worker next acts by itself (`None`: never again).
pub fn turn(
    lc: &mut Lifecycle<1>,
    now: Instant,
    mut answer: impl FnMut(Request) -> Result<Reply, Failure>,
) -> Option<Instant> {
    let out = &mut |_| {};
    lc.handle_timeout(now, out);
    while let Some((lane, op)) = lc.poll_start(now, out) {
        let outcome = match op {
            Op::Send(req) => Outcome::Replied(answer(req)),
            Op::Run => unreachable!("no tasks in this simulation"),
        };
        lc.handle(lane, now, outcome, out);
    }
    lc.poll_timeout()
}

pub fn simulate(s: &Scenario) -> Report {
    let mut rng = Rng::new(s.seed);
    let up_at = s.down_at + s.down_for;
    let end = up_at + s.after;
    let server_up = |t: u64| t < s.down_at || t >= up_at;
    let refused = Failure::Transport(Transport::ConnectionRefused);
    let start_of = |w: usize| s.spread * w as u64 / s.workers as u64;

    // Each worker's whole life (no job to register, no login): it creates
    // itself on the server when it starts, then serves.
    let mut workers: Vec<Lifecycle<1>> = (0..s.workers)
        .map(|w| {
            let seed = u64::from(rng.next_u32()) << 32 | u64::from(rng.next_u32());
            Lifecycle::new(s.config, 0, false, seed, Instant::from_millis(start_of(w))).unwrap()
        })
        .collect();
    let mut queue: BinaryHeap<Reverse<(u64, usize)>> =
        (0..s.workers).map(|w| Reverse((start_of(w), w))).collect();

    let mut histogram = vec![0u32; (end / 100 + 1) as usize];
    let mut after: Vec<u64> = Vec::new();
    let mut during = vec![0u64; s.workers];
    let mut recovered: Vec<Option<u64>> = vec![None; s.workers];
    let mut steps = 0u64;

    while let Some(Reverse((t, w))) = queue.pop() {
        if t > end {
            break;
        }
        steps += 1;
        let next = turn(&mut workers[w], Instant::from_millis(t), |req| {
            histogram[(t / 100) as usize] += 1;
            if t >= up_at {
                after.push(t);
            } else if t >= s.down_at {
                during[w] += 1;
            }
            if !server_up(t) {
                return Err(refused);
            }
            match req {
                Request::Claim => {
                    if t >= up_at && recovered[w].is_none() {
                        recovered[w] = Some(t - up_at);
                    }
                    Ok(Reply::Claimed(false))
                }
                _ => Ok(Reply::Done),
            }
        });
        if let Some(d) = next {
            queue.push(Reverse((d.as_millis().max(t), w)));
        }
    }
    let stopped = workers.iter().filter(|lc| lc.stop_reason().is_some()).count();

    after.sort_unstable();
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
    let mut rec: Vec<u64> = recovered.iter().map(|r| r.unwrap_or(s.after)).collect();
    rec.sort_unstable();
    let mean = during.iter().sum::<u64>() as f64 / s.workers as f64;
    during.sort_unstable();
    Report {
        peak_per_100ms: peak,
        steady_per_100ms: steady,
        median_recovery_ms: rec[rec.len() / 2],
        max_recovery_ms: *rec.last().unwrap(),
        requests_per_worker_during_outage: mean,
        during_median: during[during.len() / 2],
        during_max: *during.last().unwrap(),
        stopped,
        histogram,
        steps,
    }
}

/// The scenario of the issue: `workers` started together, server down at
/// 20 s for `down_secs`, measured for 60 s after it returns.
pub fn scenario(workers: usize, config: Config, down_secs: u64, seed: u64) -> Scenario {
    Scenario {
        workers,
        config,
        spread: 0,
        down_at: 20_000,
        down_for: Duration::from_secs(down_secs).as_millis(),
        after: 60_000,
        seed,
    }
}
