//! Credentials that last, against the real server's own login
//! (`serve.py --auth jwt`: zndraw-auth's fastapi-users JWTs), with tokens
//! that expire every 3 s: a worker that logs in keeps serving across ten
//! token lifetimes without an outage warning and without a single 401 (it
//! renews each token ahead of its `exp`); a token file renewed by someone
//! else is read again ahead of its token's expiry too; a wrong password stops the worker
//! with one clear line. The embassy worker serves with a real JWT as a
//! fixed token (longer than the 160 bytes it once accepted), and with its
//! own login (feature `login`) across token lifetimes, or stops with one
//! line on a wrong password.

use std::time::{Duration, Instant};

use outage_core::{Config, Duration as CoreDuration, Fatal};
use outage_runtime_std::{Credentials, Job, StartError, Task, WorkerBuilder};
use outage_tests::capture;
use outage_tests::embassy_rt::EmbassyRuntime;
use outage_tests::real::{self, Api, Options, RealServer};
use outage_tests::scenarios::{RunningWorker, Runtime, Setup};

const ADMIN: &str = "admin@example.com";
const PASSWORD: &str = "jwt-test-pw";
const JOB: &str = "@global:modifiers:Echo";
const LIFETIME_S: u64 = 3;

fn jwt_server() -> RealServer {
    RealServer::start_with(Options {
        args: [
            "--auth",
            "jwt",
            "--admin-password",
            PASSWORD,
            "--token-lifetime",
            &LIFETIME_S.to_string(),
        ]
        .map(str::to_owned)
        .to_vec(),
        ..Options::default()
    })
    .expect("real job server in jwt mode")
}

fn login(server: &RealServer) -> String {
    login_at(server.url()).expect("login")
}

fn login_at(url: &str) -> Option<String> {
    real::login(url, ADMIN, PASSWORD)
}

fn config() -> Config {
    Config {
        heartbeat_interval: CoreDuration::from_millis(700),
        poll_interval: CoreDuration::from_millis(300),
        request_timeout: CoreDuration::from_secs(10),
        ..Config::DEFAULT
    }
}

/// Submit a task every second for `lifetimes` token lifetimes; every one
/// completes, with no outage warning.
/// How the worker renews its token.
#[derive(PartialEq)]
enum Renews {
    /// Ahead of each expiry (the host's login): no 401 at all.
    Ahead,
    /// Ahead when the token it reads has life left, else on the 401 (a
    /// token file: it is only as fresh as whoever writes it).
    AheadOrOn401,
    /// Once per 401 (a device, which reads no wall clock).
    On401,
}

