//! The one driver of a worker, for every runtime: a loop over a
//! [`Lifecycle`] that performs what it asks through a small I/O trait.
//!
//! [`drive`] is `no_std`, allocation-free and executor-independent: it
//! keeps at most one future per lane (a request or the task) and polls them
//! together with a timer and the application's control signal, so one
//! future runs the whole worker. A runtime implements [`Io`] — the clock,
//! sleeping, one HTTP exchange, running a handler, where its strings live —
//! and nothing else: every decision (what to send when, what an answer
//! means, when to give up, what to log) is the [`Lifecycle`]'s.
//!
//! Cancellation is cooperative: a lane's future is asked to stop through a
//! flag the driver sets and then polls at once; the future drops the
//! request or handler it was running and hands its resources (buffers, the
//! held task) back, so a cancelled lane can still send the final delete.

use core::future::{Future, poll_fn};
use core::pin::{Pin, pin};
use core::sync::atomic::{AtomicBool, Ordering};
use core::task::Poll;

use crate::lifecycle::{Control, Lane, Lifecycle, Notice, Op, Outcome, Reply, Request, Snapshot, TaskKey};
#[cfg(feature = "push")]
use crate::push::PushInput;
use crate::{Event, Failure, Instant};

/// A held task's strings, as the runtime keeps them in its slot's lane.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskNames<'a> {
    /// The task's id.
    pub id: &'a str,
    /// Its full job name.
    pub job: &'a str,
    /// Its room.
    pub room: &'a str,
    /// Its outcome's error text, if it failed.
    pub error: Option<&'a str>,
}

impl<'a> TaskNames<'a> {
    /// The names of a held task — `(id, job, room)`, or `None` without one —
    /// and its outcome's error text.
    pub fn of(task: Option<(&'a str, &'a str, &'a str)>, error: Option<&'a str>) -> Self {
        let (id, job, room) = task.unwrap_or_default();
        TaskNames { id, job, room, error }
    }
}

/// What a runtime provides to [`drive`]: I/O, time and its own storage.
/// No policy: which request, when, and what its answer means are the
/// core's.
///
/// The futures are polled by one task; they need not be `Send` unless the
/// runtime spawns the driver on a multi-threaded executor.
#[allow(async_fn_in_trait)]
pub trait Io {
    /// A task slot's resources (receive and body buffers, the held task,
    /// its outcome, its handler), moved into each operation and handed back
    /// by it. A reference to storage the runtime keeps is cheapest.
    type Slot;

    /// The heartbeat lane's resources (a receive buffer).
    type Beat;

    /// The current time on the runtime's [`crate::Clock`].
    fn now(&self) -> Instant;

    /// Log (and publish) an event.
    fn emit(&self, event: &Event<'_>);

    /// Sleep until `t`. Dropped when anything else happens first.
    async fn sleep_until(&self, t: Instant);

    /// Send `req` and read its answer, within
    /// [`Request::timeout`](crate::Request::timeout). An answer whose status
    /// [`Request::accepts`](crate::Request::accepts) refuses is a
    /// [`Failure::Status`]; a request the runtime cannot write is a
    /// [`Failure::Local`]; [`Request::Claim`] keeps a claimed task in
    /// `lane` (a task slot); the task requests use the task held there. May
    /// be dropped at any await (a stop).
    async fn send(&self, lane: &mut Self::Slot, req: Request) -> Result<Reply, Failure>;

    /// [`Io::send`] on the heartbeat lane: [`Request::Heartbeat`] and
    /// [`Request::Login`] only.
    async fn beat(&self, lane: &mut Self::Beat, req: Request) -> Result<Reply, Failure>;

    /// Run the task held in `lane` with its job's handler and keep its
    /// outcome there (a panic, or no handler for the job, is a failure with
    /// a text); `true` if it succeeded. May be dropped (a stop's grace ran
    /// out): then [`Io::abandon`] follows.
    async fn run(&self, lane: &mut Self::Slot) -> bool;

    /// The task in `lane` was abandoned: keep
    /// [`crate::SHUTDOWN_ERROR`] as its outcome.
    fn abandon(&self, lane: &mut Self::Slot);

    /// The pending worker id (from [`Request::CreateWorker`]) is registered:
    /// make it the current one, and keep the previous one as the old one
    /// ([`Request::Retire`]).
    fn adopt(&self);

    /// `f` of the current worker id (for the log).
    fn with_worker_id(&self, f: &mut dyn FnMut(&str));

    /// The strings of the task held in `lane` (for the log).
    fn task<'l>(&self, lane: &'l Self::Slot) -> TaskNames<'l>;

