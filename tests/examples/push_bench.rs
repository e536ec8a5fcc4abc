//! Task-available push, measured against the real job server
//! (`serve.py --socketio`): pickup latency with push and with polling, idle
//! requests per worker, and the server's CPU for a fleet of idle workers.
//! A benchmark, not a test: it prints numbers (as Markdown rows) and
//! asserts nothing. Run it through `benches/push.sh`.
//!
//! * **Pickup latency**: from just before `POST /rooms/room1/tasks/{job}`
//!   to the handler's start. The worker starts the handler once the server
//!   answered its `PATCH … running`, so this is "submit → running on the
//!   server" plus the wake-up of the handler (microseconds). One worker,
//!   tasks submitted one at a time at random gaps (so polling is sampled
//!   at random phases).
//! * **Idle requests**: every request the idle workers send (heartbeats and
//!   claims; `Stats::requests`) over the window, per worker per second.
//! * **Server CPU**: user + system time of the server process
//!   (`/proc/PID/stat`) over the same window, in percent of one core.
//!
//! Environment: `PUSH_BENCH_WORKERS` (100), `PUSH_BENCH_IDLE_S` (60),
//! `PUSH_BENCH_SAMPLES` (push 60, polling 30 — `PUSH_BENCH_SAMPLES=n` sets
//! both).

#![allow(clippy::float_arithmetic)] // reporting only

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_std::task::block_on;
use outage_core::{Config, Duration as CoreDuration};
use outage_runtime_std::{Job, PushMode, Task, Worker, WorkerBuilder};
use outage_tests::real::{Options, RealServer};

const JOB: &str = "@global:modifiers:Echo";

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

type Started = Arc<Mutex<Vec<(String, Instant)>>>;

fn worker(server: &RealServer, push: PushMode, cfg: Config, started: &Started) -> Worker {
    let started = started.clone();
    block_on(
        WorkerBuilder::new(server.url(), server.token())
            .config(cfg)
            .push(push)
            .job(Job::parse(JOB).unwrap(), move |t: Task| {
                started.lock().unwrap().push((t.id.clone(), Instant::now()));
                async { Ok(()) }
            })
            .start(),
    )
    .expect("worker start")
}

/// User + system CPU time of `pid`, in clock ticks (100 per second).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc stat");
    // The fields after the command name (which may hold spaces) in parens.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 here.
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// A tiny xorshift for the gaps (no dependency).
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn latency(mode: &str, push: PushMode, samples: usize) {
    let server = RealServer::start_with(Options {
        args: vec!["--socketio".into()],
        ..Options::default()
    })
    .expect("real job server");
    let started = Started::default();
    let w = worker(&server, push, Config::DEFAULT, &started);
    // Settle: push connected (or the first polls done).
    std::thread::sleep(Duration::from_secs(3));
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut ms = Vec::new();
    for _ in 0..samples {
        std::thread::sleep(Duration::from_millis(200 + rng.below(1_800)));
        let t0 = Instant::now();
        let id = server.api().submit("room1", JOB, "{}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some((_, at)) = started.lock().unwrap().iter().find(|(t, _)| *t == id) {
                ms.push(at.saturating_duration_since(t0).as_secs_f64() * 1e3);
                break;
            }
            assert!(Instant::now() < deadline, "{id} never started");
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    block_on(w.disconnect());
    ms.sort_by(f64::total_cmp);
    println!(
        "| pickup, {mode} | {} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms |",
        ms.len(),
        percentile(&ms, 0.5),
        percentile(&ms, 0.95),
        ms[0],
        ms[ms.len() - 1]
    );
}

fn idle(mode: &str, push: PushMode, workers: usize, window: Duration, push_poll: u64) {
    let server = RealServer::start_with(Options {
        args: vec!["--socketio".into()],
        ..Options::default()
    })
    .expect("real job server");
    let started = Started::default();
    let cfg = Config {
        push_poll_interval: CoreDuration::from_secs(push_poll),
        ..Config::DEFAULT
    };
    let fleet: Vec<Worker> = (0..workers)
        .map(|_| worker(&server, push, cfg, &started))
        .collect();
    // Every worker past its start (push connected, first claims made).
    std::thread::sleep(Duration::from_secs(10));
    let pid = server.pid().expect("server running");
    let req0: u64 = fleet.iter().map(|w| w.stats().requests).sum();
    let cpu0 = cpu_ticks(pid);
    let t0 = Instant::now();
    std::thread::sleep(window);
    let secs = t0.elapsed().as_secs_f64();
    let cpu = (cpu_ticks(pid) - cpu0) as f64 / 100.0;
    let req: u64 = fleet.iter().map(|w| w.stats().requests).sum::<u64>() - req0;
    for w in &fleet {
        block_on(w.disconnect());
    }
    println!(
        "| idle, {mode} | {workers} | {:.0} s | {} | {:.4} | {:.1} % |",
        secs,
        req,
        req as f64 / workers as f64 / secs,
        cpu / secs * 100.0
    );
}

fn main() {
    let samples = std::env::var("PUSH_BENCH_SAMPLES")
        .ok()
        .and_then(|v| v.parse().ok());
    let workers = env("PUSH_BENCH_WORKERS", 100) as usize;
    let window = Duration::from_secs(env("PUSH_BENCH_IDLE_S", 60));
    println!("| what | samples | median | p95 | min | max |");
    println!("| --- | --- | --- | --- | --- | --- |");
    latency("push (default config)", PushMode::On, samples.unwrap_or(60));
    latency(
        "polling every 2 s (default config)",
        PushMode::Off,
        samples.unwrap_or(30),
    );
    println!();
    println!("| what | workers | window | requests | requests / worker / s | server CPU (one core) |");
    println!("| --- | --- | --- | --- | --- | --- |");
    idle(
        "push, fallback poll 60 s (default)",
        PushMode::On,
        workers,
        window,
        60,
    );
    idle("push, fallback poll 30 s", PushMode::On, workers, window, 30);
    idle("polling every 2 s", PushMode::Off, workers, window, 30);
}