fn serve_across(lifetimes: u64, server: &RealServer, log: &capture::Session, what: &str, renews: Renews) {
    let mut ids = Vec::new();
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(lifetimes * LIFETIME_S) {
        ids.push(Api::new(server.url(), &login(server)).submit("room1", JOB, "{}"));
        std::thread::sleep(Duration::from_secs(1));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    for id in &ids {
        loop {
            let token = login(server);
            match Api::new(server.url(), &token).status(id).as_str() {
                "completed" => break,
                s @ ("failed" | "cancelled") => panic!("{what}: task {id} ended {s}\n{}", log.dump()),
                s => assert!(
                    Instant::now() < deadline,
                    "{what}: task {id} still {s}\n{}",
                    log.dump()
                ),
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    assert!(
        ids.len() as u64 >= lifetimes * LIFETIME_S * 2 / 3,
        "{what}: {} tasks",
        ids.len()
    );
    assert!(
        log.matching("Server unreachable").is_empty(),
        "{what}: no outage warning\n{}",
        log.dump()
    );
    if renews == Renews::On401 {
        let renewals = log
            .matching("Token refused (HTTP 401): renewing the credentials")
            .len() as u64;
        assert!(
            renewals >= lifetimes / 2,
            "{what}: only {renewals} renewals\n{}",
            log.dump()
        );
        return;
    }
    // Renewed ahead of each expiry (the JWT's `exp`): never refused.
    if renews == Renews::Ahead {
        let refused = log.matching("HTTP 401").len();
        assert_eq!(refused, 0, "{what}: a 401 seen\n{}", log.dump());
    }
    let renewals = log.matching("Credentials renewed; serving").len() as u64;
    assert!(
        renewals >= lifetimes / 2,
        "{what}: only {renewals} renewals\n{}",
        log.dump()
    );
}

#[test]
fn a_worker_that_logs_in_serves_across_ten_token_lifetimes() {
    let log = capture::start();
    // Every level, trace included: no token, no password.
    log::set_max_level(log::LevelFilter::Trace);
    let server = jwt_server();
    let worker = async_std::task::block_on(
        WorkerBuilder::new(server.url(), "")
            .credentials(Credentials::Login {
                user: ADMIN.into(),
                password: PASSWORD.into(),
            })
            .config(config())
            .job(Job::parse(JOB).unwrap(), |_t: Task| async { Ok(()) })
            .start(),
    )
    .expect("start with a login");
    serve_across(10, &server, &log, "login", Renews::Ahead);
    assert_eq!(worker.stop_reason(), None);
    async_std::task::block_on(worker.disconnect());
    // The password and tokens appear in no line.
    assert_no_secrets(&log);
    log::set_max_level(log::LevelFilter::Debug);
}

#[test]
fn a_token_file_renewed_by_someone_else_is_read_again_ahead_of_expiry() {
    let log = capture::start();
    let server = jwt_server();
    let file = std::env::temp_dir().join(format!("outage-token-{}", uuid::Uuid::new_v4().simple()));
    std::fs::write(&file, login(&server) + "\n").unwrap();
    // Another process keeps the file fresh, as a sidecar would.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let refresher = {
        let (stop, file, url) = (stop.clone(), file.clone(), server.url().to_owned());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                if let Some(token) = login_at(&url) {
                    let tmp = file.with_extension("tmp");
                    let _ = std::fs::write(&tmp, token).and_then(|()| std::fs::rename(&tmp, &file));
                }
                std::thread::sleep(Duration::from_millis(1_000));
            }
        })
    };
    let worker = async_std::task::block_on(
        WorkerBuilder::new(server.url(), "")
            .credentials(Credentials::TokenFile(file.clone()))
            .config(config())
            .job(Job::parse(JOB).unwrap(), |_t: Task| async { Ok(()) })
            .start(),
    )
    .expect("start with a token file");
    serve_across(5, &server, &log, "token file", Renews::AheadOrOn401);
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let _ = refresher.join();
    assert_eq!(worker.stop_reason(), None);
    async_std::task::block_on(worker.disconnect());
    let _ = std::fs::remove_file(file);
}

#[test]
fn a_wrong_password_stops_with_one_clear_line() {
    let log = capture::start();
    let server = jwt_server();
    let t0 = Instant::now();
    let err = async_std::task::block_on(
        WorkerBuilder::new(server.url(), "")
            .credentials(Credentials::Login {
                user: ADMIN.into(),
                password: "not-the-password".into(),
            })
            .config(config())
            .job(Job::parse(JOB).unwrap(), |_t: Task| async { Ok(()) })
            .start(),
    )
    .expect_err("a wrong password");
    assert!(t0.elapsed() < Duration::from_secs(10), "not retried");
    let StartError::Startup { error, detail } = &err else {
        panic!("{err}")
    };
    assert!(matches!(
        error.error.classify(error.what),
        outage_core::Class::Fatal(Fatal::LoginRefused { status: 400 })
    ));
    assert_eq!(detail.as_deref(), Some("LOGIN_BAD_CREDENTIALS"));
    let errors = log.error_lines();
    assert_eq!(errors.len(), 1, "{}", log.dump());
    assert_eq!(
        errors[0].text,
        "Startup: login failed, giving up: HTTP 400 Bad Request"
    );
    assert!(!log.dump().contains("not-the-password"));
}

