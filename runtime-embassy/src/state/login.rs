//! The worker's side of logging in (feature `login`): the constructor and
//! the login exchange the core asks for ([`Request::Login`]: at start,
//! before the worker creates itself, and again after a 401). The body
//! writer, the answer's parsing and the token store are
//! [`crate::login`]'s.

use core::cell::{Cell, RefCell};

use embassy_sync::blocking_mutex::Mutex;
use embedded_nal_async::{Dns, TcpConnect};
use outage_core::protocol::LOGIN_PATH;
use outage_core::wire::{RequestHead, Target};
use outage_core::{Config, Failure, Local, Request, Transport};

use super::{SetupError, Worker};
use crate::login::{SharedToken, TokenStore, is_valid_credential, login_body};
use crate::net::{Bearer, connect, gather, receive, resolve, write_out};
use crate::types::Job;

/// An email and a password, and the token the last login got.
pub(crate) struct Credentials<'a> {
    email: &'a str,
    password: &'a str,
    token: SharedToken,
}

impl<'a, T: TcpConnect, D: Dns> Worker<'a, T, D> {
    /// A worker that logs in with `email` and `password` (ZnDraw's
    /// `POST /v1/auth/jwt/login`) instead of keeping a fixed token: at the
    /// start of each run, before it creates itself on the server, and again
    /// whenever the server refuses the token with 401 (the core's rule,
    /// [`Config::renew_credentials`], turned on here). A login refused, or a
    /// fresh token refused too, stops the worker.
    ///
    /// The token (up to [`crate::MAX_TOKEN`] bytes) is kept in the worker;
    /// the login's form is written into the end of the lane's receive
    /// buffer, which must also hold the answer (about 400 bytes with a
    /// ZnDraw JWT and the head). Email and password: at most
    /// [`crate::login::MAX_CREDENTIAL`] bytes each, else
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
        worker.config = Config {
            renew_credentials: true,
            ..*worker.config
        }
        .validated()
        .map_err(SetupError::Config)?;
        worker.login = Some(Credentials {
            email,
            password,
            token: Mutex::new(RefCell::new(TokenStore::new())),
        });
        Ok(worker)
    }

    /// The token requests carry: the last login's, or the fixed one.
    pub(crate) fn bearer(&self) -> Bearer<'_> {
        match &self.login {
            Some(login) => Bearer::Stored(&login.token),
            None => Bearer::Fixed(self.token),
        }
    }

    /// Whether a run starts with a login.
    pub(crate) fn logs_in(&self) -> bool {
        self.login.is_some()
    }

    /// One login: the form into the end of `rx`, the request written by
    /// hand on a connection of its own, the answer into `rx`, its token
    /// into the store; within the request timeout.
    pub(crate) async fn log_in(&self, rx: &mut [u8]) -> Result<(), Failure> {
        let Some(login) = &self.login else {
            return Err(Failure::status(401));
        };
        let work = async {
            let n = login_body(rx, login.email, login.password).ok_or(Failure::Local(Local::BodyTooLarge))?;
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
            let head = RequestHead {
                method: "POST",
                target: Target::Path {
                    base: self.server.base.as_bytes(),
                    path: LOGIN_PATH.as_bytes(),
                },
                host: self.server.authority.as_bytes(),
                bearer: None,
                headers: &[
                    (b"Accept", b"application/json"),
                    (b"Content-Type", b"application/x-www-form-urlencoded"),
                ],
                body_len: n,
            };
            // The form lies at the end of `rx`; the head is gathered before it.
            let (buf, form) = rx.split_at_mut(at);
            write_out(&mut conn, buf, |buf, skip| Some(gather(&head, form, buf, skip))).await?;
            let x = receive(&mut conn, rx).await?;
            if !Request::Login.accepts(x.status) {
                return Err(Failure::Status {
                    status: x.status,
                    retry_after: x.retry_after,
                });
            }
            let body = &rx[x.body];
            match login.token.lock(|t| t.borrow_mut().take_answer(body)) {
                true => Ok(()),
                false => Err(Failure::MalformedResponse),
            }
        };
        let limit = embassy_time::Duration::from_millis(Request::Login.timeout(&self.config).as_millis());
        let result = embassy_time::with_timeout(limit, work)
            .await
            .unwrap_or(Err(Failure::Transport(Transport::Timeout)));
        if matches!(result, Err(Failure::Transport(_))) {
            self.address.lock(|a| a.set(None));
        }
        result
    }
}
