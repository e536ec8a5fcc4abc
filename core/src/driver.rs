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
use core::pin::pin;
use core::sync::atomic::{AtomicBool, Ordering};
use core::task::Poll;

use crate::lifecycle::{Control, Lane, LanePoll, Lifecycle, Notice, Op, Outcome, Reply, Request};
use crate::{Event, Failure, Instant};

/// The strings an event names, as the runtime holds them in the claim
/// lane's resources.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Names<'a> {
    /// The current worker id.
    pub worker_id: &'a str,
    /// The held task's id (empty without one).
    pub task_id: &'a str,
    /// The held task's full job name.
    pub job: &'a str,
    /// The held task's room.
    pub room: &'a str,
    /// The held task's outcome error text, if it failed.
    pub error: Option<&'a str>,
}

/// What a runtime provides to [`drive`]: I/O, time and its own storage.
/// No policy: which request, when, and what its answer means are the
/// core's.
///
/// The futures are polled by one task; they need not be `Send` unless the
/// runtime spawns the driver on a multi-threaded executor.
#[allow(async_fn_in_trait)]
pub trait Io {
    /// A lane's own resources (receive and body buffers, a connection, the
    /// held task and its outcome on the claim lane), moved into each
    /// operation and handed back by it.
    type Lane;

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
    /// `lane`. May be dropped at any await (a stop).
    async fn send(&self, lane: &mut Self::Lane, req: Request) -> Result<Reply, Failure>;

    /// Run the task held in `lane` with its job's handler and keep its
    /// outcome there (a panic, or no handler for the job, is a failure with
    /// a text); `true` if it succeeded. May be dropped (a stop's grace ran
    /// out): then [`Io::abandon`] follows.
    async fn run(&self, lane: &mut Self::Lane) -> bool;

    /// The task in `lane` was abandoned: keep
    /// [`crate::SHUTDOWN_ERROR`] as its outcome.
    fn abandon(&self, lane: &mut Self::Lane);

    /// The pending worker id (from [`Request::CreateWorker`]) is registered:
    /// make it the current one, and keep the previous one as the old one
    /// ([`Request::Retire`]).
    fn adopt(&self, lane: &mut Self::Lane);

    /// The strings events name, from the claim lane's resources.
    fn names<'l>(&self, lane: &'l Self::Lane) -> Names<'l>;

    /// What the application asks now.
    fn control(&self) -> Control;

    /// Resolves when [`Io::control`] may have changed (spurious wake-ups
    /// are harmless). Dropped when anything else happens first.
    async fn control_changed(&self);

    /// The lifecycle after each step, for the runtime's own view (stop
    /// reason, counters, stage). Default: nothing.
    fn publish(&self, _lifecycle: &Lifecycle) {}
}

/// Run a worker's whole life — startup, both lanes, the stop, the final
/// delete — until the [`Lifecycle`] is done. Returns the lanes' resources.
pub async fn drive<I: Io>(
    io: &I,
    lc: &mut Lifecycle,
    heartbeat: I::Lane,
    claim: I::Lane,
) -> (I::Lane, I::Lane) {
    let cancel = [AtomicBool::new(false), AtomicBool::new(false)];
    let mut res = [Some(heartbeat), Some(claim)];
    let mut ops: [Option<Op>; 2] = [None, None];
    let mut hb = pin!(None);
    let mut cl = pin!(None);
    let mut seen = Control::Run;
    loop {
        let now = io.now();
        let control = io.control();
        if control != seen {
            seen = control;
            lc.control(now, control);
        }
        lc.handle_timeout(now);
        let mut wake_at = lc.poll_timeout();
        for lane in Lane::ALL {
            let i = lane as usize;
            let mut slot = if i == 0 { hb.as_mut() } else { cl.as_mut() };
            if slot.is_some() {
                if lc.cancels(lane) {
                    cancel[i].store(true, Ordering::Relaxed);
                }
                continue;
            }
            match lc.poll_lane(lane, now) {
                LanePoll::Start(op) => {
                    flush(io, lc, res[1].as_mut());
                    if let Some(r) = res[i].take() {
                        cancel[i].store(false, Ordering::Relaxed);
                        ops[i] = Some(op);
                        slot.set(Some(operate(io, r, op, &cancel[i])));
                    }
                }
                LanePoll::Wait(t) => wake_at = Some(wake_at.map_or(t, |w| w.min(t))),
                LanePoll::Idle | LanePoll::Done => {}
            }
        }
        flush(io, lc, res[1].as_mut());
        io.publish(lc);
        if lc.is_done() && hb.is_none() && cl.is_none() {
            break;
        }
        let woke = {
            let lanes = poll_fn(|cx| {
                for i in 0..2 {
                    let slot = if i == 0 { hb.as_mut() } else { cl.as_mut() };
                    if let Some(fut) = slot.as_pin_mut()
                        && let Poll::Ready(done) = fut.poll(cx)
                    {
                        return Poll::Ready((i, done));
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
        if let Some((i, (r, outcome))) = woke {
            if i == 0 {
                hb.set(None);
            } else {
                cl.set(None);
            }
            let mut r = r;
            let outcome = outcome.unwrap_or(Outcome::Cancelled);
            if ops[i].take() == Some(Op::Run) && outcome == Outcome::Cancelled {
                io.abandon(&mut r);
            }
            res[i] = Some(r);
            lc.handle(Lane::ALL[i], io.now(), outcome);
            flush(io, lc, res[1].as_mut());
        }
    }
    io.publish(lc);
    let [Some(heartbeat), Some(claim)] = res else {
        unreachable!("a lane's resources are back whenever it is idle")
    };
    (heartbeat, claim)
}

/// One operation on a lane, until it ends or its cancel flag is set
/// (`None`); the lane's resources come back either way.
async fn operate<I: Io>(io: &I, mut res: I::Lane, op: Op, cancel: &AtomicBool) -> (I::Lane, Option<Outcome>) {
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

/// Log the lifecycle's notices, in order, with the runtime's names.
fn flush<I: Io>(io: &I, lc: &mut Lifecycle, mut claim: Option<&mut I::Lane>) {
    while let Some(n) = lc.poll_event() {
        let names = match (&n, claim.as_deref_mut()) {
            (Notice::Event(e), _) => {
                io.emit(e);
                continue;
            }
            (Notice::Adopt, Some(c)) => {
                io.adopt(c);
                continue;
            }
            (_, Some(c)) => io.names(c),
            (_, None) => Names::default(),
        };
        let event = match n {
            Notice::Registered { jobs } => Event::Registered {
                worker_id: names.worker_id,
                jobs,
            },
            Notice::TaskFinished { took } => Event::TaskFinished {
                task_id: names.task_id,
                job: names.job,
                room: names.room,
                took,
                error: names.error,
            },
            Notice::Disconnected => Event::Disconnected {
                worker_id: names.worker_id,
            },
            Notice::DisconnectFailed(error) => Event::DisconnectFailed {
                worker_id: names.worker_id,
                error,
            },
            Notice::Event(_) | Notice::Adopt => continue,
        };
        io.emit(&event);
    }
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