/// A device keeps a fixed token: the embassy worker with a real JWT from
/// the server's login (about 200 bytes; `MAX_TOKEN` was 160 and is 512)
/// registers, serves a task and deletes itself; the token is in no line.
#[test]
fn the_embassy_worker_serves_with_a_real_jwt() {
    let log = capture::start();
    let server = RealServer::start_with(Options {
        args: [
            "--auth",
            "jwt",
            "--admin-password",
            PASSWORD,
            "--token-lifetime",
            "600",
        ]
        .map(str::to_owned)
        .to_vec(),
        ..Options::default()
    })
    .expect("real job server in jwt mode");
    let token = login(&server);
    assert!(token.len() > 160, "a real JWT: {} bytes", token.len());
    let setup = Setup {
        url: server.url().to_owned(),
        token: token.clone(),
        config: config(),
    };
    let worker = EmbassyRuntime::start(&setup).unwrap_or_else(|e| panic!("{e}\n{}", log.dump()));
    let api = Api::new(server.url(), &token);
    let id = api.submit("room1", JOB, "{}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while api.status(&id) != "completed" {
        assert!(
            Instant::now() < deadline,
            "task {id} not completed\n{}",
            log.dump()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(worker.stop_reason(), None);
    worker.disconnect();
    assert!(!log.dump().contains(&token[..40]));
    assert_eq!(log.matching("deleted from the server").len(), 1, "{}", log.dump());
}

/// A device that logs in (`Worker::with_login`): the embassy worker serves
/// across four token lifetimes, logging in again on each 401 without an
/// outage warning; neither the password nor a token appears in any line,
/// at any level.
#[test]
fn the_embassy_worker_logs_in_again_whenever_its_token_expires() {
    let log = capture::start();
    log::set_max_level(log::LevelFilter::Trace);
    let server = jwt_server();
    let setup = Setup {
        url: server.url().to_owned(),
        token: String::new(),
        config: config(),
    };
    let worker = EmbassyRuntime::start_with_login(&setup, ADMIN, PASSWORD)
        .unwrap_or_else(|e| panic!("{e}\n{}", log.dump()));
    serve_across(4, &server, &log, "embassy login", Renews::On401);
    assert_eq!(worker.stop_reason(), None, "{}", log.dump());
    worker.disconnect();
    assert_no_secrets(&log);
    log::set_max_level(log::LevelFilter::Debug);
}

/// A wrong password: the embassy worker does not start, at once (a refused
/// login is not retried), with one error line that holds no password.
#[test]
fn the_embassy_worker_with_a_wrong_password_stops_with_one_line() {
    let log = capture::start();
    let server = jwt_server();
    let setup = Setup {
        url: server.url().to_owned(),
        token: String::new(),
        config: config(),
    };
    let t0 = Instant::now();
    let err = match EmbassyRuntime::start_with_login(&setup, ADMIN, "not-the-password") {
        Ok(_) => panic!("started with a wrong password\n{}", log.dump()),
        Err(e) => e,
    };
    assert!(t0.elapsed() < Duration::from_secs(10), "not retried");
    assert_eq!(
        err,
        "could not start the worker: login failed: HTTP 400 Bad Request"
    );
    let errors = log.error_lines();
    assert_eq!(errors.len(), 1, "{}", log.dump());
    assert_eq!(
        errors[0].text,
        "Startup: login failed, giving up: HTTP 400 Bad Request"
    );
    assert!(!log.dump().contains("not-the-password"));
}

/// The password and the tokens appear in no line.
fn assert_no_secrets(log: &capture::Session) {
    for line in log.lines() {
        assert!(!line.text.contains(PASSWORD), "{}", line.text);
        assert!(!line.text.contains("eyJ"), "{}", line.text);
        assert!(!line.text.contains("Bearer"), "{}", line.text);
    }
}
