//! The embassy worker's I/O for the core's driver: one HTTP/1.1 exchange
//! per request over embedded-nal-async (its route, body and answer the
//! core's [`outage_core::call`], in the lane's buffers), embassy-time for
//! sleeping, and the caller's handler. No decision is made here: which request, when, which statuses
//! are a success and what to do next are the core's
//! ([`outage_core::Lifecycle`]).

use core::marker::PhantomData;

use embedded_nal_async::{Dns, TcpConnect};
use outage_core::call::{Answer, Subject, WhichId};
use outage_core::driver::{Io, TaskNames};
use outage_core::protocol::Route;
use outage_core::{
    Clock, Control, Event, Failure, Instant, Local, NO_HANDLER_ERROR, Reply, Request, SHUTDOWN_ERROR,
    Snapshot, Stage,
};

use crate::net::{Outgoing, exchange, resolve};
use crate::state::Worker;
use crate::types::{EmbassyClock, Handler, Task, to_embassy};
use crate::wire::{self, Held, error_text};

/// A lane's storage: its buffers, and on the task slot the handler and the
/// held task.
pub(crate) struct Slot<'b, H> {
    rx: &'b mut [u8],
    tx: &'b mut [u8],
    payload: &'b mut [u8],
    handler: Option<&'b mut H>,
    held: Option<Held>,
}

impl<'b, H> Slot<'b, H> {
    pub(crate) fn new(
        rx: &'b mut [u8],
        tx: &'b mut [u8],
        payload: &'b mut [u8],
        handler: Option<&'b mut H>,
    ) -> Self {
        Slot {
            rx,
            tx,
            payload,
            handler,
            held: None,
        }
    }
}

/// The lifetimes of a driver's lanes: borrowed for `'l`, buffers for `'b`.
type Lanes<'l, 'b, H> = (&'l mut (), fn(&'b mut H));

/// One run of a [`Worker`] with handler type `H`. Its lanes are references
/// (`'l`) to storage in [`Worker::run`]'s frame, so that moving a lane into
/// an operation and back moves a pointer, not the buffers and the held task.
pub(crate) struct Driver<'w, 'a, 'l, 'b, T: TcpConnect, D: Dns, H> {
    w: &'w Worker<'a, T, D>,
    _lanes: PhantomData<Lanes<'l, 'b, H>>,
}

impl<'w, 'a, T: TcpConnect, D: Dns, H> Driver<'w, 'a, '_, '_, T, D, H> {
    pub(crate) fn new(w: &'w Worker<'a, T, D>) -> Self {
        Driver {
            w,
            _lanes: PhantomData,
        }
    }

    /// One exchange of `route` (with `body` from the lane's `tx`), its
    /// answer in `rx`, within `req`'s timeout; an answer `req` does not
    /// accept is a [`Failure::Status`]. Returns the answer's body range.
    ///
    /// Not an `async fn`: that would keep each argument twice in the
    /// future (moved into its locals, its first copy kept too), on both
    /// lanes; an `async move` block uses them where they are.
    #[allow(clippy::manual_async_fn)]
    fn call<'c>(
        &'c self,
        route: Route<'c>,
        req: Request,
        body: Option<&'c [u8]>,
        rx: &'c mut [u8],
    ) -> impl Future<Output = Result<core::ops::Range<usize>, Failure>> + 'c {
        let w = self.w;
        let http = Outgoing {
            server: &w.server,
            route,
            token: w.bearer(),
            body,
        };
        async move {
            let limit = embassy_time::Duration::from_millis(req.timeout(&w.config).as_millis());
            let connected = core::cell::Cell::new(false);
            let work = async {
                let ip = match w.address.lock(core::cell::Cell::get) {
                    Some(ip) => ip,
                    None => {
                        let ip = resolve(w.dns, &w.server).await?;
                        w.address.lock(|a| a.set(Some(ip)));
                        ip
                    }
                };
                exchange(w.tcp, ip, &http, rx, &connected).await
            };
            let result = embassy_time::with_timeout(limit, work)
                .await
                .unwrap_or_else(|_| Err(Failure::timed_out(connected.get())));
            if matches!(result, Err(Failure::Transport(_))) {
                w.address.lock(|a| a.set(None));
            }
            let x = result?;
            if req.accepts(x.status) {
                Ok(x.body)
            } else {
                Err(Failure::Status {
                    status: x.status,
                    retry_after: x.retry_after,
                })
            }
        }
    }
}

impl<T: TcpConnect, D: Dns, H> Driver<'_, '_, '_, '_, T, D, H> {
    /// Log in again (ZnDraw's login): with a fixed token (`Worker::new`
    /// refuses `renew_credentials`) the core never asks.
    async fn log_in(&self, rx: &mut [u8]) -> Result<Reply, Failure> {
        #[cfg(feature = "login")]
        return self.w.log_in(rx).await.map(|()| Reply::Done);
        #[cfg(not(feature = "login"))]
        {
            let _ = rx;
            Err(Failure::status(401))
        }
    }
}

impl<T: TcpConnect, D: Dns, H> Driver<'_, '_, '_, '_, T, D, H> {
    /// `req`'s route, and its body's length in the lane's `tx`, for the
    /// worker id `id`. Not async and not inlined: the request's future
    /// keeps only what it returns, and the worker's future one copy of it.
    #[inline(never)]
    fn prepare<'r>(
        &'r self,
        held: Option<&'r Held>,
        tx: &mut [u8],
        req: Request,
        id: &'r str,
    ) -> Result<(Route<'r>, Option<usize>), Failure> {
        let s = Subject {
            worker_id: id,
            task_id: held.map_or("", |h| h.id.as_str()),
            job: match req {
                Request::RegisterJob(n) => self.w.jobs.get(usize::from(n)),
                _ => None,
            },
            error: held
                .and_then(|h| h.outcome.as_ref()?.as_ref().err())
                .map(|e| e.as_str()),
        };
        let route = req.route(&s).map_err(Failure::Local)?;
        let len = match req.has_body() {
            true => Some(wire::body(tx, req, &s).ok_or(TOO_LARGE)?),
            false => None,
        };
        Ok((route, len))
    }
}

