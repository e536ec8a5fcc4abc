//! The host worker with task-available push against the real job server
//! (`serve.py --socketio`): a pushed task is claimed at once (polling is set
//! far too slow to explain it); a server restarted without Socket.IO keeps
//! the worker serving by polling, and with Socket.IO again it returns to
//! push; a token that expires while push is connected is renewed and push
//! authenticates again; several push workers run every task exactly once.
//!
//! Margins are generous (two loaded cores): "at once" is asserted as well
//! under the slow poll interval, not as a latency.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_std::task::block_on;
use outage_core::{Config, Duration as CoreDuration};
use outage_runtime_std::{Credentials, Job, PushMode, Task, Worker, WorkerBuilder};
use outage_tests::capture;
use outage_tests::real::{Api, Options, RealServer, login};

const JOB: &str = "@global:modifiers:Echo";
/// Far longer than any pickup asserted below: only push explains those.
const SLOW_POLL: CoreDuration = CoreDuration::from_secs(25);
const WITHIN: Duration = Duration::from_secs(5);

/// The ids the handlers ran, in order.
type Ran = Arc<Mutex<Vec<(String, Instant)>>>;

fn builder(url: &str, token: &str, cfg: Config, ran: &Ran) -> WorkerBuilder {
    let ran = ran.clone();
    WorkerBuilder::new(url, token).config(cfg).push(PushMode::On).job(
        Job::parse(JOB).unwrap(),
        move |t: Task| {
            let ran = ran.clone();
            async move {
                ran.lock().unwrap().push((t.id.clone(), Instant::now()));
                Ok(())
            }
        },
    )
}

fn slow_polling() -> Config {
    Config {
        poll_interval: SLOW_POLL,
        backoff_cap: SLOW_POLL,
        push_poll_interval: CoreDuration::from_secs(60),
        ..Config::DEFAULT
    }
}

