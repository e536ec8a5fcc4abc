//! The worker's side of logging in (feature `login`): the constructor, the
//! login exchange, the startup login and the renewal the core asks for
//! ([`HeartbeatAction::Login`]). The body writer, the answer's parsing and
//! the token store are [`crate::login`]'s.

use core::cell::{Cell, RefCell};
use core::sync::atomic::Ordering;

use embassy_futures::select::Either;
use embassy_sync::blocking_mutex::Mutex;
use embedded_nal_async::{Dns, TcpConnect};
use outage_core::{
    Clock, Config, Endpoint, Failure, HeartbeatAction, Machine, StartupError, StartupRetry, StartupStep,
    Step, Transport,
};

use super::{Job, SetupError, Worker, to_embassy};
use crate::fmt::emit;
use crate::login::{SharedToken, TokenStore, is_valid_credential, login_body};
use crate::net::{Bearer, connect, decimal, receive, resolve, send_pieces};

/// An email and a password, and the token the last login got.
pub(super) struct Credentials<'a> {
    email: &'a str,
    password: &'a str,
    token: SharedToken,
}

impl<'a, T: TcpConnect, D: Dns> Worker<'a, T, D> {
    /// A worker that logs in with `email` and `password` (ZnDraw's
    /// `POST /v1/auth/jwt/login`) instead of keeping a fixed token: at
    /// [`Worker::start`], before it creates itself on the server, and again
    /// whenever the server refuses the token with 401 (the heartbeat loop
    /// does it; the claim loop waits). A login refused, or a fresh token
    /// refused too, stops the worker (`registration lost: the server
    /// refused the login`). [`Config::renew_credentials`] is turned on.
    ///
    /// The token (up to [`crate::MAX_TOKEN`] bytes) is kept in the worker
    /// (512 bytes more than [`Worker::new`]'s); the login's form is written
    /// into the end of the loop's receive buffer, which must also hold the
    /// answer (about 400 bytes with a ZnDraw JWT and the head). Email and
    /// password: at most [`crate::login::MAX_CREDENTIAL`] bytes each, else
    /// [`SetupError::Credentials`]. Neither ever appears in a log line.
    #[allow(clippy::too_many_arguments)]
    pub fn with_login(
        tcp: &'a T,
        dns: &'a D,
        server: &'a str,
        email: &'a str,
        password: &'a str,
        jobs: &'a [Job<'a>],
        config: Config,
        seed: u64,
    ) -> Result<Self, SetupError> {
        if !is_valid_credential(email) || !is_valid_credential(password) {
            return Err(SetupError::Credentials);
        }
        // `new` checks everything else (and refuses renewal for a fixed
        // token, which this worker is not).
        let fixed = Config {
            renew_credentials: false,
            ..config
        };
        let mut worker = Self::new(tcp, dns, server, "unused", jobs, fixed, seed)?;
        worker.token = "";
        let renewing = Config {
            renew_credentials: true,
            ..config
        };
        let machine = Machine::new(renewing, worker.clock.now(), 0).map_err(SetupError::Config)?;
        worker.machine = Mutex::new(RefCell::new(machine));
        worker.login = Some(Credentials {
            email,
            password,
            token: Mutex::new(RefCell::new(TokenStore::new())),
        });
        Ok(worker)
    }

    /// The token requests carry: the last login's, or the fixed one.
    pub(super) fn bearer(&self) -> Bearer<'_> {
        match &self.login {
            Some(login) => Bearer::Stored(&login.token),
            None => Bearer::Fixed(self.token),
        }
    }

    /// At start: log in, on the core's startup retry schedule (a refused
    /// login is not retried). Nothing to do for a fixed token.
    pub(super) async fn first_login(&self, rx: &mut [u8]) -> Result<(), StartupError> {
        if self.login.is_none() {
            return Ok(());
        }
        let mut schedule = StartupRetry::new();
        loop {
            let started = self.clock.now();
            let Err(failure) = self.log_in(rx).await else {
                return Ok(());
            };
            let (next, event) =
                schedule.on_failure(&self.config(), Endpoint::Login, started, failure, self.rand());
            emit(&event);
            match next {
                StartupStep::RetryAt(t) => embassy_time::Timer::at(to_embassy(t)).await,
                StartupStep::GiveUp(e) => return Err(e),
            }
        }
    }

    /// [`HeartbeatAction::Login`]: log in again and report it to the core;
    /// `None` if the worker halted meanwhile.
    pub(super) async fn renew_login(&self, rx: &mut [u8]) -> Option<Step<HeartbeatAction>> {
        let started = self.clock.now();
        let Either::Second(result) = self.or_halt(&self.halt_hb, self.log_in(rx)).await else {
            return None;
        };
        let rand = self.rand();
        Some(self.with_machine(|m| m.on_login(started, self.clock.now(), result, rand)))
    }

    /// One login: the form into the end of `rx`, the request written by
    /// hand on a connection of its own, the answer into `rx`, its token
    /// into the store. Within the request timeout; never re-sent here (the
    /// core schedules another attempt).
    async fn log_in(&self, rx: &mut [u8]) -> Result<(), Failure> {
        let Some(login) = &self.login else {
            return Err(Failure::status(401));
        };
        self.requests.fetch_add(1, Ordering::Relaxed);
        let work = async {
            let n = login_body(rx, login.email, login.password)
                .ok_or(Failure::Transport(Transport::SendFailed))?;
            let at = rx.len() - n;
            rx.copy_within(..n, at);
            let ip = match self.address.lock(Cell::get) {
                Some(ip) => ip,
                None => {
                    let ip = resolve(self.dns, &self.server).await?;
                    self.address.lock(|a| a.set(Some(ip)));
                    ip
                }
            };
            let mut conn = connect(self.tcp, ip, self.server.port).await?;
            let mut digits = [0u8; 20];
            let head: [&[u8]; 8] = [
                b"POST ",
                self.server.base.as_bytes(),
                b"/v1/auth/jwt/login HTTP/1.1\r\nHost: ",
                self.server.authority.as_bytes(),
                b"\r\nAccept: application/json\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: ",
                decimal(n, &mut digits),
                b"\r\n\r\n",
                &rx[at..],
            ];
            send_pieces(&mut conn, &head).await?;
            let x = receive(&mut conn, rx).await?;
            let x = self.expect(x, &[200])?;
            let body = &rx[x.body];
            match login.token.lock(|t| t.borrow_mut().take_answer(body)) {
                true => Ok(()),
                false => Err(Failure::MalformedResponse),
            }
        };
        let limit = embassy_time::Duration::from_millis(self.config().request_timeout.as_millis());
        let result = embassy_time::with_timeout(limit, work)
            .await
            .unwrap_or(Err(Failure::Transport(Transport::Timeout)));
        if matches!(result, Err(Failure::Transport(_))) {
            self.address.lock(|a| a.set(None));
        }
        result
    }
}
