//! The embassy worker's I/O for the core's driver: one HTTP/1.1 exchange
//! per request over embedded-nal-async (its route and body written by hand
//! into the lane's buffers), embassy-time for sleeping, and the caller's
//! handler. No decision is made here: which request, when, which statuses
//! are a success and what to do next are the core's
//! ([`outage_core::Lifecycle`]).

use core::marker::PhantomData;

use embedded_nal_async::{Dns, TcpConnect};
use outage_core::driver::{Io, TaskNames};
use outage_core::protocol::{Route, StatusUpdate};
use outage_core::{
    Clock, Control, Event, Failure, Instant, Local, NO_HANDLER_ERROR, Reply, Request, SHUTDOWN_ERROR,
    Snapshot, Stage, TaskState,
};

use crate::net::{Outgoing, exchange, resolve};
use crate::state::Worker;
use crate::types::{EmbassyClock, Handler, Task, to_embassy};
use crate::wire::{
    Held, claim_body, error_text, registration_body, status_body, take_task, task_info, worker_id,
};

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
        // The one worker id this request names (one copy, not three: the
        // copy lives in the request's future).
        let id = self.w.with_view(|v| match req {
            Request::RegisterJob(_) => v.pending.clone(),
            Request::Retire => v.old.clone(),
            _ => v.worker_id.clone(),
        });
        let task_id = lane.held.as_ref().map_or("", |h| h.id.as_str());
        let (route, body) = match req {
            // With a fixed token (`Worker::new` refuses
            // `renew_credentials`) the core never asks.
            #[cfg(feature = "login")]
            Request::Login => return self.w.log_in(lane.rx).await.map(|()| Reply::Done),
            #[cfg(not(feature = "login"))]
            Request::Login => return Err(Failure::status(401)),
            Request::CreateWorker => (Route::CreateWorker, None),
            Request::RegisterJob(n) => {
                let job = self
                    .w
                    .jobs
                    .get(usize::from(n))
                    .ok_or(Failure::Local(Local::Encoding))?;
                let len = registration_body(lane.tx, job, &id).ok_or(TOO_LARGE)?;
                (Route::RegisterJob { room: job.room }, Some(len))
            }
            // The core sends heartbeats on the heartbeat lane only.
            Request::Heartbeat => return Err(Failure::Local(Local::Encoding)),
            Request::Claim => (Route::Claim, Some(claim_body(lane.tx, &id).ok_or(TOO_LARGE)?)),
            Request::Update(status) => {
                let error = lane
                    .held
                    .as_ref()
                    .and_then(|h| h.outcome.as_ref()?.as_ref().err());
                let update = StatusUpdate {
                    status,
                    error: error.map(|e| e.as_str()),
                };
                let len = status_body(lane.tx, &update).ok_or(TOO_LARGE)?;
                (Route::TaskStatus { task_id }, Some(len))
            }
            Request::GetTask => (Route::GetTask { task_id }, None),
            Request::Retire => (Route::Disconnect { worker_id: &id }, None),
            Request::Disconnect => (Route::Disconnect { worker_id: &id }, None),
        };
        let body = body.map(|n| &lane.tx[..n]);
        let span = self.call(route, req, body, lane.rx).await?;
        let answer = &lane.rx[span];
        match req {
            Request::CreateWorker => {
                let id = worker_id(answer)?;
                self.w.with_view(|v| v.pending = id);
            }
            Request::Claim => {
                lane.held = take_task(answer, lane.payload)?;
                return Ok(Reply::Claimed(lane.held.is_some()));
            }
            // The server answers with the updated task; an answer that
            // does not say so cannot prove the update applied.
            Request::Update(status) => match task_info(answer) {
                Ok((s, _)) if s == status => {}
                _ => return Err(Failure::MalformedResponse),
            },
            Request::GetTask => {
                let (status, holder) = task_info(answer)?;
                let ours = holder.as_deref() == Some(id.as_str());
                return Ok(Reply::Task(TaskState { status, ours }));
            }
            _ => {}
        }
        Ok(Reply::Done)
    }

    async fn beat(&self, rx: &mut &'l mut [u8], req: Request) -> Result<Reply, Failure> {
        let id = self.w.worker_id();
        match req {
            Request::Heartbeat => {
                let route = Route::Heartbeat { worker_id: &id };
                self.call(route, req, None, rx).await.map(|_| Reply::Done)
            }
            #[cfg(feature = "login")]
            Request::Login => self.w.log_in(rx).await.map(|()| Reply::Done),
            // With a fixed token (`Worker::new` refuses `renew_credentials`)
            // the core never asks to log in; it sends nothing else here.
            _ => Err(Failure::status(401)),
        }
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