/// Wait (bounded) until `n` lines contain `needle`.
fn wait_count(log: &capture::Session, needle: &str, n: usize, limit: Duration) {
    let deadline = Instant::now() + limit;
    while log.matching(needle).len() < n {
        assert!(
            Instant::now() < deadline,
            "no {n}× {needle:?} within {limit:?}\n{}",
            log.dump()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Wait (bounded) until the handler ran `id`; how long after `since`.
fn ran_within(ran: &Ran, id: &str, since: Instant, limit: Duration, log: &capture::Session) -> Duration {
    let deadline = Instant::now() + limit;
    loop {
        if let Some((_, at)) = ran.lock().unwrap().iter().find(|(t, _)| t == id) {
            return at.saturating_duration_since(since);
        }
        assert!(
            Instant::now() < deadline,
            "task {id} did not run within {limit:?}\n{}",
            log.dump()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn assert_no_token(log: &capture::Session, token: &str) {
    for line in log.lines() {
        assert!(!line.text.contains(token), "{}", line.text);
    }
}

#[test]
fn a_pushed_task_is_claimed_at_once_and_runs() {
    let log = capture::start();
    let server = RealServer::start_with(Options {
        args: vec!["--socketio".into()],
        ..Options::default()
    })
    .expect("real job server with --socketio");
    let ran = Ran::default();
    let worker =
        block_on(builder(server.url(), server.token(), slow_polling(), &ran).start()).expect("start");
    wait_count(&log, "Push connected", 1, Duration::from_secs(20));
    // Past the claim made when push came up.
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..3 {
        let t0 = Instant::now();
        let id = server.api().submit("room1", JOB, "{}");
        let took = ran_within(&ran, &id, t0, WITHIN, &log);
        eprintln!("pickup {took:?}");
        let deadline = Instant::now() + WITHIN;
        while server.api().status(&id) != "completed" {
            assert!(Instant::now() < deadline, "{id} not completed\n{}", log.dump());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    block_on(worker.disconnect());
    assert!(log.matching("Server unreachable").is_empty(), "{}", log.dump());
    assert_no_token(&log, server.token());
}

/// Stop the server and start it again on the same port and database, with
/// or without Socket.IO.
fn restart(old: &mut RealServer, port: u16, db: &std::path::Path, token: &str, socketio: bool) -> RealServer {
    old.stop_now().expect("stop");
    RealServer::start_with(Options {
        token: Some(token.to_owned()),
        port,
        db: Some(db.to_owned()),
        args: if socketio {
            vec!["--socketio".into()]
        } else {
            vec![]
        },
        ..Options::default()
    })
    .expect("restart")
}

#[test]
fn without_socketio_the_worker_polls_and_returns_to_push() {
    let log = capture::start();
    let dir = std::env::temp_dir().join(format!("outage-push-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("jobs.db");
    let token = format!("push-{}", uuid::Uuid::new_v4().simple());
    let mut first = RealServer::start_with(Options {
        token: Some(token.clone()),
        db: Some(db.clone()),
        args: vec!["--socketio".into()],
        ..Options::default()
    })
    .expect("real job server with --socketio");
    let url = first.url().to_owned();
    let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
    let ran = Ran::default();
    let cfg = Config {
        poll_interval: CoreDuration::from_millis(500),
        backoff_cap: CoreDuration::from_secs(2),
        push_poll_interval: CoreDuration::from_secs(60),
        ..Config::DEFAULT
    };
    let worker = block_on(builder(&url, &token, cfg, &ran).start()).expect("start");
    wait_count(&log, "Push connected", 1, Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(300));
    let id = Api::new(&url, &token).submit("room1", JOB, "{}");
    ran_within(&ran, &id, Instant::now(), WITHIN, &log);

    // Restarted without Socket.IO: push is lost, the worker polls.
    let mut plain = restart(&mut first, port, &db, &token, false);
    wait_count(&log, "Push connection lost", 1, Duration::from_secs(20));
    for _ in 0..3 {
        let id = Api::new(&url, &token).submit("room1", JOB, "{}");
        ran_within(&ran, &id, Instant::now(), Duration::from_secs(15), &log);
    }
    assert_eq!(log.matching("Push connected").len(), 1, "{}", log.dump());

    // With Socket.IO again: back to push (reconnects on the backoff).
    let _again = restart(&mut plain, port, &db, &token, true);
    wait_count(&log, "Push connected", 2, Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(300));
    let id = Api::new(&url, &token).submit("room1", JOB, "{}");
    ran_within(&ran, &id, Instant::now(), WITHIN, &log);
    assert_eq!(worker.stop_reason(), None);
    block_on(worker.disconnect());
    // A push outage is no server outage: only the restarts' own gaps.
    assert!(
        log.matching("Server unreachable for").is_empty(),
        "{}",
        log.dump()
    );
    assert_no_token(&log, &token);
    let _ = std::fs::remove_dir_all(dir);
}

const ADMIN: &str = "admin@example.com";
const PASSWORD: &str = "push-jwt-pw";

/// ZnDraw keeps a socket whose token expired: the worker's REST calls get
/// 401, it logs in again, and push connects again with the new token, so
/// pushed tasks keep being claimed at once.
#[test]
fn a_token_that_expires_while_push_is_connected() {
    let log = capture::start();
    log::set_max_level(log::LevelFilter::Trace);
    let server = RealServer::start_with(Options {
        args: [
            "--auth",
            "jwt",
            "--socketio",
            "--admin-password",
            PASSWORD,
            "--token-lifetime",
            "3",
        ]
        .map(str::to_owned)
        .to_vec(),
        ..Options::default()
    })
    .expect("real job server, jwt and Socket.IO");
    let ran = Ran::default();
    let cfg = Config {
        heartbeat_interval: CoreDuration::from_millis(700),
        ..slow_polling()
    };
    let worker: Worker = block_on(
        builder(server.url(), "", cfg, &ran)
            .credentials(Credentials::Login {
                user: ADMIN.into(),
                password: PASSWORD.into(),
            })
            .start(),
    )
    .expect("start with a login");
    // Several lifetimes: each renewal connects push again.
    wait_count(&log, "Push connected", 3, Duration::from_secs(40));
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(1_500));
        let id = Api::new(
            server.url(),
            &login(server.url(), ADMIN, PASSWORD).expect("login"),
        )
        .submit("room1", JOB, "{}");
        ran_within(&ran, &id, Instant::now(), WITHIN, &log);
    }
    assert_eq!(worker.stop_reason(), None);
    // Connected again after each renewal, not after a lost connection.
    assert!(log.matching("Push connection lost").is_empty(), "{}", log.dump());
    // Renewed ahead of each expiry (the JWT's `exp`), never on a 401.
    assert!(
        !log.matching("Credentials renewed; serving").is_empty(),
        "{}",
        log.dump()
    );
    assert!(log.matching("HTTP 401").is_empty(), "{}", log.dump());
    block_on(worker.disconnect());
    // Every line at trace level but tungstenite's own frame traces (which
    // show the CONNECT frame: see the `push` module docs; the CLI caps them).
    for line in log
        .lines()
        .iter()
        .filter(|l| !l.target.starts_with("tungstenite"))
    {
        assert!(!line.text.contains("eyJ"), "{}", line.text);
        assert!(!line.text.contains(PASSWORD), "{}", line.text);
    }
    log::set_max_level(log::LevelFilter::Debug);
}

/// Three push workers, forty tasks submitted in bursts: every task runs
/// exactly once and completes (the claim stays the authority; every worker
/// gets every event).
#[test]
fn push_workers_run_every_task_exactly_once() {
    let log = capture::start();
    let server = RealServer::start_with(Options {
        args: vec!["--socketio".into()],
        ..Options::default()
    })
    .expect("real job server with --socketio");
    let ran = Ran::default();
    let workers: Vec<Worker> = (0..3)
        .map(|_| {
            block_on(builder(server.url(), server.token(), slow_polling(), &ran).start()).expect("start")
        })
        .collect();
    wait_count(&log, "Push connected", 3, Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(300));
    let mut ids = Vec::new();
    for burst in 0..8 {
        for _ in 0..5 {
            ids.push(server.api().submit("room1", JOB, "{}"));
        }
        std::thread::sleep(Duration::from_millis(50 * burst));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    for id in &ids {
        loop {
            match server.api().status(id).as_str() {
                "completed" => break,
                s @ ("failed" | "cancelled") => panic!("{id} ended {s}\n{}", log.dump()),
                s => assert!(Instant::now() < deadline, "{id} still {s}\n{}", log.dump()),
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let ran = ran.lock().unwrap().clone();
    for id in &ids {
        let n = ran.iter().filter(|(t, _)| t == id).count();
        assert_eq!(n, 1, "{id} ran {n} times");
    }
    assert_eq!(ran.len(), ids.len());
    for w in &workers {
        block_on(w.disconnect());
    }
}

/// The server forgets the worker (deleted under it): it registers again
/// under a new id, push joins the rooms under that id, and pushed tasks are
/// claimed at once again.
#[test]
fn after_registering_again_push_joins_under_the_new_id() {
    let log = capture::start();
    let server = RealServer::start_with(Options {
        args: vec!["--socketio".into()],
        ..Options::default()
    })
    .expect("real job server with --socketio");
    let ran = Ran::default();
    let cfg = Config {
        heartbeat_interval: CoreDuration::from_secs(1),
        on_registration_lost: outage_core::OnRegistrationLost::Register,
        ..slow_polling()
    };
    let worker = block_on(builder(server.url(), server.token(), cfg, &ran).start()).expect("start");
    wait_count(&log, "Push connected", 1, Duration::from_secs(20));
    let old = worker.id();
    let r = server.api().call("DELETE", &format!("/workers/{old}"), None);
    assert!(r.status == 200 || r.status == 204, "{}", r.text());
    wait_count(&log, "Registered again", 1, Duration::from_secs(20));
    let new = worker.id();
    assert_ne!(old, new);
    wait_count(
        &log,
        &format!("sent join_job_room for job {JOB} as worker {new} "),
        1,
        Duration::from_secs(10),
    );
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..2 {
        let id = server.api().submit("room1", JOB, "{}");
        ran_within(&ran, &id, Instant::now(), WITHIN, &log);
    }
    assert_eq!(
        log.matching("Push connected").len(),
        1,
        "the same socket\n{}",
        log.dump()
    );
    block_on(worker.disconnect());
}
