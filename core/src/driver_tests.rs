//! The whole lifecycle through the one driver, on virtual time: a tiny
//! executor polls [`drive`] and, whenever nothing can progress, moves the
//! manual clock to the earliest sleeper. No real sleeping; every instant in
//! these tests is exact.

extern crate std;

use core::cell::{Cell, RefCell};
use core::future::Future;
use core::pin::pin;
use core::task::{Context, Poll, Waker};
use std::boxed::Box;
#[cfg(feature = "renew-ahead")]
use std::rc::Rc;
use std::string::{String, ToString};
use std::vec::Vec;

use super::*;
use crate::protocol::TaskStatus;
use crate::{
    Config, Duration, Fatal, Jitter, Lifecycle, Local, OnRegistrationLost, Stage, StopReason, TaskState,
    Transport,
};

const REFUSED: Failure = Failure::Transport(Transport::ConnectionRefused);
const CLOSED: Failure = Failure::Transport(Transport::ConnectionClosed);

/// How the scripted server answers one request: after `delay` ms, this.
type Answer = (u64, Result<Reply, Failure>);

struct Sim {
    now: Cell<u64>,
    /// Deadlines of the futures sleeping in this poll round.
    sleepers: RefCell<Vec<u64>>,
    /// (ms, request) of every request sent.
    sent: RefCell<Vec<(u64, Request)>>,
    /// (ms, line) of every event.
    lines: RefCell<Vec<(u64, String)>>,
    server: RefCell<Box<dyn FnMut(u64, Request) -> Answer>>,
    /// How long each task runs and whether it succeeds.
    task: Cell<(u64, bool)>,
    /// (from ms, control).
    controls: RefCell<Vec<(u64, Control)>>,
    adopted: Cell<u32>,
    abandoned: Cell<u32>,
    /// Tasks handed out by claims so far.
    claimed: Cell<u32>,
    /// Claim requests sent so far, and those (1-based) answered with the
    /// last claim answer again, as a proxy that delivers one twice.
    claims: Cell<u32>,
    repeats: RefCell<Vec<u32>>,
    /// (task, status) of every update the server applied.
    applied: RefCell<Vec<(u32, TaskStatus)>>,
    /// Handlers running now, and the most at once.
    running: Cell<u32>,
    most_running: Cell<u32>,
    /// (from ms, push input).
    #[cfg(feature = "push")]
    pushes: RefCell<Vec<(u64, crate::push::PushInput)>>,
    /// (ms, snapshot) of every publish.
    snapshots: RefCell<Vec<(u64, Snapshot)>>,
}

/// A slot's resources in the simulation: the held task and its outcome.
#[derive(Default)]
struct SimSlot {
    task: Option<u32>,
    /// The held task's id (`t1`, `t2`, …: each claim hands out a new one).
    id: String,
    error: Option<&'static str>,
}

impl Sim {
    fn new(server: impl FnMut(u64, Request) -> Answer + 'static) -> Sim {
        Sim {
            now: Cell::new(0),
            sleepers: RefCell::new(Vec::new()),
            sent: RefCell::new(Vec::new()),
            lines: RefCell::new(Vec::new()),
            server: RefCell::new(Box::new(server)),
            task: Cell::new((10, true)),
            controls: RefCell::new(Vec::new()),
            adopted: Cell::new(0),
            abandoned: Cell::new(0),
            claimed: Cell::new(0),
            claims: Cell::new(0),
            repeats: RefCell::new(Vec::new()),
            applied: RefCell::new(Vec::new()),
            running: Cell::new(0),
            most_running: Cell::new(0),
            #[cfg(feature = "push")]
            pushes: RefCell::new(Vec::new()),
            snapshots: RefCell::new(Vec::new()),
        }
    }

    /// The last snapshot published at or before `ms`.
    #[cfg_attr(not(feature = "ops"), allow(dead_code))]
    fn snapshot_at(&self, ms: u64) -> Snapshot {
        let snaps = self.snapshots.borrow();
        snaps
            .iter()
            .rev()
            .find(|(t, _)| *t <= ms)
            .expect("published by then")
            .1
    }

    fn at(&self, ms: u64, control: Control) {
        self.controls.borrow_mut().push((ms, control));
    }

    async fn sleep_ms(&self, until: u64) {
        core::future::poll_fn(|_| {
            if self.now.get() >= until {
                Poll::Ready(())
            } else {
                self.sleepers.borrow_mut().push(until);
                Poll::Pending
            }
        })
        .await
    }

    /// When each `req` was sent (ms).
    #[cfg_attr(not(feature = "renew-ahead"), allow(dead_code))]
    fn sent_at(&self, req: Request) -> Vec<u64> {
        self.sent
            .borrow()
            .iter()
            .filter(|(_, r)| *r == req)
            .map(|(t, _)| *t)
            .collect()
    }

    fn requests(&self) -> Vec<Request> {
        self.sent.borrow().iter().map(|(_, r)| *r).collect()
    }

    fn lines(&self) -> Vec<String> {
        self.lines.borrow().iter().map(|(_, l)| l.clone()).collect()
    }

    fn line_at(&self, prefix: &str) -> Option<u64> {
        self.lines
            .borrow()
            .iter()
            .find(|(_, l)| l.starts_with(prefix))
            .map(|(t, _)| *t)
    }
}

impl Io for Sim {
    type Slot = SimSlot;
    type Beat = ();

    fn now(&self) -> Instant {
        Instant::from_millis(self.now.get())
    }

    fn emit(&self, event: &Event<'_>) {
        self.lines.borrow_mut().push((self.now.get(), event.to_string()));
    }

    fn publish(&self, now: &Snapshot) {
        self.snapshots.borrow_mut().push((self.now.get(), *now));
    }

    async fn sleep_until(&self, t: Instant) {
        self.sleep_ms(t.as_millis()).await
    }

    async fn send(&self, lane: &mut SimSlot, req: Request) -> Result<Reply, Failure> {
        let now = self.now.get();
        self.sent.borrow_mut().push((now, req));
        let (delay, answer) = (self.server.borrow_mut())(now, req);
        // The server acts at once; its answer arrives after `delay`.
        if req == Request::Claim {
            self.claims.set(self.claims.get() + 1);
        }
        match (req, answer) {
            (Request::Claim, Ok(Reply::Claimed(true)))
                if self.repeats.borrow().contains(&self.claims.get()) =>
            {
                // The last answer again: the task handed out last.
                let last = self.claimed.get();
                lane.task = Some(last);
                lane.id = std::format!("t{last}");
                lane.error = None;
            }
            (Request::Claim, Ok(Reply::Claimed(true))) => {
                self.claimed.set(self.claimed.get() + 1);
                lane.task = Some(self.claimed.get());
                lane.id = std::format!("t{}", self.claimed.get());
                lane.error = None;
            }
            (Request::Update(status), Ok(_)) => {
                self.applied.borrow_mut().push((lane.task.unwrap_or(0), status));
            }
            _ => {}
        }
        self.sleep_ms(now + delay).await;
        answer
    }

