//! Simulated numbers for BENCHMARKS.md, all on one manual clock (no network,
//! no sleeping): `cargo bench -p outage-tests --bench fleet -- OUT.json`.
//!
//! - `fleet`: 1 000 and 10 000 workers, started together (aligned) or
//!   spread evenly over the first 30 s, through an outage of 60 s and of
//!   115 s starting at 40 s, with the reference's policy (`Config::REFERENCE`:
//!   no jitter) and ours (`Config::DEFAULT`: equal jitter). Per run: the
//!   busiest 100 ms after the return ÷ the steady rate, median and worst
//!   recovery (return → first successful claim), requests per worker during
//!   the outage, and requests per 100 ms over the whole run (for the plot).
//! - `one_worker`: one worker through a 120 s outage (= `max_unreachable`),
//!   1 000 seeds: requests sent during the outage and the recovery time.
//! - `step`: what one core step costs (`claim_poll` + `on_claim`, and
//!   `heartbeat_poll` + `on_heartbeat`), steady and during an outage.
//!
//! The simulation is the one of `core/tests/support/fleet.rs` (which the
//! core's fleet test asserts on), with start offsets and a histogram added.

#![allow(clippy::float_arithmetic)] // reporting only

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::hint::black_box;
use std::time::Instant as StdInstant;

use outage_core::{
    ClaimAction, Config, Failure, HeartbeatAction, Instant, Machine, SplitMix64 as Rng, Transport, Wake,
};
use serde_json::{Value, json};

#[derive(Clone, Copy)]
struct Scenario {
    workers: usize,
    config: Config,
    /// Worker `w` starts at `w * spread / workers` ms.
    spread: u64,
    down_at: u64,
    down_for: u64,
    after: u64,
    seed: u64,
}

