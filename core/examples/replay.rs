//! Replays outages on a manual clock and prints each log line at its
//! simulated time — no network, no sleeping, the same output every run.
//!
//! `cargo run -p outage-core --example replay`
//!
//! Timeline: the worker starts at 0 s and gets a task at 5 s that runs for
//! 6 s; the server goes down at 8 s and returns at 30 s (the task's outcome
//! is held and delivered), then goes down again at 60 s for 150 s, longer
//! than `max_unreachable` (120 s), and the worker shuts down. The worker
//! is a whole [`outage_core::Lifecycle`], driven as `outage_core::driver`
//! drives it: startup, both lanes, the stop and the final delete.

use outage_core::{
    Clock, Config, Duration, Event, Failure, Instant, Lane, Level, Lifecycle, ManualClock, Notice, Op,
    Outcome, Reply, Request, TaskState, Transport,
};

const DOWN: [(u64, u64); 2] = [(8_000, 30_000), (60_000, 210_000)];
const TASK_AT: u64 = 5_000;
const TASK_RUNS: u64 = 6_000;
/// The names the runtime would hold (the core holds no strings).
const WORKER: &str = "w1";
const TASK: &str = "t1";
const JOB: &str = "@global:modifiers:Echo";
const ROOM: &str = "@global";

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

/// A lifecycle notice as the driver logs it, with the runtime's names.
fn notice(t: Instant, n: Notice) {
    let e = match n {
        Notice::Event(e) => e,
        Notice::Registered { jobs } => Event::Registered {
            worker_id: WORKER,
            jobs,
        },
        Notice::TaskFinished { took, .. } => Event::TaskFinished {
            task_id: TASK,
            job: JOB,
            room: ROOM,
            took,
            error: None,
        },
        Notice::OutcomeGivenUp { why, .. } => Event::OutcomeGivenUp {
            task_id: TASK,
            job: JOB,
            room: ROOM,
            failed: false,
            why,
        },
        Notice::Disconnected => Event::Disconnected { worker_id: WORKER },
        Notice::DisconnectFailed(error) => Event::DisconnectFailed {
            worker_id: WORKER,
            error,
        },
        Notice::Adopt => return,
    };
    log(t, &e);
}

fn result(t: Instant, ok: Reply) -> Result<Reply, Failure> {
    if server_up(t) {
        Ok(ok)
    } else {
        Err(Failure::Transport(Transport::ConnectionRefused))
    }
}

fn main() {
    let clock = ManualClock::new(Instant::ZERO);
    let cfg = Config::DEFAULT;
    // One task slot, one job to register, a fixed token (no login).
    let mut lc = Lifecycle::<1>::new(cfg, 1, false, 7, clock.now()).expect("default config is valid");
    println!(
        "Replaying on a manual clock: heartbeat {}s, poll {}s, max unreachable {}s, log interval {}s, equal jitter.",
        cfg.heartbeat_interval.as_secs(),
        cfg.poll_interval.as_secs(),
        cfg.max_unreachable.as_secs(),
        cfg.log_interval.as_secs()
    );
    println!("Server down from 8s to 30s, and from 60s for 150s.\n");

    let mut task_given = false;
    let mut requests = 0u32;
    // The task's handler, while it runs: its lane and when it ends.
    let mut running: Option<(Lane, Instant)> = None;
    // Bounded: a bug cannot spin forever.
    for _ in 0..10_000 {
        let now = clock.now();
        let out = &mut |n| notice(now, n);
        lc.handle_timeout(now, out);
        if let Some((lane, until)) = running
            && (until <= now || lc.cancels(lane))
        {
            running = None;
            let outcome = if until <= now {
                Outcome::Ran(true)
            } else {
                Outcome::Cancelled
            };
            lc.handle(lane, now, outcome, out);
        }
        // Every request is answered at once; the handler runs TASK_RUNS.
        while let Some((lane, op)) = lc.poll_start(now, out) {
            let req = match op {
                Op::Run => {
                    running = Some((lane, now + Duration::from_millis(TASK_RUNS)));
                    continue;
                }
                Op::Send(req) => req,
            };
            requests += 1;
            let answer = match req {
                Request::Claim => {
                    let got = !task_given && now.as_millis() >= TASK_AT;
                    let answer = result(now, Reply::Claimed(got));
                    task_given |= got && answer.is_ok();
                    answer
                }
                Request::GetTask => result(
                    now,
                    Reply::Task(TaskState {
                        status: outage_core::protocol::TaskStatus::Running,
                        ours: true,
                    }),
                ),
                _ => result(now, Reply::Done),
            };
            lc.handle(lane, now, Outcome::Replied(answer), out);
        }
        if lc.is_done() {
            let reason = lc.stop_reason().expect("it stopped");
            println!("\nWorker stopped at {}s: {reason}.", now.as_millis() / 1000);
            println!("{requests} requests sent in all.");
            return;
        }
        let next = [lc.poll_timeout(), running.map(|(_, t)| t)]
            .into_iter()
            .flatten()
            .min();
        clock.set(next.expect("a running worker always has something ahead"));
    }
    unreachable!("the replay ends with a stop");
}