    async fn beat(&self, _lane: &mut (), req: Request) -> Result<Reply, Failure> {
        self.send(&mut SimSlot::default(), req).await
    }

    async fn run(&self, lane: &mut SimSlot) -> bool {
        let (took, ok) = self.task.get();
        self.running.set(self.running.get() + 1);
        self.most_running
            .set(self.most_running.get().max(self.running.get()));
        struct Done<'a>(&'a Cell<u32>);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                self.0.set(self.0.get() - 1);
            }
        }
        let _done = Done(&self.running);
        self.sleep_ms(self.now.get() + took).await;
        lane.error = if ok { None } else { Some("boom") };
        ok
    }

    fn abandon(&self, lane: &mut SimSlot) {
        self.abandoned.set(self.abandoned.get() + 1);
        lane.error = Some(crate::SHUTDOWN_ERROR);
    }

    fn adopt(&self) {
        self.adopted.set(self.adopted.get() + 1);
    }

    fn with_worker_id(&self, f: &mut dyn FnMut(&str)) {
        f("w")
    }

    fn task<'l>(&self, lane: &'l SimSlot) -> TaskNames<'l> {
        TaskNames {
            id: &lane.id,
            job: "r:modifiers:J",
            room: "r",
            error: lane.error,
        }
    }

    #[cfg(feature = "push")]
    fn push(&self) -> crate::push::PushInput {
        let now = self.now.get();
        self.pushes
            .borrow()
            .iter()
            .rev()
            .find(|(from, _)| *from <= now)
            .map_or_else(Default::default, |(_, p)| *p)
    }

    fn control(&self) -> Control {
        let now = self.now.get();
        self.controls
            .borrow()
            .iter()
            .rev()
            .find(|(from, _)| *from <= now)
            .map_or(Control::Run, |(_, c)| *c)
    }

    async fn control_changed(&self) {
        let now = self.now.get();
        let controls = self.controls.borrow().iter().map(|(t, _)| *t).collect::<Vec<_>>();
        #[cfg(feature = "push")]
        let controls = {
            let mut all = controls;
            all.extend(self.pushes.borrow().iter().map(|(t, _)| *t));
            all
        };
        let next = controls.into_iter().filter(|t| *t > now).min();
        match next {
            Some(t) => self.sleep_ms(t).await,
            None => core::future::pending().await,
        }
    }
}

/// Run the driver to its end on virtual time; at most `limit_ms`.
fn run<const N: usize>(sim: &Sim, lc: &mut Lifecycle<N>, limit_ms: u64) {
    run_slots::<N>(sim, lc, limit_ms)
}

/// [`run`] with `N` task slots.
fn run_slots<const N: usize>(sim: &Sim, lc: &mut Lifecycle<N>, limit_ms: u64) {
    let slots: [SimSlot; N] = core::array::from_fn(|_| SimSlot::default());
    let mut fut = pin!(drive(sim, lc, (), slots));
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        sim.sleepers.borrow_mut().clear();
        if fut.as_mut().poll(&mut cx).is_ready() {
            return;
        }
        let next = sim.sleepers.borrow().iter().copied().min();
        let next = next.unwrap_or_else(|| {
            panic!(
                "the driver waits on nothing at {} ms: {:?}\n{:#?}",
                sim.now.get(),
                sim.sent.borrow(),
                sim.lines()
            )
        });
        assert!(
            next <= limit_ms,
            "still running at {limit_ms} ms: {:#?}",
            sim.lines()
        );
        sim.now.set(next.max(sim.now.get()));
    }
}

fn cfg() -> Config {
    Config {
        jitter: Jitter::Off,
        ..Config::REFERENCE
    }
}

fn lifecycle(cfg: Config) -> Lifecycle<1> {
    Lifecycle::new(cfg, 2, false, 7, Instant::ZERO).unwrap()
}

/// A healthy server with one task waiting: it is claimed once.
fn healthy() -> impl FnMut(u64, Request) -> Answer {
    let mut tasks = 1;
    move |_, req| match req {
        Request::Claim if tasks > 0 => {
            tasks -= 1;
            (5, Ok(Reply::Claimed(true)))
        }
        Request::Claim => (5, Ok(Reply::Claimed(false))),
        _ => (5, Ok(Reply::Done)),
    }
}

#[test]
fn a_whole_life_startup_task_stop_delete() {
    let sim = Sim::new(healthy());
    sim.at(
        10_000,
        Control::Stop {
            grace: Duration::from_secs(5),
        },
    );
    let mut lc = lifecycle(cfg());
    run(&sim, &mut lc, 60_000);
    let reqs = sim.requests();
    assert_eq!(
        reqs[..7],
        [
            Request::CreateWorker,
            Request::RegisterJob(0),
            Request::RegisterJob(1),
            Request::Claim,
            Request::Update(TaskStatus::Running),
            Request::Update(TaskStatus::Completed),
            Request::Claim,
        ]
    );
    assert_eq!(reqs.last(), Some(&Request::Disconnect));
    assert_eq!(sim.adopted.get(), 1);
    let lines = sim.lines();
    assert_eq!(lines[0], "Registered as worker w (2 jobs)");
    assert!(lines.contains(&"Task t1 (r:modifiers:J, room r) completed in 10ms".to_string()));
    assert_eq!(lines.last().unwrap(), "Worker w deleted from the server");
    assert_eq!(lc.stage(), Stage::Done);
    assert_eq!(lc.stop_reason(), Some(StopReason::Requested));
    let stats = lc.stats();
    assert_eq!(stats.tasks_completed, 1);
    assert_eq!(stats.requests, reqs.len() as u64);
    // Nothing after the delete; the stop came at 10 s, the delete at once.
    let (t, r) = *sim.sent.borrow().last().unwrap();
    assert_eq!((t, r), (10_000, Request::Disconnect));
}

#[test]
fn startup_retries_on_its_schedule_then_gives_up_without_a_delete() {
    let sim = Sim::new(|_, _| (0, Err(REFUSED)));
    let mut lc = lifecycle(cfg());
    run(&sim, &mut lc, 600_000);
    let sent = sim.sent.borrow().clone();
    assert!(sent.iter().all(|(_, r)| *r == Request::CreateWorker));
    assert_eq!(sent.len() as u32, cfg().startup_retries + 1);
    let e = lc.startup_error().expect("startup gave up");
    assert_eq!(e.retries, cfg().startup_retries);
    assert_eq!(lc.stop_reason(), None);
    assert!(
        sim.lines()
            .last()
            .unwrap()
            .starts_with("Startup: create worker failed, giving up")
    );
}