    /// What the application asks now.
    fn control(&self) -> Control;

    /// Resolves when [`Io::control`] may have changed (spurious wake-ups
    /// are harmless). Dropped when anything else happens first.
    async fn control_changed(&self);

    /// Task-available push ([`crate::push`]), for a runtime that has it:
    /// whether its connection is up, and a counter of hints. Read whenever
    /// the driver wakes; a runtime wakes it through [`Io::control_changed`]
    /// when either changes. Default: no push (the claim loop polls).
    /// (Feature `push`.)
    #[cfg(feature = "push")]
    fn push(&self) -> PushInput {
        PushInput::default()
    }

    /// The lifecycle after each step, for the runtime's own view (stop
    /// reason, counters, stage). Default: nothing.
    fn publish(&self, _now: &Snapshot) {}
}

/// Element `i` of a pinned array.
#[allow(unsafe_code)]
fn element<F, const N: usize>(array: Pin<&mut [Option<F>; N]>, i: usize) -> Pin<&mut Option<F>> {
    // SAFETY: structural pinning of an array's elements. The array is
    // pinned and never moved; an element is only replaced through
    // `Pin::set`, which drops the old value in place; nothing moves one
    // out. (An index out of bounds panics before anything is projected.)
    unsafe { array.map_unchecked_mut(|a| &mut a[i]) }
}

/// Run a worker's whole life — startup, the heartbeat lane, `SLOTS` task
/// slots (at most [`crate::Config::concurrency`] used), the stop, the final
/// delete — until the [`Lifecycle`] is done. Returns the lanes' resources.
pub async fn drive<I: Io, const SLOTS: usize>(
    io: &I,
    lc: &mut Lifecycle<SLOTS>,
    heartbeat: I::Beat,
    slots: [I::Slot; SLOTS],
) -> (I::Beat, [I::Slot; SLOTS]) {
    lc.limit_slots(SLOTS);
    let hb_cancel = AtomicBool::new(false);
    let cancels: [AtomicBool; SLOTS] = core::array::from_fn(|_| AtomicBool::new(false));
    let mut hb_res = Some(heartbeat);
    let mut res: [Option<I::Slot>; SLOTS] = slots.map(Some);
    let mut ops: [Option<Op>; SLOTS] = [None; SLOTS];
    let mut hb = pin!(None);
    let mut futs = pin!(core::array::from_fn::<_, SLOTS, _>(|_| None));
    let mut seen = Control::Run;
    #[cfg(feature = "push")]
    let mut seen_push = PushInput::default();
    loop {
        let now = io.now();
        let control = io.control();
        if control != seen {
            seen = control;
            lc.control(now, control, &mut |n| notify(io, &res, n));
        }
        #[cfg(feature = "push")]
        let push = io.push();
        #[cfg(feature = "push")]
        if push != seen_push {
            if push.connected != seen_push.connected {
                lc.push_connected(now, push.connected);
            }
            if push.hints != seen_push.hints {
                lc.push_hint(now);
            }
            seen_push = push;
        }
        lc.handle_timeout(now, &mut |n| notify(io, &res, n));
        while let Some((lane, op)) = lc.poll_start(now, &mut |n| notify(io, &res, n)) {
            match lane.slot_index() {
                None => {
                    if let Some(r) = hb_res.take() {
                        hb_cancel.store(false, Ordering::Relaxed);
                        hb.set(Some(beat(io, r, op, &hb_cancel)));
                    }
                }
                Some(i) if i < SLOTS => {
                    if let Some(r) = res[i].take() {
                        cancels[i].store(false, Ordering::Relaxed);
                        ops[i] = Some(op);
                        element(futs.as_mut(), i).set(Some(operate(io, r, op, &cancels[i])));
                    }
                }
                Some(_) => {}
            }
        }
        // Cancel what the lifecycle gave up (a halt, a stop's grace over);
        // the lanes' futures see their flags when polled below.
        if hb.is_some() && lc.cancels(Lane::HEARTBEAT) {
            hb_cancel.store(true, Ordering::Relaxed);
        }
        for (i, cancel) in cancels.iter().enumerate() {
            if element(futs.as_mut(), i).is_some() && lc.cancels(Lane::slot(i)) {
                cancel.store(true, Ordering::Relaxed);
            }
        }
        io.publish(&lc.snapshot());
        let idle = hb.is_none() && (0..SLOTS).all(|i| element(futs.as_mut(), i).is_none());
        if lc.is_done() && idle {
            break;
        }
        let wake_at = lc.poll_timeout();
        let woke = {
            let lanes = poll_fn(|cx| {
                if let Some(fut) = hb.as_mut().as_pin_mut()
                    && let Poll::Ready((r, done)) = fut.poll(cx)
                {
                    return Poll::Ready(Done::Beat(r, done));
                }
                for i in 0..SLOTS {
                    if let Some(fut) = element(futs.as_mut(), i).as_pin_mut()
                        && let Poll::Ready((r, done)) = fut.poll(cx)
                    {
                        return Poll::Ready(Done::Slot(i, r, done));
                    }
                }
                Poll::Pending
            });
            let timer = async {
                match wake_at {
                    Some(t) => io.sleep_until(t).await,
                    None => core::future::pending().await,
                }
            };
            first_of(lanes, timer, io.control_changed()).await
        };
        let (lane, outcome) = match woke {
            None => continue,
            Some(Done::Beat(r, outcome)) => {
                hb.set(None);
                hb_res = Some(r);
                (Lane::HEARTBEAT, outcome)
            }
            Some(Done::Slot(i, mut r, outcome)) => {
                element(futs.as_mut(), i).set(None);
                if ops[i].take() == Some(Op::Run) && outcome.is_none() {
                    io.abandon(&mut r);
                }
                res[i] = Some(r);
                (Lane::slot(i), outcome)
            }
        };
        let outcome = outcome.unwrap_or(Outcome::Cancelled);
        if let (Outcome::Replied(Ok(Reply::Claimed(true))), Some(r)) =
            (outcome, lane.slot_index().and_then(|i| res.get(i)?.as_ref()))
        {
            // Which task the claim returned, so that one the worker already
            // holds is not started twice.
            lc.claimed(lane, TaskKey::of(io.task(r).id));
        }
        lc.handle(lane, io.now(), outcome, &mut |n| notify(io, &res, n));
    }
    io.publish(&lc.snapshot());
    let (Some(heartbeat), true) = (hb_res, res.iter().all(Option::is_some)) else {
        unreachable!("a lane's resources are back whenever it is idle")
    };
    (heartbeat, res.map(|r| r.expect("checked above")))
}

/// What finished: the heartbeat lane's operation, or slot `i`'s, with the
/// lane's resources and how it ended (`None`: cancelled).
enum Done<B, L> {
    Beat(B, Option<Outcome>),
    Slot(usize, L, Option<Outcome>),
}

/// One request on the heartbeat lane, until it ends or its cancel flag is
/// set (`None`); the lane's resources come back either way.
async fn beat<I: Io>(io: &I, mut res: I::Beat, op: Op, cancel: &AtomicBool) -> (I::Beat, Option<Outcome>) {
    let outcome = {
        let work = async {
            match op {
                Op::Send(req) => Some(Outcome::Replied(io.beat(&mut res, req).await)),
                Op::Run => None,
            }
        };
        let mut work = pin!(work);
        poll_fn(|cx| {
            if cancel.load(Ordering::Relaxed) {
                return Poll::Ready(None);
            }
            work.as_mut().poll(cx)
        })
        .await
    };
    (res, outcome)
}

/// One operation on a lane, until it ends or its cancel flag is set
/// (`None`); the lane's resources come back either way.
async fn operate<I: Io>(io: &I, mut res: I::Slot, op: Op, cancel: &AtomicBool) -> (I::Slot, Option<Outcome>) {
    let outcome = {
        let work = async {
            match op {
                Op::Send(req) => Outcome::Replied(io.send(&mut res, req).await),
                Op::Run => Outcome::Ran(io.run(&mut res).await),
            }
        };
        let mut work = pin!(work);
        // The driver polls this future right after setting the flag, so no
        // waker is needed for it.
        poll_fn(|cx| {
            if cancel.load(Ordering::Relaxed) {
                return Poll::Ready(None);
            }
            work.as_mut().poll(cx).map(Some)
        })
        .await
    };
    (res, outcome)
}

/// Log one of the lifecycle's notices as it is produced, with the
/// runtime's names. (Without the `events` feature the lifecycle hands out
/// only [`Notice::Adopt`].)
fn notify<I: Io, const SLOTS: usize>(io: &I, res: &[Option<I::Slot>; SLOTS], n: Notice) {
    #[cfg(not(feature = "events"))]
    let _ = res;
    match n {
        #[cfg(feature = "events")]
        Notice::Event(e) => io.emit(&e),
        Notice::Adopt => io.adopt(),
        #[cfg(feature = "events")]
        Notice::TaskFinished { lane, took } => {
            let names = names(io, res, lane);
            io.emit(&Event::TaskFinished {
                task_id: names.id,
                job: names.job,
                room: names.room,
                took,
                error: names.error,
            });
        }
        #[cfg(feature = "events")]
        Notice::OutcomeGivenUp { lane, why } => {
            let names = names(io, res, lane);
            io.emit(&Event::OutcomeGivenUp {
                task_id: names.id,
                job: names.job,
                room: names.room,
                failed: names.error.is_some(),
                why,
            });
        }
        #[cfg(feature = "events")]
        Notice::Registered { jobs } => io.with_worker_id(&mut |worker_id| {
            io.emit(&Event::Registered { worker_id, jobs });
        }),
        #[cfg(feature = "events")]
        Notice::Disconnected => io.with_worker_id(&mut |worker_id| {
            io.emit(&Event::Disconnected { worker_id });
        }),
        #[cfg(feature = "events")]
        Notice::DisconnectFailed(error) => io.with_worker_id(&mut |worker_id| {
            io.emit(&Event::DisconnectFailed { worker_id, error });
        }),
        #[cfg(not(feature = "events"))]
        _ => {}
    }
}

/// The names of the task held in `lane` (none if it holds none).
#[cfg(feature = "events")]
fn names<'r, I: Io, const SLOTS: usize>(
    io: &I,
    res: &'r [Option<I::Slot>; SLOTS],
    lane: Lane,
) -> TaskNames<'r> {
    let held = lane.slot_index().and_then(|i| res.get(i)?.as_ref());
    held.map(|r| io.task(r)).unwrap_or_default()
}

/// The first of three futures to finish: a lane's, or `None` for the
/// timer or the control signal.
async fn first_of<T>(
    lanes: impl Future<Output = T>,
    timer: impl Future<Output = ()>,
    control: impl Future<Output = ()>,
) -> Option<T> {
    let mut lanes = pin!(lanes);
    let mut timer = pin!(timer);
    let mut control = pin!(control);
    poll_fn(|cx| {
        if let Poll::Ready(v) = lanes.as_mut().poll(cx) {
            return Poll::Ready(Some(v));
        }
        if timer.as_mut().poll(cx).is_ready() || control.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        Poll::Pending
    })
    .await
}

#[cfg(test)]
#[path = "driver_tests.rs"]
mod tests;
