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
//! - `step`: what one worker's turn costs (a `Lifecycle`'s deadlines, the
//!   operations it starts, their answers, its next deadline), steady and
//!   during an outage.
//!
//! The simulation is `core/tests/support/fleet.rs` (which the core's fleet
//! test asserts on), included here.

#![allow(clippy::float_arithmetic)] // reporting only

use std::hint::black_box;
use std::time::Instant as StdInstant;

use outage_core::{Config, Failure, Instant, Lifecycle, Reply, Request, Transport};
use serde_json::{Value, json};

#[path = "../../core/tests/support/fleet.rs"]
#[allow(dead_code)]
mod fleet;
use fleet::{Scenario, simulate, turn};

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
                    let started = StdInstant::now();
                    let r = simulate(&s);
                    let wall_ns = started.elapsed().as_nanos();
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
                        "requests_per_worker_during": r.requests_per_worker_during_outage,
                        "stopped": r.stopped,
                        "steps": r.steps,
                        "sim_ns_per_step": wall_ns as f64 / r.steps as f64,
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
            sent.push(r.during_median);
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

/// What one turn of one worker costs: time jumps to the next instant the
/// worker acts ([`Lifecycle::poll_timeout`]), so nearly every turn sends a
/// request (a claim, or a heartbeat) and takes its answer
/// ([`fleet::turn`]); in an outage every request fails (and the server
/// answers one request in 8, so the worker never stops).
fn step_cost(outage: bool) -> Value {
    let n: u64 = 1_000_000;
    let mut lc = Lifecycle::<1>::new(Config::DEFAULT, 0, false, 1, Instant::ZERO).unwrap();
    let fail = Failure::Transport(Transport::ConnectionRefused);
    let mut now = Instant::ZERO;
    let (mut requests, mut polls) = (0u64, 0u64);
    let t0 = StdInstant::now();
    while requests < n {
        polls += 1;
        let next = black_box(turn(&mut lc, now, |req| {
            requests += 1;
            let up = !outage || requests % 8 == 0;
            match (up, req) {
                // Startup is not what is measured: it succeeds.
                (_, Request::CreateWorker) => Ok(Reply::Done),
                (false, _) => Err(fail),
                (true, Request::Claim) => Ok(Reply::Claimed(false)),
                (true, _) => Ok(Reply::Done),
            }
        }));
        let next = next.expect("the worker must keep running here");
        now = next.max(now + outage_core::Duration::from_millis(1));
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