#[test]
fn a_login_comes_first_when_asked() {
    let sim = Sim::new(healthy());
    sim.at(1_000, Control::Halt);
    let mut lc = Lifecycle::<1>::new(cfg(), 1, true, 7, Instant::ZERO).unwrap();
    run(&sim, &mut lc, 10_000);
    assert_eq!(
        sim.requests()[..3],
        [Request::Login, Request::CreateWorker, Request::RegisterJob(0)]
    );
}

#[test]
fn an_outage_during_a_long_task_stops_at_the_limit() {
    // The task runs 10 min; the server goes away at 31 s. Only the
    // heartbeat talks (every 30 s); the stop comes at the limit, not at
    // the next heartbeat after it.
    let sim = Sim::new(|now, req| match req {
        _ if now >= 31_000 && req != Request::Disconnect => (0, Err(REFUSED)),
        Request::Disconnect => (0, Err(REFUSED)),
        Request::Claim => (0, Ok(Reply::Claimed(true))),
        _ => (0, Ok(Reply::Done)),
    });
    sim.task.set((600_000, true));
    let mut lc = lifecycle(cfg());
    run(&sim, &mut lc, 700_000);
    let first = sim
        .line_at("Server unreachable — retrying (0s/120s elapsed)")
        .unwrap();
    let stop = sim
        .line_at("Server unreachable for >120s, shutting down")
        .unwrap();
    assert_eq!(first, 60_000, "the first heartbeat after the server went");
    assert_eq!(stop, first + 120_001, "at the limit, to the millisecond");
    // The running task was abandoned at once, not left to run its 10 min.
    assert!(sim.now.get() < stop + 1_000, "finished at {} ms", sim.now.get());
    assert!(matches!(lc.stop_reason(), Some(StopReason::Unreachable { .. })));
    // The running task was abandoned (halt), not reported; the delete was
    // tried once, and failed.
    assert_eq!(sim.requests().last(), Some(&Request::Disconnect));
    assert!(
        sim.lines()
            .last()
            .unwrap()
            .starts_with("Could not delete worker w")
    );
}

#[test]
fn a_stop_gives_the_task_its_grace_then_reports_it_failed() {
    let sim = Sim::new(healthy());
    sim.task.set((60_000, true));
    sim.at(
        1_000,
        Control::Stop {
            grace: Duration::from_secs(3),
        },
    );
    let mut lc = lifecycle(cfg());
    run(&sim, &mut lc, 100_000);
    assert_eq!(sim.abandoned.get(), 1);
    let sent = sim.sent.borrow().clone();
    let delivered = sent
        .iter()
        .find(|(_, r)| *r == Request::Update(TaskStatus::Failed))
        .expect("the abandoned task is reported failed");
    assert_eq!(delivered.0, 4_000, "at the end of the grace");
    assert_eq!(sent.last().unwrap().1, Request::Disconnect);
    assert!(
        sim.lines()
            .iter()
            .any(|l| l.ends_with("failed after 2.99s: worker shutting down")
                || l.contains("worker shutting down")),
        "{:#?}",
        sim.lines()
    );
    assert_eq!(lc.stats().tasks_failed, 1);
}

#[test]
fn a_second_ask_stops_at_once() {
    let sim = Sim::new(healthy());
    sim.task.set((60_000, true));
    sim.at(
        1_000,
        Control::Stop {
            grace: Duration::from_secs(30),
        },
    );
    sim.at(2_000, Control::StopNow);
    let mut lc = lifecycle(cfg());
    run(&sim, &mut lc, 100_000);
    let sent = sim.sent.borrow().clone();
    let failed = sent
        .iter()
        .find(|(_, r)| *r == Request::Update(TaskStatus::Failed))
        .unwrap();
    assert_eq!(failed.0, 2_000);
    assert!(
        sim.lines()
            .iter()
            .any(|l| l.starts_with("Asked again: stopping now"))
    );
}

#[test]
fn a_stop_is_bounded_even_when_a_request_hangs() {
    // Every answer after 1 s takes an hour (the runtime's timeout would
    // end it; here nothing does): the stop's hard limit cancels it.
    let sim = Sim::new(|now, req| match req {
        _ if now >= 1_000 => (3_600_000, Ok(Reply::Done)),
        Request::Claim => (0, Ok(Reply::Claimed(false))),
        _ => (0, Ok(Reply::Done)),
    });
    // At 2.5 s a claim (sent at 2 s) hangs.
    sim.at(
        2_500,
        Control::Stop {
            grace: Duration::from_secs(2),
        },
    );
    let mut lc = lifecycle(Config {
        request_timeout: Duration::from_secs(10),
        ..cfg()
    });
    run(&sim, &mut lc, 3_600_000 * 2);
    // grace 2 s + request timeout 10 s + 1 s after the stop, then the
    // delete (which hangs too; its own timeout is the runtime's).
    let disconnect = sim
        .sent
        .borrow()
        .iter()
        .find(|(_, r)| *r == Request::Disconnect)
        .map(|(t, _)| *t);
    assert_eq!(disconnect, Some(2_500 + 13_000));
}

#[test]
fn a_stale_connection_is_resent_once_only_where_the_core_allows() {
    let mut beats = 0;
    let sim = Sim::new(move |_, req| match req {
        Request::Heartbeat => {
            beats += 1;
            if beats == 1 {
                (0, Err(CLOSED))
            } else {
                (0, Ok(Reply::Done))
            }
        }
        Request::Claim => (0, Err(CLOSED)),
        _ => (0, Ok(Reply::Done)),
    });
    sim.at(61_000, Control::Halt);
    let mut lc = lifecycle(cfg());
    run(&sim, &mut lc, 100_000);
    let sent = sim.sent.borrow().clone();
    let beats: Vec<u64> = sent
        .iter()
        .filter(|(_, r)| *r == Request::Heartbeat)
        .map(|(t, _)| *t)
        .collect();
    assert_eq!(beats, [30_000, 30_000, 60_000], "sent again at once, once");
    // A claim is a POST: never re-sent blindly; the answer is lost and the
    // worker registers afresh instead.
    assert_eq!(sent[3], (0, Request::Claim));
    assert_ne!(sent[4], (0, Request::Claim));
    assert_eq!(lc.stats().stale_connection_retries, 1);
    assert!(sim.lines().iter().any(|l| l.starts_with("Claim answer lost")));
}