const TOO_LARGE: Failure = Failure::Local(Local::BodyTooLarge);

impl<'l, 'b: 'l, T: TcpConnect, D: Dns, H: Handler> Io for Driver<'_, '_, 'l, 'b, T, D, H> {
    type Slot = &'l mut Slot<'b, H>;
    type Beat = &'l mut [u8];

    fn now(&self) -> Instant {
        EmbassyClock.now()
    }

    fn emit(&self, event: &Event<'_>) {
        self.w.emit(event);
    }

    async fn sleep_until(&self, t: Instant) {
        embassy_time::Timer::at(to_embassy(t)).await;
    }

    async fn send(&self, lane: &mut &'l mut Slot<'b, H>, req: Request) -> Result<Reply, Failure> {
        // With a fixed token (`Worker::new` refuses `renew_credentials`)
        // the core never asks to log in.
        if req == Request::Login {
            return self.log_in(lane.rx).await;
        }
        // The one worker id this request names (one copy, not three: the
        // copy lives in the request's future).
        let id = self.w.with_view(|v| match req.names_id() {
            Some(WhichId::Pending) => v.pending.clone(),
            Some(WhichId::Old) => v.old.clone(),
            _ => v.worker_id.clone(),
        });
        let (route, len) = self.prepare(lane.held.as_ref(), lane.tx, req, &id)?;
        let body = len.map(|n| &lane.tx[..n]);
        let span = self.call(route, req, body, lane.rx).await?;
        // A task's holder is compared with the id named: the current one.
        let answer = req.read(&lane.rx[span], &id)?;
        match answer {
            Answer::Created(raw) => {
                let id = wire::id(raw)?;
                self.w.with_view(|v| v.pending = id);
            }
            Answer::Claimed(task) => {
                lane.held = task.map(|t| wire::hold(t, lane.payload)).transpose()?;
            }
            _ => {}
        }
        Ok(answer.reply())
    }

    async fn beat(&self, rx: &mut &'l mut [u8], req: Request) -> Result<Reply, Failure> {
        if req == Request::Login {
            return self.log_in(rx).await;
        }
        let id = self.w.worker_id();
        let s = Subject {
            worker_id: &id,
            ..Subject::default()
        };
        // The core sends heartbeats here: a request with a body has none
        // to send from this path (its subject is a lane's), refused as
        // one that cannot be encoded rather than sent empty.
        if req.has_body() {
            return Err(Failure::Local(Local::Encoding));
        }
        let route = req.route(&s).map_err(Failure::Local)?;
        let span = self.call(route, req, None, rx).await?;
        req.read(&rx[span], &id).map(|a| a.reply())
    }

    async fn run(&self, lane: &mut &'l mut Slot<'b, H>) -> bool {
        let Some(h) = lane.held.as_ref() else { return false };
        let known = self.w.jobs.iter().any(|j| j.matches(&h.job_name));
        let outcome = match (known, h.payload_len, lane.handler.as_deref_mut()) {
            (true, Some(len), Some(handler)) => {
                let task = Task {
                    id: &h.id,
                    job_name: &h.job_name,
                    room_id: &h.room_id,
                    payload: &lane.payload[..len],
                };
                handler.run(task).await
            }
            (true, None, _) => Err(error_text("payload larger than the worker's buffer")),
            _ => Err(error_text(NO_HANDLER_ERROR)),
        };
        let ok = outcome.is_ok();
        if let Some(h) = lane.held.as_mut() {
            h.outcome = Some(outcome);
        }
        ok
    }

    fn abandon(&self, lane: &mut &'l mut Slot<'b, H>) {
        if let Some(h) = lane.held.as_mut() {
            h.outcome = Some(Err(error_text(SHUTDOWN_ERROR)));
        }
    }

    fn adopt(&self) {
        self.w.with_view(|v| {
            v.old = core::mem::replace(&mut v.worker_id, core::mem::take(&mut v.pending));
        });
    }

    fn with_worker_id(&self, f: &mut dyn FnMut(&str)) {
        let id = self.w.worker_id();
        f(&id)
    }

    fn task<'x>(&self, lane: &'x &'l mut Slot<'b, H>) -> TaskNames<'x> {
        let held = lane.held.as_ref();
        let error = held.and_then(|h| h.outcome.as_ref()?.as_ref().err());
        TaskNames::of(
            held.map(|h| (h.id.as_str(), h.job_name.as_str(), h.room_id.as_str())),
            error.map(|e| e.as_str()),
        )
    }

    fn control(&self) -> Control {
        self.w.with_view(|v| v.control)
    }

    async fn control_changed(&self) {
        self.w.control_changed.wait().await;
    }

    fn publish(&self, snapshot: &Snapshot) {
        let now = self.now();
        let registered = self.w.with_view(|v| {
            let registered = v.registered_at.is_none() && snapshot.stage == Stage::Running;
            if registered {
                v.registered_at = Some(now);
            }
            (v.stage, v.stop, v.stats) = (snapshot.stage, snapshot.stop, snapshot.stats);
            registered
        });
        if registered {
            self.w.progress.sender().send(2);
        }
    }
}
