//! Prints how a fleet of workers rides out an outage with each jitter
//! scheme: `cargo run --release -p outage-core --example fleet [WORKERS]`.

#![allow(clippy::float_arithmetic)]

#[path = "../tests/support/fleet.rs"]
#[allow(dead_code)] // the test uses more of it than this example
mod fleet;

use outage_core::{Config, Jitter};

fn main() {
    let workers = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5_000);
    println!("{workers} workers started together; server down at 20 s; measured for 60 s after it returns.");
    println!(
        "{:<8} {:>7} {:>10} {:>10} {:>10} {:>10} {:>9} {:>12}",
        "jitter", "outage", "peak/100ms", "steady", "herd ×", "median rec", "max rec", "req/worker"
    );
    for down in [60, 115] {
        for jitter in [Jitter::Off, Jitter::Equal, Jitter::Full] {
            let config = Config {
                jitter,
                ..Config::DEFAULT
            };
            let r = fleet::simulate(&fleet::scenario(workers, config, down, 0x5EED));
            println!(
                "{:<8} {:>6}s {:>10} {:>10.1} {:>10.2} {:>9.2}s {:>8.1}s {:>12.1}",
                format!("{jitter:?}"),
                down,
                r.peak_per_100ms,
                r.steady_per_100ms,
                r.herd_factor(),
                r.median_recovery_ms as f64 / 1000.0,
                r.max_recovery_ms as f64 / 1000.0,
                r.requests_per_worker_during_outage
            );
        }
    }
}