#[test]
fn a_request_the_worker_cannot_write_stops_it_clearly() {
    let sim = Sim::new(|_, req| match req {
        Request::Claim => (0, Err(Failure::Local(Local::BodyTooLarge))),
        _ => (0, Ok(Reply::Done)),
    });
    let mut lc = lifecycle(cfg());
    run(&sim, &mut lc, 10_000);
    assert_eq!(
        lc.stop_reason(),
        Some(StopReason::Local {
            what: crate::Endpoint::Claim,
            error: Local::BodyTooLarge
        })
    );
    let lines = sim.lines();
    assert!(lines.contains(
        &"Cannot write the claim request (the request body does not fit the worker's buffer), shutting down: a worker setting is too small for it".to_string()
    ), "{lines:#?}");
    assert!(
        !lines.iter().any(|l| l.contains("unreachable")),
        "no outage: {lines:#?}"
    );
    assert_eq!(sim.requests().last(), Some(&Request::Disconnect));
}

#[test]
fn a_forgotten_worker_stops_without_a_delete_or_registers_again() {
    let sim = Sim::new(|_, req| match req {
        Request::Heartbeat => (0, Err(Failure::status(404))),
        Request::Claim => (0, Ok(Reply::Claimed(false))),
        _ => (0, Ok(Reply::Done)),
    });
    let mut lc = lifecycle(cfg());
    run(&sim, &mut lc, 100_000);
    assert_eq!(
        lc.stop_reason(),
        Some(StopReason::RegistrationLost(Fatal::WorkerUnknown))
    );
    assert!(!sim.requests().contains(&Request::Disconnect));

    let mut lost = true;
    let sim = Sim::new(move |_, req| match req {
        Request::Heartbeat if lost => {
            lost = false;
            (0, Err(Failure::status(404)))
        }
        Request::Claim => (0, Ok(Reply::Claimed(false))),
        _ => (0, Ok(Reply::Done)),
    });
    sim.at(
        70_000,
        Control::Stop {
            grace: Duration::ZERO,
        },
    );
    let mut lc = lifecycle(Config {
        on_registration_lost: OnRegistrationLost::Register,
        ..cfg()
    });
    run(&sim, &mut lc, 100_000);
    let reqs = sim.requests();
    let again = reqs.iter().rposition(|r| *r == Request::CreateWorker).unwrap();
    assert!(again > 0);
    assert_eq!(
        reqs[again + 1..again + 3],
        [Request::RegisterJob(0), Request::RegisterJob(1)]
    );
    assert_eq!(sim.adopted.get(), 2);
    assert!(sim.lines().contains(&"Registered again; serving".to_string()));
    assert_eq!(lc.stats().reregistrations, 1);
}

#[test]
fn a_dropped_worker_halts_without_a_last_request() {
    let sim = Sim::new(healthy());
    sim.task.set((60_000, true));
    sim.at(1_000, Control::Halt);
    let mut lc = lifecycle(cfg());
    run(&sim, &mut lc, 10_000);
    let sent = sim.sent.borrow().clone();
    assert!(sent.iter().all(|(t, _)| *t < 1_000), "{sent:?}");
    assert_eq!(lc.stage(), Stage::Done);
}

#[test]
fn a_verified_conflict_counts_as_applied() {
    let mut updates = 0;
    let sim = Sim::new(move |_, req| match req {
        Request::Claim => (0, Ok(Reply::Claimed(updates == 0))),
        Request::Update(TaskStatus::Running) => {
            updates += 1;
            (0, Err(Failure::status(409)))
        }
        Request::GetTask => (
            0,
            Ok(Reply::Task(TaskState {
                status: TaskStatus::Running,
                ours: true,
            })),
        ),
        _ => (0, Ok(Reply::Done)),
    });
    sim.at(
        5_000,
        Control::Stop {
            grace: Duration::ZERO,
        },
    );
    let mut lc = lifecycle(cfg());
    run(&sim, &mut lc, 100_000);
    let reqs = sim.requests();
    assert_eq!(
        reqs[3..7],
        [
            Request::Claim,
            Request::Update(TaskStatus::Running),
            Request::GetTask,
            Request::Update(TaskStatus::Completed)
        ]
    );
}

/// Random servers (every failure class, random delays, stops at random
/// times): the worker always finishes. (No event can be dropped: the
/// lifecycle hands each to the driver as it is produced, with no queue to
/// overflow.)
#[test]
fn no_event_is_ever_dropped() {
    let failures = [
        REFUSED,
        CLOSED,
        Failure::Transport(Transport::Timeout),
        Failure::status(500),
        Failure::status(503),
        Failure::status(409),
        Failure::status(404),
        Failure::status(401),
        Failure::status(422),
        Failure::MalformedResponse,
    ];
    let (mut served, mut requests) = (0, 0);
    for seed in 0..300u64 {
        let mut rng = crate::SplitMix64::new(seed);
        let script: Vec<u32> = (0..4096).map(|_| rng.next_u32()).collect();
        let mut i = 0usize;
        let sim = Sim::new(move |_, req| {
            i = (i + 1) % script.len();
            let r = script[i];
            let delay = u64::from(r % 3_000);
            let answer = if r.is_multiple_of(6) {
                Err(failures[(r as usize / 6) % failures.len()])
            } else {
                Ok(match req {
                    Request::Claim => Reply::Claimed(r.is_multiple_of(2)),
                    Request::GetTask => Reply::Task(TaskState {
                        status: TaskStatus::Completed,
                        ours: r.is_multiple_of(5),
                    }),
                    _ => Reply::Done,
                })
            };
            (delay, answer)
        });
        sim.task.set(((seed % 7) * 1_000, seed % 2 == 0));
        sim.at(
            200_000 + seed * 1_000,
            Control::Stop {
                grace: Duration::from_secs(seed % 4),
            },
        );
        let mut lc = Lifecycle::<2>::new(
            Config {
                jitter: Jitter::Equal,
                renew_credentials: seed % 3 == 0,
                on_registration_lost: if seed % 2 == 0 {
                    OnRegistrationLost::Register
                } else {
                    OnRegistrationLost::Stop
                },
                ..Config::REFERENCE
            },
            2,
            seed % 3 == 0,
            seed,
            Instant::ZERO,
        )
        .unwrap();
        run(&sim, &mut lc, 10_000_000);
        if lc.startup_error().is_none() {
            served += 1;
            requests += lc.stats().requests;
        }
        if std::env::var("SHOW").is_ok() {
            std::println!(
                "seed {seed}: {:?} {} requests, ended {}",
                lc.stop_reason(),
                lc.stats().requests,
                sim.now.get()
            );
        }
        assert_eq!(lc.stage(), Stage::Done, "seed {seed}");
    }
    // The random servers did exercise the running worker.
    assert!(
        served > 200 && requests > 300 * 30,
        "{served} served, {requests} requests"
    );
}

