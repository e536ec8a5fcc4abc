//! Task-available push for the host worker: a [`Push`] connection kept
//! beside the driver (it is not a REST lane), turned into the core's input
//! ([`outage_core::push::PushInput`] through [`Io::push`]).
//!
//! The task connects once the worker is registered, with the current token,
//! and joins the room of every job under the current worker id. Each
//! `task_available` for one of its jobs counts a hint and wakes the driver
//! (through the control signal); the core decides what a hint does. The
//! task joins again under the new id after a re-registration, connects
//! again with the new token after a renewal, reconnects on the core's
//! [`PushLink`] schedule when the connection fails, and leaves the rooms
//! and closes the socket when the worker stops. The token goes only into
//! [`Push::connect`]: it is never logged.
//!
//! [`Io::push`]: outage_core::driver::Io::push

use std::sync::Arc;
use std::time::Duration as StdDuration;

use futures_lite::FutureExt;
use outage_core::push::{PushLink, PushMode};
use outage_core::{Clock, Control, Event, SplitMix64, Stage};

use crate::http::Http;
use crate::push::{Push, PushError, PushEvent};
use crate::sync::lock;
use crate::worker::Shared;

/// Why the listening loop ended.
enum Ended {
    /// The connection failed.
    Lost(PushError),
    /// The token was renewed: connect again with the new one.
    Renewed,
    /// The worker stops.
    Stopping,
}

impl<H: Http> Shared<H> {
    /// Serving: registered, and not asked to stop.
    fn serving(&self) -> bool {
        *lock(&self.control) == Control::Run && lock(&self.view).stage == Stage::Running
    }

    fn set_push(&self, f: impl FnOnce(&mut outage_core::push::PushInput)) {
        f(&mut lock(&self.push_input));
        // Wake the driver: it reads the input when it wakes.
        let _ = self.control_changed.0.try_send(());
    }

    /// Wake the push task (an id adopted, a token renewed, a stop).
    pub(crate) fn wake_push(&self) {
        let _ = self.push_wake.0.try_send(());
    }

    /// Until woken, or `t` (at most).
    async fn push_sleep(&self, t: StdDuration) {
        let rx = &self.push_wake.1;
        async {
            let _ = rx.recv().await;
        }
        .or(async_std::task::sleep(t))
        .await;
    }
}

/// The push task of a worker: runs until the worker stops (or push is
/// given up: the server offers none).
pub(crate) async fn run<H: Http>(shared: Arc<Shared<H>>, mode: PushMode, seed: u64) {
    let cfg = shared.config;
    let now = || shared.clock.now();
    let mut link = PushLink::new(mode, now());
    let mut rng = SplitMix64::new(seed ^ 0x5055_5348_5055_5348);
    let jobs: Vec<String> = shared.jobs.iter().map(|(j, _)| j.full_name()).collect();
    let mut tried_with = shared.api.token().get();
    loop {
        if lock(&shared.view).finished || *lock(&shared.control) != Control::Run {
            return;
        }
        if shared.api.token().get() != tried_with {
            // Renewed credentials: perhaps the old token was refused.
            link.retry_now(now());
        }
        let Some(at) = link.connect_at() else {
            return;
        };
        let t = now();
        if !shared.serving() || t < at {
            let wait = if t < at { at - t } else { cfg.heartbeat_interval };
            shared
                .push_sleep(StdDuration::from_millis(wait.as_millis()))
                .await;
            continue;
        }
        let token = shared.api.token().get();
        tried_with = token.clone();
        let worker_id = lock(&shared.ids).current.clone();
        let timeout = StdDuration::from_millis(cfg.request_timeout.as_millis());
        let connected = async {
            let mut push =
                Push::connect_bounded(&shared.url, &token, timeout, shared.max_push_message).await?;
            for job in &jobs {
                push.join(job, &worker_id).await?;
            }
            Ok::<_, PushError>(push)
        }
        .await;
        let mut push = match connected {
            Ok(push) => push,
            Err(e) => {
                let no_push = matches!(e, PushError::NoSocketIo | PushError::InvalidUrl(_));
                match link.down(&cfg, now(), no_push, rng.next_u32()) {
                    Some(retry_in) => shared.emit(&Event::PushDown {
                        why: &e.to_string(),
                        was_up: false,
                        retry_in,
                    }),
                    None => shared.emit(&Event::PushUnavailable),
                }
                continue;
            }
        };
        link.up(now());
        shared.set_push(|p| p.connected = true);
        shared.emit(&Event::PushConnected {
            jobs: jobs.len() as u32,
            poll: cfg.push_poll_interval,
        });
        let mut joined_as = worker_id;
        let ended = loop {
            let woke = async { Some(push.next().await) }
                .or(async {
                    let _ = shared.push_wake.1.recv().await;
                    None
                })
                .await;
            match woke {
                Some(Ok(PushEvent::TaskAvailable { job_name, .. })) => {
                    if jobs.contains(&job_name) {
                        shared.set_push(|p| p.hints = p.hints.wrapping_add(1));
                    }
                }
                Some(Err(e)) => break Ended::Lost(e),
                None if !shared.serving() => break Ended::Stopping,
                None if shared.api.token().get() != token => break Ended::Renewed,
                None => {
                    let id = lock(&shared.ids).current.clone();
                    if id != joined_as {
                        // Registered again: the rooms under the new id.
                        let mut rejoined = Ok(());
                        for job in &jobs {
                            rejoined = push.join(job, &id).await;
                            if rejoined.is_err() {
                                break;
                            }
                        }
                        match rejoined {
                            Ok(()) => {
                                joined_as = id;
                                shared.set_push(|p| p.hints = p.hints.wrapping_add(1));
                            }
                            Err(e) => break Ended::Lost(e),
                        }
                    }
                }
            }
        };
        shared.set_push(|p| p.connected = false);
        match ended {
            Ended::Stopping => {
                // Leave the rooms, then close; bounded, and never in the way
                // of the worker's own stop (it does not wait for this).
                let bye = async {
                    for job in &jobs {
                        push.leave(job, &joined_as).await?;
                    }
                    push.close().await
                };
                let _ = async_std::future::timeout(timeout, bye).await;
                return;
            }
            Ended::Renewed => {
                drop(push);
                link.down(&cfg, now(), false, rng.next_u32());
                link.retry_now(now());
            }
            Ended::Lost(e) => {
                if let Some(retry_in) = link.down(&cfg, now(), false, rng.next_u32()) {
                    shared.emit(&Event::PushDown {
                        why: &e.to_string(),
                        was_up: true,
                        retry_in,
                    });
                }
            }
        }
    }
}
