//! Chaos soak with push, against the real job server (`serve.py
//! --socketio`), with exactly-once accounting.
//!
//! Three host workers with task-available push serve 120 tasks submitted
//! at random gaps over about 40 s while the real server suffers real
//! faults on a seeded schedule (printed; `OUTAGE_CHAOS_SEED=N` replays the
//! schedule — the timing of a real server never replays exactly):
//! - **pause**: SIGSTOP for 1–4 s, then SIGCONT — it accepts connections
//!   and answers late, past the workers' request timeout, while every
//!   Socket.IO connection hangs;
//! - **crash**: SIGKILL, down 0.3–2 s, started again on the same port and
//!   database — in-flight requests get no answer, every push connection
//!   breaks;
//! - **restart**: SIGTERM (uvicorn's graceful stop closes the WebSockets)
//!   and start again;
//! - **no Socket.IO**: restarted without `--socketio` for 3–6 s (tasks are
//!   submitted meanwhile and served by polling), then with it again.
//!
//! Submissions wait while the server is down or paused (a submit is the
//! test's request, not the worker's). Then, faults over, the test waits
//! (bounded) until every task is terminal and checks, from the server's
//! state and the handlers' record:
//! - no task is left pending, claimed or running, none was cancelled;
//! - no handler ran a task twice;
//! - a task ended in the state its handler returned (completed, or failed
//!   with the handler's text), and the payload the handler got is the
//!   submitted text byte for byte;
//! - a task the server failed with "Worker disconnected" (an ambiguous claim
//!   resolved by registering afresh and deleting the old id) was run by no
//!   handler;
//! - every worker is still running, never logged an outage error, and is
//!   connected to push again at the end: three tasks in a row are each
//!   picked up within a second while polling is every 10 s.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_std::task::block_on;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use outage_core::{Config, Duration as CoreDuration, OnRegistrationLost, SplitMix64};
use outage_runtime_std::{Job, PushMode, Task, Worker, WorkerBuilder};
use outage_tests::capture;
use outage_tests::real::{Options, RealServer};

const JOB: &str = "@global:modifiers:Echo";
const WORKERS: usize = 3;
const TASKS: usize = 120;
/// Fault windows start within this span.
const FAULT_SPAN: Duration = Duration::from_secs(42);
/// After the faults: every task terminal within this long.
const DRAIN_LIMIT: Duration = Duration::from_secs(90);
const RECOVERY_ERROR: &str = "Worker disconnected";

fn soak_config() -> Config {
    Config {
        heartbeat_interval: CoreDuration::from_secs(1),
        // Slow enough that push, not polling, explains the final pickups.
        poll_interval: CoreDuration::from_secs(10),
        max_unreachable: CoreDuration::from_secs(90),
        backoff_cap: CoreDuration::from_secs(10),
        request_timeout: CoreDuration::from_millis(1_500),
        on_registration_lost: OnRegistrationLost::Register,
        ..Config::DEFAULT
    }
}

struct Rng(SplitMix64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        ((u64::from(self.0.next_u32()) << 32) | u64::from(self.0.next_u32())) % n
    }

    fn ms(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi - lo + 1))
    }
}