/// Four task slots through an outage: four tasks run at once under one
/// worker id and one heartbeat; outcomes finished during the outage are
/// held, each in its slot, and every one is delivered exactly once.
#[test]
fn four_slots_ride_out_an_outage_and_deliver_every_outcome_once() {
    let queued = 12;
    let sim = Sim::new(move |now, req| match req {
        // The server is down from 7 s to 40 s.
        _ if (7_000..40_000).contains(&now) => (0, Err(REFUSED)),
        Request::Claim => (5, Ok(Reply::Claimed(true))),
        _ => (5, Ok(Reply::Done)),
    });
    sim.task.set((5_000, true));
    sim.at(
        120_000,
        Control::Stop {
            grace: Duration::from_secs(10),
        },
    );
    let mut lc = Lifecycle::<4>::new(
        Config {
            concurrency: 4,
            ..cfg()
        },
        2,
        false,
        7,
        Instant::ZERO,
    )
    .unwrap();
    // Limit the queue: after `queued` tasks the server has none.
    {
        let server = core::mem::replace(
            &mut *sim.server.borrow_mut(),
            Box::new(|_, _| (0, Ok(Reply::Done))),
        );
        let claimed_so_far = std::rc::Rc::new(Cell::new(0u32));
        let c = claimed_so_far.clone();
        let mut server = server;
        *sim.server.borrow_mut() = Box::new(move |now, req| match server(now, req) {
            (d, Ok(Reply::Claimed(true))) if c.get() < queued => {
                c.set(c.get() + 1);
                (d, Ok(Reply::Claimed(true)))
            }
            (d, Ok(Reply::Claimed(true))) => (d, Ok(Reply::Claimed(false))),
            other => other,
        });
    }
    run_slots::<4>(&sim, &mut lc, 200_000);
    assert_eq!(sim.most_running.get(), 4, "four at once");
    assert_eq!(
        sim.claimed.get(),
        queued,
        "{:?}\n{:#?}",
        sim.sent.borrow(),
        sim.lines()
    );
    let applied = sim.applied.borrow().clone();
    for task in 1..=queued {
        let running = applied
            .iter()
            .filter(|a| **a == (task, TaskStatus::Running))
            .count();
        let completed = applied
            .iter()
            .filter(|a| **a == (task, TaskStatus::Completed))
            .count();
        assert_eq!((running, completed), (1, 1), "task {task}: {applied:?}");
    }
    let lines = sim.lines();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("Server unreachable — retrying"))
    );
    assert!(
        lines.iter().any(|l| l.starts_with("Task outcome held")),
        "{lines:#?}"
    );
    assert!(lines.iter().any(|l| l.starts_with("Server reachable again")));
    assert_eq!(lc.stats().tasks_completed, u64::from(queued));
    assert_eq!(lc.stop_reason(), Some(StopReason::Requested));
    // One worker id all along, one heartbeat lane.
    assert_eq!(sim.adopted.get(), 1);
    let beats: Vec<u64> = sim
        .sent
        .borrow()
        .iter()
        .filter(|(_, r)| *r == Request::Heartbeat)
        .map(|(t, _)| *t)
        .collect();
    assert!(beats.windows(2).all(|w| w[0] < w[1]), "{beats:?}");
}

#[test]
fn sizes_for_the_record() {
    std::println!(
        "Lifecycle<1> {} Lifecycle {} Machine {} Notice {} Event {} LaneStates {}",
        core::mem::size_of::<Lifecycle<1>>(),
        core::mem::size_of::<Lifecycle>(),
        core::mem::size_of::<crate::Machine>(),
        core::mem::size_of::<crate::Notice>(),
        core::mem::size_of::<Event<'static>>(),
        17 * 40
    );
}

#[test]
fn an_outcome_that_cannot_be_written_stops_the_worker() {
    let sim = Sim::new(|_, req| match req {
        Request::Claim => (0, Ok(Reply::Claimed(true))),
        Request::Update(TaskStatus::Failed) => (0, Err(Failure::Local(Local::BodyTooLarge))),
        _ => (0, Ok(Reply::Done)),
    });
    sim.task.set((10, false));
    let mut lc = lifecycle(cfg());
    run(&sim, &mut lc, 100_000);
    assert_eq!(
        lc.stop_reason(),
        Some(StopReason::Local {
            what: crate::Endpoint::TaskStatus,
            error: Local::BodyTooLarge
        }),
        "{:#?}",
        sim.lines()
    );
}

// ------------------------------------------------------------------ push

/// Push as a hint, through the driver: a hint claims at once, the idle poll
/// stretches while push is up, losing it polls again at once; a hint for a
/// task someone else took costs one empty claim.
#[test]
#[cfg(feature = "push")]
fn push_hints_claim_at_once_and_stretch_the_idle_poll() {
    use crate::push::PushInput;
    // One task appears at 40 s (and is claimable); at 45 s a hint comes for
    // a task another worker took.
    let mut taken = false;
    let sim = Sim::new(move |now, req| match req {
        Request::Claim if now >= 40_000 && !taken => {
            taken = true;
            (3, Ok(Reply::Claimed(true)))
        }
        Request::Claim => (3, Ok(Reply::Claimed(false))),
        _ => (3, Ok(Reply::Done)),
    });
    let up = |hints| PushInput {
        connected: true,
        hints,
    };
    sim.pushes.borrow_mut().extend([
        (3_000, up(0)),
        (40_000, up(1)),
        (45_000, up(2)),
        (
            50_000,
            PushInput {
                connected: false,
                hints: 2,
            },
        ),
    ]);
    sim.at(55_000, Control::Halt);
    let mut lc = lifecycle(Config {
        push_poll_interval: Duration::from_secs(30),
        ..cfg()
    });
    run(&sim, &mut lc, 60_000);
    let claims: Vec<u64> = sim
        .sent
        .borrow()
        .iter()
        .filter(|(_, r)| *r == Request::Claim)
        .map(|(t, _)| *t)
        .collect();
    // Registered at 9 ms: polls every 2 s until push is up at 3 s, which
    // claims at once; then 30 s between empty claims (the fallback, set
    // here), a claim at once on each hint (and after the task), and at once
    // again when push is lost, then every 2 s.
    assert_eq!(
        claims,
        [
            9, 2_009, 3_000, 33_000, 40_000, 40_019, 45_000, 50_000, 52_000, 54_000
        ],
        "{:#?}",
        sim.sent.borrow()
    );
    assert_eq!(lc.stats().tasks_completed, 1);
    assert!(sim.lines().iter().all(|l| !l.contains("unreachable")));
}