struct Report {
    peak_per_100ms: usize,
    steady_per_100ms: f64,
    median_recovery_ms: u64,
    max_recovery_ms: u64,
    /// Requests per worker while the server was down (median and max over
    /// workers, and the mean).
    during: (u64, u64, f64),
    stopped: usize,
    /// Requests in each 100 ms of the run.
    histogram: Vec<u32>,
    steps: u64,
    wall_ns: u128,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Loop {
    Heartbeat,
    Claim,
}

fn simulate(s: &Scenario) -> Report {
    let started = StdInstant::now();
    let mut rng = Rng::new(s.seed);
    let up_at = s.down_at + s.down_for;
    let end = up_at + s.after;
    let server_up = |t: u64| t < s.down_at || t >= up_at;
    let refused = Failure::Transport(Transport::ConnectionRefused);
    let start_of = |w: usize| s.spread * w as u64 / s.workers as u64;

    let mut machines: Vec<Machine> = (0..s.workers)
        .map(|w| Machine::new(s.config, Instant::from_millis(start_of(w)), rng.next_u32()).unwrap())
        .collect();
    let mut generation = vec![[0u64; 2]; s.workers];
    let mut queue: BinaryHeap<Reverse<(u64, usize, Loop, u64)>> = BinaryHeap::new();
    let schedule = |queue: &mut BinaryHeap<_>, generation: &mut Vec<[u64; 2]>, t: u64, w: usize, l: Loop| {
        let g = &mut generation[w][l as usize];
        *g += 1;
        queue.push(Reverse((t, w, l, *g)));
    };
    for w in 0..s.workers {
        schedule(&mut queue, &mut generation, start_of(w), w, Loop::Heartbeat);
        schedule(&mut queue, &mut generation, start_of(w), w, Loop::Claim);
    }

    let mut histogram = vec![0u32; (end / 100 + 1) as usize];
    let mut after: Vec<u64> = Vec::new();
    let mut during = vec![0u64; s.workers];
    let mut recovered: Vec<Option<u64>> = vec![None; s.workers];
    let mut stopped = vec![false; s.workers];
    let mut steps = 0u64;
    let mut request = |t: u64, w: usize| {
        histogram[(t / 100) as usize] += 1;
        if t >= up_at {
            after.push(t);
        } else if t >= s.down_at {
            during[w] += 1;
        }
    };

    while let Some(Reverse((t, w, l, g))) = queue.pop() {
        if t > end {
            break;
        }
        if generation[w][l as usize] != g {
            continue;
        }
        steps += 1;
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
                    request(t, w);
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
                    request(t, w);
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
    let wall_ns = started.elapsed().as_nanos();

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
        during: (during[during.len() / 2], *during.last().unwrap(), mean),
        stopped: stopped.iter().filter(|&&x| x).count(),
        histogram,
        steps,
        wall_ns,
    }
}

fn policies() -> [(&'static str, Config); 2] {
    [
        ("reference (no jitter)", Config::REFERENCE),
        ("ours (equal jitter)", Config::DEFAULT),
    ]
}

fn fleet() -> Value {
    let mut rows = Vec::new();
    for workers in [1_000, 10_000] {
        for (starts, spread) in [("aligned", 0), ("spread over 30 s", 30_000)] {
            for down in [60u64, 115] {
                for (policy, config) in policies() {
                    let s = Scenario {
                        workers,
                        config,
                        spread,
                        down_at: 40_000,
                        down_for: down * 1000,
                        after: 60_000,
                        seed: 0x5EED,
                    };
                    let r = simulate(&s);
                    eprintln!(
                        "fleet {workers} {starts} {down}s {policy}: peak/steady {:.2}, median rec {} ms",
                        r.peak_per_100ms as f64 / r.steady_per_100ms,
                        r.median_recovery_ms
                    );
                    let plot = workers == 10_000 && spread == 0;
                    rows.push(json!({
                        "workers": workers,
                        "starts": starts,
                        "outage_s": down,
                        "down_at_ms": s.down_at,
                        "policy": policy,
                        "peak_per_100ms": r.peak_per_100ms,
                        "steady_per_100ms": r.steady_per_100ms,
                        "peak_over_steady": r.peak_per_100ms as f64 / r.steady_per_100ms,
                        "median_recovery_ms": r.median_recovery_ms,
                        "max_recovery_ms": r.max_recovery_ms,
                        "requests_per_worker_during": r.during.2,
                        "stopped": r.stopped,
                        "steps": r.steps,
                        "sim_ns_per_step": r.wall_ns as f64 / r.steps as f64,
                        "histogram_100ms": if plot { json!(r.histogram) } else { Value::Null },
                    }));
                }
            }
        }
    }
    Value::Array(rows)
}

fn one_worker() -> Value {
    let mut rows = Vec::new();
    for (policy, config) in policies() {
        let (mut sent, mut rec, mut stopped) = (Vec::new(), Vec::new(), 0);
        for seed in 0..1_000 {
            let r = simulate(&Scenario {
                workers: 1,
                config,
                spread: 0,
                down_at: 40_000,
                down_for: 120_000,
                after: 60_000,
                seed,
            });
            sent.push(r.during.0);
            rec.push(r.median_recovery_ms);
            stopped += r.stopped;
        }
        sent.sort_unstable();
        rec.sort_unstable();
        rows.push(json!({
            "policy": policy,
            "seeds": 1000,
            "requests_median": sent[sent.len() / 2],
            "requests_max": sent.last(),
            "requests_min": sent.first(),
            "recovery_median_ms": rec[rec.len() / 2],
            "recovery_max_ms": rec.last(),
            "stopped": stopped,
        }));
    }
    Value::Array(rows)
}

/// What one step of one machine costs: time jumps to the next instant a
/// lane is due, so every step is a poll that sends a request and the
/// outcome that follows (`claim_poll` + `on_claim`, or `heartbeat_poll` +
/// `on_heartbeat`); in an outage every request fails (and the server
/// answers one request in 8, so the worker never stops).
fn step_cost(outage: bool) -> Value {
    let n: u64 = 1_000_000;
    let mut m = Machine::new(Config::DEFAULT, Instant::ZERO, 1).unwrap();
    let mut rng = Rng::new(3);
    let fail = Failure::Transport(Transport::ConnectionRefused);
    let (mut claim_at, mut beat_at) = (Instant::ZERO, Instant::ZERO);
    let (mut requests, mut polls) = (0u64, 0u64);
    let t0 = StdInstant::now();
    while requests < n {
        let claim = claim_at <= beat_at;
        let now = if claim { claim_at } else { beat_at };
        let up = !outage || requests % 8 == 7;
        polls += 1;
        if claim {
            claim_at = match black_box(m.claim_poll(now)) {
                ClaimAction::Claim => {
                    requests += 1;
                    let r = if up { Ok(false) } else { Err(fail) };
                    match black_box(m.on_claim(now, now, r, rng.next_u32())).action {
                        ClaimAction::Wait(d) => d.max(now + outage_core::Duration::from_millis(1)),
                        _ => now + outage_core::Duration::from_millis(1),
                    }
                }
                ClaimAction::Wait(d) => d.max(now + outage_core::Duration::from_millis(1)),
                ClaimAction::Expire => {
                    black_box(m.on_expired(now));
                    now + outage_core::Duration::from_millis(1)
                }
                other => panic!("the worker must keep running here: {other:?}"),
            };
        } else {
            beat_at = match black_box(m.heartbeat_poll(now)) {
                HeartbeatAction::Beat => {
                    requests += 1;
                    let r = if up { Ok(()) } else { Err(fail) };
                    match black_box(m.on_heartbeat(now, now, r)).action {
                        HeartbeatAction::Wait(d) => d.max(now + outage_core::Duration::from_millis(1)),
                        _ => now + outage_core::Duration::from_millis(1),
                    }
                }
                HeartbeatAction::Wait(d) => d.max(now + outage_core::Duration::from_millis(1)),
                _ => now + outage_core::Duration::from_millis(1),
            };
        }
    }
    let ns = t0.elapsed().as_nanos() as f64;
    json!({
        "case": if outage { "outage (requests fail)" } else { "steady (requests succeed)" },
        "requests": requests,
        "polls": polls,
        "ns_per_request": ns / requests as f64,
        "ns_per_poll": ns / polls as f64,
    })
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks for a list; no cases to list.
    }
    let out = json!({
        "fleet": fleet(),
        "one_worker": one_worker(),
        "step": [step_cost(false), step_cost(true)],
    });
    let text = serde_json::to_string(&out).unwrap();
    match args.first() {
        Some(path) => std::fs::write(path, text).expect("write the JSON"),
        None => println!("{text}"),
    }
}
