//! Timers kept from one wait to the next: [`Deadlines`].
//!
//! Registering a timer with async-io wakes its reactor: an eventfd write,
//! and the thread that waits on epoll goes round once more (an eventfd read,
//! `timerfd_settime`, `epoll_ctl`s, another `epoll_wait`). A fresh timer per
//! request (its timeout) and per turn of the driver's loop (its sleep) cost
//! that every time. A [`Deadline`] stays registered at the instant it has
//! while that is no later than the one asked for; when it fires before the
//! instant asked for, it is set to that one. Waits still end exactly when
//! asked, and a timer is registered again only when a wait asks for an
//! earlier instant than the one pending, or about once per timeout when the
//! deadlines move forward one after the other (as requests' timeouts do).

use std::sync::Mutex;
use std::time::Instant;

use crate::sync::lock;

/// A timer and the instant it is set to.
pub(crate) struct Deadline {
    timer: async_io::Timer,
    /// The instant the timer is set to, if set and not yet seen to fire.
    armed: Option<Instant>,
}

impl Deadline {
    fn new() -> Deadline {
        Deadline {
            timer: async_io::Timer::never(),
            armed: None,
        }
    }

    /// Resolves at `deadline`, not before. Until then the timer may wake
    /// the task at the instant it was already set to (earlier), and is set
    /// again.
    pub(crate) async fn until(&mut self, deadline: Instant) {
        loop {
            if self.armed.is_none_or(|at| at > deadline) {
                self.timer.set_at(deadline);
                self.armed = Some(deadline);
            }
            (&mut self.timer).await;
            self.armed = None;
            if Instant::now() >= deadline {
                return;
            }
        }
    }
}

/// Deadlines not in use (one per wait in progress, at most).
#[derive(Default)]
pub(crate) struct Deadlines(Mutex<Vec<Deadline>>);

impl Deadlines {
    /// A deadline to wait with; it comes back here when the lease is
    /// dropped (the wait finished or was given up).
    pub(crate) fn lease(&self) -> Lease<'_> {
        let deadline = lock(&self.0).pop().unwrap_or_else(Deadline::new);
        Lease {
            pool: self,
            deadline: Some(deadline),
        }
    }

    /// Wait until `deadline` on a kept timer.
    pub(crate) async fn sleep_until(&self, deadline: Instant) {
        self.lease().until(deadline).await;
    }
}

/// A [`Deadline`] borrowed from [`Deadlines`].
pub(crate) struct Lease<'a> {
    pool: &'a Deadlines,
    deadline: Option<Deadline>,
}

impl Lease<'_> {
    /// As [`Deadline::until`].
    pub(crate) async fn until(&mut self, deadline: Instant) {
        if let Some(d) = self.deadline.as_mut() {
            d.until(deadline).await;
        }
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(d) = self.deadline.take() {
            lock(&self.pool.0).push(d);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn waits_end_when_asked_whatever_the_timer_was_set_to() {
        async_std::task::block_on(async {
            let pool = Deadlines::default();
            // Set to a later instant first, then asked for an earlier one.
            let start = Instant::now();
            let later = start + Duration::from_millis(300);
            let _ = futures_lite::future::or(pool.sleep_until(later), async {
                async_std::task::sleep(Duration::from_millis(20)).await;
            })
            .await;
            let early = Instant::now() + Duration::from_millis(50);
            pool.sleep_until(early).await;
            assert!(Instant::now() >= early);
            assert!(Instant::now() < later, "woke late");
            // Set to an earlier instant (kept), asked for a later one.
            let soon = Instant::now() + Duration::from_millis(30);
            let _ = futures_lite::future::or(pool.sleep_until(soon), async {}).await;
            let after = Instant::now() + Duration::from_millis(100);
            pool.sleep_until(after).await;
            assert!(Instant::now() >= after, "woke early");
            // One timer served every wait.
            assert_eq!(lock(&pool.0).len(), 1);
        });
    }
}