/// The `events` feature changes what is logged, nothing else: the same
/// requests at the same instants and the same counters with it or without
/// it (CI runs this test both ways; the rest of the suite needs the
/// events to check its log lines).
#[test]
fn the_same_life_with_or_without_events() {
    // Down from 3 s to 40 s, while the one task (5 s from 20 ms) runs
    // into it: its outcome is held, then delivered on recovery.
    let mut tasks = 1;
    let sim = Sim::new(move |now, req| match req {
        _ if (3_000..40_000).contains(&now) => (0, Err(REFUSED)),
        Request::Claim if tasks > 0 => {
            tasks -= 1;
            (5, Ok(Reply::Claimed(true)))
        }
        Request::Claim => (5, Ok(Reply::Claimed(false))),
        _ => (5, Ok(Reply::Done)),
    });
    sim.task.set((5_000, true));
    sim.at(
        60_000,
        Control::Stop {
            grace: Duration::from_secs(5),
        },
    );
    let mut lc = lifecycle(cfg());
    run(&sim, &mut lc, 120_000);
    let trace: Vec<(u64, Request)> = sim.sent.borrow().clone();
    assert_eq!(sim.adopted.get(), 1);
    assert_eq!(lc.stop_reason(), Some(StopReason::Requested));
    let stats = lc.stats();
    // Counted from the machine's steps, not from the log.
    assert_eq!((stats.outcomes_held, stats.recoveries), (1, 1), "{stats:?}");
    assert_eq!(stats.requests, trace.len() as u64);
    let delivered: Vec<(u32, TaskStatus)> = sim.applied.borrow().clone();
    assert_eq!(
        delivered,
        [(1, TaskStatus::Running), (1, TaskStatus::Completed)],
        "{trace:?}"
    );
    // A fingerprint of the whole trace, fixed with the events on: the same
    // without them.
    let fingerprint = trace.iter().fold(0u64, |h, (t, r)| {
        let r = std::format!("{r:?}");
        r.bytes()
            .chain(t.to_le_bytes())
            .fold(h, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
    });
    std::println!(
        "{} requests, fingerprint {fingerprint:#x}, {stats:?}",
        trace.len()
    );
    assert_eq!(
        (trace.len(), fingerprint),
        (20, 0x7ae2_16e0_e450_44b6),
        "{trace:?}"
    );
    assert_eq!(
        sim.lines().is_empty(),
        !cfg!(feature = "events"),
        "{:#?}",
        sim.lines()
    );
}

/// What a host's metrics and probes read, through an outage: readiness, the
/// outage's start, the server's last confirmation, the held outcome, and
/// every request by route and class (feature `ops`).
#[cfg(feature = "ops")]
#[test]
fn snapshots_show_readiness_and_the_outage_and_count_routes() {
    let mut tasks = 1;
    let sim = Sim::new(move |now, req| match req {
        _ if (3_000..40_000).contains(&now) => (0, Err(REFUSED)),
        Request::Claim if tasks > 0 => {
            tasks -= 1;
            (5, Ok(Reply::Claimed(true)))
        }
        Request::Claim => (5, Ok(Reply::Claimed(false))),
        _ => (5, Ok(Reply::Done)),
    });
    sim.task.set((5_000, true));
    sim.at(
        100_000,
        Control::Stop {
            grace: Duration::from_secs(5),
        },
    );
    let mut lc = lifecycle(cfg());
    run(&sim, &mut lc, 160_000);
    let first = sim.snapshot_at(0);
    assert_eq!((first.stage, first.detail.jobs), (Stage::Starting, 2));
    assert!(!first.is_ready());
    let before = sim.snapshot_at(2_900);
    assert!(before.is_ready(), "{before:?}");
    assert_eq!(before.detail.running, 1);
    let during = sim.snapshot_at(20_000);
    assert!(!during.is_ready());
    let since = during.detail.outage_since.expect("in an outage").as_millis();
    // The first request after 3 s is the held outcome's delivery.
    assert!((3_000..6_000).contains(&since), "{during:?}");
    assert!(during.detail.confirmed_at.expect("registered").as_millis() < 3_000);
    assert_eq!(
        (during.detail.running, during.detail.waiting),
        (0, 1),
        "the outcome is held"
    );
    let now = Instant::from_millis(20_000);
    assert_eq!(
        during.status(now).to_string(),
        std::format!(
            "Server unreachable — retrying ({}s/120s elapsed); 1 outcome held",
            (20_000 - since) / 1000
        )
    );
    let after = sim.snapshot_at(50_000);
    assert!(after.is_ready(), "{after:?}");
    assert_eq!((after.detail.outage_since, after.detail.waiting), (None, 0));
    // The next heartbeat (every 30 s) is accepted again.
    let later = sim.snapshot_at(99_000);
    assert!(
        later.detail.confirmed_at.expect("confirmed").as_millis() >= 60_000,
        "{later:?}"
    );
    let end = sim.snapshot_at(160_000);
    assert_eq!(end.stage, Stage::Done);
    assert!(
        end.status(Instant::from_millis(160_000))
            .to_string()
            .starts_with("Stopped: stop requested")
    );
    {
        use crate::{AnswerClass as A, Endpoint as E};
        let stats = lc.stats();
        let r = stats.routes;
        assert_eq!(
            r.total(),
            stats.requests,
            "every request ended, each counted once"
        );
        assert_eq!(r.get(E::CreateWorker, A::Ok), 1);
        assert_eq!(r.get(E::RegisterJob, A::Ok), 2);
        assert_eq!(r.get(E::TaskStatus, A::Ok), 2, "running, then the held outcome");
        assert_eq!(r.get(E::Disconnect, A::Ok), 1);
        let transient: u64 = E::ALL.iter().map(|e| r.get(*e, A::Transient)).sum();
        assert_eq!(transient, stats.failed_requests);
        assert!(r.get(E::Heartbeat, A::Transient) > 0 && r.get(E::TaskStatus, A::Transient) > 0);
    }
}
/// A task claimed just before a stop whose outcome meets the server away
/// (refused, then 503) is tried again on the outage schedule and delivered
/// once the server is back, within the grace; the summary counters say so.
#[test]
fn a_stop_delivers_an_outcome_the_server_was_away_for() {
    // The server is away from 9.7 s to 14 s (restarting with the worker).
    let sim = Sim::new({
        let mut healthy = healthy();
        move |now, req| match now {
            9_700..12_000 => (0, Err(REFUSED)),
            12_000..14_000 => (0, Err(Failure::status(503))),
            _ => healthy(now, req),
        }
    });
    sim.task.set((10_200, true));
    sim.at(
        10_000,
        Control::Stop {
            grace: Duration::from_secs(10),
        },
    );
    let mut lc = lifecycle(cfg());
    run(&sim, &mut lc, 60_000);
    let sent = sim.sent.borrow().clone();
    let tries: Vec<u64> = sent
        .iter()
        .filter(|(_, r)| *r == Request::Update(TaskStatus::Completed))
        .map(|(t, _)| *t)
        .collect();
    // Finished at ~10.2 s, during the stop; tried at once (refused), 2 s
    // later (503), 4 s after that (the reference schedule, no jitter):
    // the third try meets the server back.
    assert_eq!(tries.len(), 3, "{tries:?}");
    assert!(tries[2] >= 14_000 && tries[2] <= 20_000, "{tries:?}");
    assert_eq!(sim.applied.borrow().last(), Some(&(1, TaskStatus::Completed)));
    assert_eq!(sent.last().unwrap().1, Request::Disconnect);
    let stats = lc.stats();
    assert_eq!(
        (
            stats.tasks_completed,
            stats.outcomes_delivered,
            stats.outcomes_given_up
        ),
        (1, 1, 0)
    );
    assert_eq!(lc.stop_reason(), Some(StopReason::Requested));
    let lines = sim.lines();
    assert!(
        lines
            .iter()
            .any(|l| l == "Delivered the task outcome held during the outage"),
        "{lines:#?}"
    );
    assert!(!lines.iter().any(|l| l.starts_with("Gave up")), "{lines:#?}");
}

/// The server stays away past the stop's limit: the outcome is tried
/// until then (the last try ends by the hard limit), given up with one
/// line naming the task, and the delete is still attempted.
#[test]
fn a_stop_gives_an_outcome_up_only_at_its_limit() {
    let sim = Sim::new({
        let mut healthy = healthy();
        move |now, req| {
            if now >= 5_000 {
                (0, Err(REFUSED))
            } else {
                healthy(now, req)
            }
        }
    });
    sim.task.set((6_000, true));
    sim.at(
        5_500,
        Control::Stop {
            grace: Duration::from_secs(10),
        },
    );
    let mut lc = lifecycle(cfg());
    run(&sim, &mut lc, 60_000);
    let sent = sim.sent.borrow().clone();
    let tries: Vec<u64> = sent
        .iter()
        .filter(|(_, r)| *r == Request::Update(TaskStatus::Completed))
        .map(|(t, _)| *t)
        .collect();
    // The stop at 5.5 s: limit 5.5 + 10 + 1 = 16.5 s. Tries from ~6.01 s
    // at 2, 4 s … apart, the last pulled to 16.5 s.
    assert!(tries.len() >= 3, "{tries:?}");
    assert_eq!(*tries.last().unwrap(), 16_500, "{tries:?}");
    let lines = sim.lines();
    let gave_up: Vec<&String> = lines.iter().filter(|l| l.starts_with("Gave up")).collect();
    assert_eq!(
        gave_up,
        [
            "Gave up the outcome of task t1 (r:modifiers:J, room r, completed): the server was still \
          unreachable at the stop's time limit (Connection refused); the server fails the task (\"Worker \
          disconnected\") once it deletes this worker or its heartbeats are stale"
        ],
        "{lines:#?}"
    );
    assert_eq!(sent.last().unwrap().1, Request::Disconnect);
    let stats = lc.stats();
    assert_eq!((stats.outcomes_delivered, stats.outcomes_given_up), (0, 1));
    assert_eq!(lc.stop_reason(), Some(StopReason::Requested));
}

/// A second ask stops at once: each outcome gets one try, no retry.
#[test]
fn stop_now_tries_an_outcome_once() {
    let sim = Sim::new({
        let mut healthy = healthy();
        move |now, req| {
            if now >= 1_000 {
                (0, Err(REFUSED))
            } else {
                healthy(now, req)
            }
        }
    });
    sim.task.set((1_000, true));
    sim.at(
        500,
        Control::Stop {
            grace: Duration::from_secs(30),
        },
    );
    sim.at(1_500, Control::StopNow);
    let mut lc = lifecycle(cfg());
    run(&sim, &mut lc, 60_000);
    let tries = sim
        .requests()
        .iter()
        .filter(|r| **r == Request::Update(TaskStatus::Completed))
        .count();
    assert_eq!(tries, 2, "the try at the finish, one after the second ask");
    assert_eq!(lc.stats().outcomes_given_up, 1);
    assert_eq!(*sim.requests().last().unwrap(), Request::Disconnect);
}

/// Heartbeats go on through a stop's grace while a task finishes (a server
/// that heard nothing for its stale-worker timeout would fail the task),
/// and end with the claim loop.
#[test]
fn a_long_grace_keeps_the_worker_alive_on_the_server() {
    let sim = Sim::new(healthy());
    sim.task.set((100_000, true));
    sim.at(
        1_000,
        Control::Stop {
            grace: Duration::from_secs(200),
        },
    );
    let mut lc = lifecycle(cfg());
    run(&sim, &mut lc, 400_000);
    let sent = sim.sent.borrow().clone();
    let beats: Vec<u64> = sent
        .iter()
        .filter(|(_, r)| *r == Request::Heartbeat)
        .map(|(t, _)| *t)
        .collect();
    // Registered at 15 ms: a beat every 30 s from there.
    assert_eq!(beats, [30_015, 60_015, 90_015], "{sent:?}");
    assert_eq!(sim.applied.borrow().last(), Some(&(1, TaskStatus::Completed)));
    let (t, r) = *sent.last().unwrap();
    assert_eq!(r, Request::Disconnect);
    assert!(t < 100_100, "the delete right after the outcome: {t}");
}

/// A proxy delivers one claim answer twice, with tasks running in other
/// slots: the task is never started again; the claim is ambiguous (its own
/// answer is lost), and the worker registers afresh only once the tasks of
/// its id have finished and been delivered, then retires the old id.
#[test]
fn a_repeated_claim_answer_never_runs_a_task_twice() {
    for slots in [2usize, 4] {
        let sim = Sim::new(|now, req| match req {
            Request::Claim if now < 30_000 => (5, Ok(Reply::Claimed(true))),
            Request::Claim => (5, Ok(Reply::Claimed(false))),
            _ => (5, Ok(Reply::Done)),
        });
        // The second claim gets the first one's answer again.
        sim.repeats.borrow_mut().push(2);
        sim.task.set((3_000, true));
        sim.at(
            60_000,
            Control::Stop {
                grace: Duration::from_secs(10),
            },
        );
        let cfg = Config {
            concurrency: slots as u8,
            ..cfg()
        };
        let applied = if slots == 2 {
            let mut lc = Lifecycle::<2>::new(cfg, 1, false, 7, Instant::ZERO).unwrap();
            run_slots::<2>(&sim, &mut lc, 200_000);
            assert_eq!(lc.stats().outcomes_given_up, 0);
            sim.applied.borrow().clone()
        } else {
            let mut lc = Lifecycle::<4>::new(cfg, 1, false, 7, Instant::ZERO).unwrap();
            run_slots::<4>(&sim, &mut lc, 200_000);
            sim.applied.borrow().clone()
        };
        let reqs = sim.requests();
        for task in 1..=sim.claimed.get() {
            let running = applied
                .iter()
                .filter(|a| **a == (task, TaskStatus::Running))
                .count();
            let completed = applied
                .iter()
                .filter(|a| **a == (task, TaskStatus::Completed))
                .count();
            assert_eq!(
                (running, completed),
                (1, 1),
                "{slots} slots, task {task}: {applied:?}"
            );
        }
        let lines = sim.lines();
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("A claim answered with a task this worker already runs")),
            "{lines:#?}"
        );
        // Registered afresh (one more create), after task 1 was delivered,
        // and the old id retired after that.
        let sent = sim.sent.borrow().clone();
        let creates: Vec<u64> = sent
            .iter()
            .filter(|(_, r)| *r == Request::CreateWorker)
            .map(|(t, _)| *t)
            .collect();
        assert_eq!(creates.len(), 2, "{sent:?}");
        let delivered_1 = sent
            .iter()
            .position(|(_, r)| *r == Request::Update(TaskStatus::Completed))
            .unwrap();
        let afresh = sent
            .iter()
            .rposition(|(_, r)| *r == Request::CreateWorker)
            .unwrap();
        assert!(afresh > delivered_1, "{sent:?}");
        let retire = sent
            .iter()
            .position(|(_, r)| *r == Request::Retire)
            .expect("the old id retired");
        assert!(retire > afresh);
        assert!(reqs.contains(&Request::Disconnect));
        assert_eq!(sim.adopted.get(), 2);
    }
}