fn seed() -> u64 {
    std::env::var("OUTAGE_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        })
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    Pause(Duration),
    Crash(Duration),
    Restart,
    NoSocketio(Duration),
}

fn schedule(rng: &mut Rng) -> Vec<(Duration, Fault)> {
    let mut at = Duration::ZERO;
    let mut out = Vec::new();
    loop {
        at += rng.ms(3_000, 7_000);
        if at >= FAULT_SPAN {
            return out;
        }
        let fault = match rng.below(4) {
            0 => Fault::Pause(rng.ms(1_000, 4_000)),
            1 => Fault::Crash(rng.ms(300, 2_000)),
            2 => Fault::Restart,
            _ => Fault::NoSocketio(rng.ms(3_000, 6_000)),
        };
        out.push((at, fault));
    }
}

/// What a handler saw: the payload text and what it returned.
type Runs = Arc<Mutex<HashMap<String, Vec<(String, Result<(), String>)>>>>;

fn worker(url: &str, token: &str, runs: &Runs) -> Worker {
    let runs = runs.clone();
    let builder = WorkerBuilder::new(url, token)
        .config(soak_config())
        .push(PushMode::On)
        .job(Job::parse(JOB).unwrap(), move |t: Task| {
            let runs = runs.clone();
            async move {
                let payload = t.payload_json().to_owned();
                let v: serde_json::Value = serde_json::from_str(&payload).map_err(|e| e.to_string())?;
                let outcome = match v["fail"].as_str() {
                    Some(why) => Err(why.to_owned()),
                    None => Ok(()),
                };
                let nap = v["nap"].as_u64().unwrap_or(0);
                runs.lock()
                    .unwrap()
                    .entry(t.id.clone())
                    .or_default()
                    .push((payload, outcome.clone()));
                async_std::task::sleep(Duration::from_millis(nap)).await;
                outcome
            }
        });
    block_on(builder.start()).expect("worker start")
}

/// A payload a float or `Value` round trip would change, sometimes asking
/// the handler to fail.
fn payload(rng: &mut Rng, n: usize) -> String {
    let fail = if rng.below(5) == 0 {
        // Raw UTF-8: the server stores the payload as parsed JSON and would
        // write a `\u00e9` escape back as `é` (its copy, not ours, differs).
        format!("\"why {n} é \\\" \\\\\"")
    } else {
        "null".to_owned()
    };
    format!(
        r#"{{"n":{n},"x":0.9889559355234849,"big":123456789012345678901234567890,"z":-0.0,"nap":{},"fail":{fail}}}"#,
        rng.below(80)
    )
}

fn socketio(on: bool) -> Vec<String> {
    if on { vec!["--socketio".into()] } else { vec![] }
}

/// Runs one fault, holding `gate` (no submission) while the server is
/// down or paused.
fn inject(server: &Mutex<RealServer>, gate: &Mutex<()>, fault: Fault) {
    let _closed = gate.lock().unwrap();
    let mut s = server.lock().unwrap();
    match fault {
        Fault::Pause(d) => {
            let pid = Pid::from_raw(s.pid().expect("server running") as i32);
            kill(pid, Signal::SIGSTOP).expect("SIGSTOP");
            std::thread::sleep(d);
            kill(pid, Signal::SIGCONT).expect("SIGCONT");
        }
        Fault::Crash(down) => {
            s.crash().expect("crash");
            std::thread::sleep(down);
            s.restart().expect("start again");
        }
        Fault::Restart => s.restart().expect("restart"),
        Fault::NoSocketio(span) => {
            s.set_args(socketio(false));
            s.restart().expect("restart without Socket.IO");
            // Served by polling meanwhile: let submissions through.
            drop(_closed);
            std::thread::sleep(span);
            let _closed = gate.lock().unwrap();
            s.set_args(socketio(true));
            s.restart().expect("restart with Socket.IO");
        }
    }
}

#[test]
fn push_workers_keep_exactly_once_through_real_faults() {
    let seed = seed();
    println!("push chaos soak, seed {seed} (replay the schedule: OUTAGE_CHAOS_SEED={seed})");
    let mut rng = Rng(SplitMix64::new(seed));
    let faults = schedule(&mut rng);
    println!("faults: {faults:?}");
    let log = capture::start();
    let server = RealServer::start_with(Options {
        args: socketio(true),
        // A retired worker id whose delete was lost is swept in seconds,
        // not in a minute and a half; still far above any fault's length.
        env: vec![
            ("ZNDRAW_JOBLIB_WORKER_TIMEOUT_SECONDS".into(), "20".into()),
            ("ZNDRAW_JOBLIB_SWEEPER_INTERVAL_SECONDS".into(), "2".into()),
        ],
        ..Options::default()
    })
    .expect("real job server with --socketio");
    let (url, token) = (server.url().to_owned(), server.token().to_owned());
    let api = server.api();
    let runs = Runs::default();
    let workers: Vec<Worker> = (0..WORKERS).map(|_| worker(&url, &token, &runs)).collect();
    assert!(
        log.wait_for("Push connected", Duration::from_secs(30)).is_some(),
        "{}",
        log.dump()
    );

    let server = Arc::new(Mutex::new(server));
    let gate = Arc::new(Mutex::new(()));
    let t0 = Instant::now();
    let chaos = {
        let (server, gate) = (server.clone(), gate.clone());
        let faults = faults.clone();
        std::thread::spawn(move || {
            for (at, fault) in faults {
                if let Some(wait) = (t0 + at).checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                inject(&server, &gate, fault);
            }
        })
    };
    let mut submitted: Vec<(String, String)> = Vec::with_capacity(TASKS);
    for n in 0..TASKS {
        std::thread::sleep(rng.ms(0, 650));
        let p = payload(&mut rng, n);
        let _open = gate.lock().unwrap();
        submitted.push((api.submit("room1", JOB, &p), p));
    }
    chaos.join().expect("fault thread");
    let faults_over = Instant::now();
    println!(
        "{} tasks submitted, {} faults injected in {:.1} s",
        submitted.len(),
        faults.len(),
        faults_over.duration_since(t0).as_secs_f64()
    );

    // Every task terminal (bounded).
    let mut state: HashMap<String, serde_json::Value> = HashMap::new();
    loop {
        for (id, _) in &submitted {
            let done = state
                .get(id)
                .is_some_and(|t| matches!(t["status"].as_str(), Some("completed" | "failed" | "cancelled")));
            if !done {
                state.insert(id.clone(), api.task(id));
            }
        }
        let open: Vec<&str> = submitted
            .iter()
            .filter(|(id, _)| {
                !matches!(
                    state[id]["status"].as_str(),
                    Some("completed" | "failed" | "cancelled")
                )
            })
            .map(|(id, _)| id.as_str())
            .collect();
        if open.is_empty() {
            break;
        }
        assert!(
            faults_over.elapsed() < DRAIN_LIMIT,
            "seed {seed}: {} tasks not terminal {DRAIN_LIMIT:?} after the faults, e.g. {:?}\n{}",
            open.len(),
            state[open[0]],
            log.dump()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    println!(
        "drained {:.1} s after the faults",
        faults_over.elapsed().as_secs_f64()
    );

    // The accounting.
    let runs_now = runs.lock().unwrap().clone();
    let mut problems = Vec::new();
    let (mut completed, mut failed, mut recovered) = (0, 0, 0);
    for (id, p) in &submitted {
        let t = &state[id];
        let status = t["status"].as_str().unwrap_or_default();
        let error = t["error"].as_str();
        let ran = runs_now.get(id).map_or(&[][..], Vec::as_slice);
        if ran.len() > 1 {
            problems.push(format!("{id} ran {} times", ran.len()));
        }
        for (got, _) in ran {
            if got != p {
                problems.push(format!("{id}: payload {p} reached the handler as {got}"));
            }
        }
        match (status, ran.first()) {
            ("failed", None) if error == Some(RECOVERY_ERROR) => recovered += 1,
            ("failed", Some(_)) if error == Some(RECOVERY_ERROR) => {
                problems.push(format!("{id}: failed by recovery although its handler ran"));
            }
            ("completed", Some((_, Ok(())))) => completed += 1,
            ("failed", Some((_, Err(why)))) if error == Some(why.as_str()) => failed += 1,
            _ => problems.push(format!(
                "{id}: server says {status} ({error:?}), handler runs {:?}",
                ran.iter().map(|r| &r.1).collect::<Vec<_>>()
            )),
        }
    }
    println!(
        "completed {completed}, failed as asked {failed}, failed by recovery {recovered}, \
         push connections {}, lost {}",
        log.matching("Push connected").len(),
        log.matching("Push connection lost").len()
    );
    assert!(
        problems.is_empty(),
        "seed {seed}: {} problems:\n{}\n{}",
        problems.len(),
        problems.join("\n"),
        log.dump()
    );
    assert!(
        recovered <= TASKS / 10,
        "seed {seed}: {recovered} tasks failed by recovery"
    );

    // Still running, push back: three tasks in a row are each claimed
    // within a second (polling is every 10 s: by chance, for all three,
    // about one run in forty). Each worker reconnects on its own backoff.
    for w in &workers {
        assert_eq!(w.stop_reason(), None, "seed {seed}\n{}", log.dump());
    }
    assert!(
        log.matching("Server unreachable for").is_empty(),
        "seed {seed}: an outage error\n{}",
        log.dump()
    );
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut in_a_row = 0;
    while in_a_row < 3 {
        assert!(
            Instant::now() < deadline,
            "seed {seed}: push did not come back after the faults\n{}",
            log.dump()
        );
        let id = api.submit("room1", JOB, r#"{"fail":null}"#);
        let t1 = Instant::now();
        while !runs.lock().unwrap().contains_key(&id) && t1.elapsed() < Duration::from_secs(1) {
            std::thread::sleep(Duration::from_millis(5));
        }
        in_a_row = if t1.elapsed() < Duration::from_secs(1) {
            in_a_row + 1
        } else {
            0
        };
        std::thread::sleep(Duration::from_millis(200));
    }
    for w in &workers {
        block_on(w.disconnect());
    }
    drop(server);
}