/// A halt (here: the server forgot the worker) gives up an outcome that
/// was waiting for its turn, with one line.
#[test]
fn a_halt_names_the_outcomes_it_gives_up() {
    let sim = Sim::new(|now, req| match req {
        Request::Claim if now < 100 => (5, Ok(Reply::Claimed(true))),
        Request::Claim => (5, Ok(Reply::Claimed(false))),
        // The server forgets the worker once the task has finished; the
        // outcome's delivery hangs meanwhile.
        Request::Update(TaskStatus::Completed) => (100_000, Ok(Reply::Done)),
        Request::Heartbeat => (5, Err(Failure::status(404))),
        _ => (5, Ok(Reply::Done)),
    });
    sim.task.set((1_000, true));
    let mut lc = lifecycle(cfg());
    run(&sim, &mut lc, 300_000);
    let lines = sim.lines();
    assert!(
        lines.iter().any(
            |l| l.starts_with("Gave up the outcome of task t1") && l.contains("the worker stopped first")
        ),
        "{lines:#?}"
    );
    assert_eq!(lc.stats().outcomes_given_up, 1);
}

#[cfg(feature = "renew-ahead")]
#[test]
fn a_jwt_is_renewed_ahead_of_its_expiry_and_the_server_never_answers_401() {
    // Tokens live 10 s; a request sent with an expired one is a 401.
    let expires = Rc::new(Cell::new(0u64));
    let refused = Rc::new(Cell::new(0u32));
    let (e, r) = (expires.clone(), refused.clone());
    let sim = Sim::new(move |now, req| match req {
        Request::Login => {
            e.set(now + 10_000);
            (
                5,
                Ok(Reply::Renewed {
                    valid_for: Duration::from_secs(10),
                }),
            )
        }
        _ if now >= e.get() => {
            r.set(r.get() + 1);
            (5, Err(Failure::status(401)))
        }
        Request::Claim => (5, Ok(Reply::Claimed(false))),
        _ => (5, Ok(Reply::Done)),
    });
    sim.at(65_000, Control::Halt);
    let cfg = Config {
        renew_credentials: true,
        heartbeat_interval: Duration::from_secs(3),
        ..cfg()
    };
    let mut lc = Lifecycle::<1>::new(cfg, 1, true, 7, Instant::ZERO).unwrap();
    run(&sim, &mut lc, 70_000);
    let logins = sim.sent_at(Request::Login);
    // At startup, then at 80 % of each token's life (8 s after the login
    // was sent), for six and more lifetimes.
    assert_eq!(logins[..4], [0, 8_000, 16_000, 24_000], "{logins:?}");
    assert!(logins.len() >= 8, "{logins:?}");
    assert_eq!(refused.get(), 0, "{:#?}", sim.lines());
    assert!(
        !sim.lines().iter().any(|l| l.contains("401")),
        "{:#?}",
        sim.lines()
    );
    assert_eq!(lc.stats().renewals, logins.len() as u64 - 1);
}

#[cfg(feature = "renew-ahead")]
#[test]
fn a_token_nobody_renews_is_read_a_few_times_then_left_to_its_401() {
    // A token file nobody renews: the same expiry (20 s) whenever it is read.
    let sim = Sim::new(move |now, req| match req {
        Request::Login => (
            5,
            Ok(Reply::Renewed {
                valid_for: Duration::from_millis(20_000u64.saturating_sub(now)),
            }),
        ),
        Request::Claim => (5, Ok(Reply::Claimed(false))),
        _ => (5, Ok(Reply::Done)),
    });
    sim.at(19_500, Control::Halt);
    let cfg = Config {
        renew_credentials: true,
        ..cfg()
    };
    let mut lc = Lifecycle::<1>::new(cfg, 1, true, 7, Instant::ZERO).unwrap();
    run(&sim, &mut lc, 40_000);
    let logins = sim.sent_at(Request::Login);
    // Read ahead as its end nears (80 %, then the rule's 2 s before the
    // end and half of what is left, at least 1 s apart), then not at all
    // once less than 1 s is left.
    assert_eq!(logins, [0, 16_000, 18_000, 19_000]);

    // A static token (no expiry known): no renewal without a 401.
    let sim = Sim::new(healthy());
    sim.at(30_000, Control::Halt);
    let mut lc = Lifecycle::<1>::new(cfg, 1, true, 7, Instant::ZERO).unwrap();
    run(&sim, &mut lc, 40_000);
    assert_eq!(sim.requests().iter().filter(|r| **r == Request::Login).count(), 1);
}
