//! `outage_runtime_std::push` against the real job server with
//! `serve.py --socketio` (ZnDraw's Socket.IO wiring around the unmodified
//! `zndraw_joblib` router): a joined job's submission arrives as
//! `task_available`; a wrong token is the refusal error; a server without
//! Socket.IO is the "offers no Socket.IO" error; pings are answered past
//! `pingInterval + pingTimeout`; a stopped or killed server ends `next()`
//! at once.
//!
//! REST calls (register, submit) go through the plain test client while the
//! socket is not being read; the events wait in the socket meanwhile.

use std::time::{Duration, Instant};

use async_std::future::timeout;
use async_std::task::block_on;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use outage_runtime_std::push::{CloseReason, Push, PushError, PushEvent};
use outage_tests::real::{Options, RealServer};
use serde_json::json;

const ECHO: &str = "@global:modifiers:Echo";
const CHECK: &str = "@global:analysis:Check";
/// Generous on two loaded cores.
const CONNECT: Duration = Duration::from_secs(20);
const EVENT_WITHIN: Duration = Duration::from_secs(15);

fn server(socketio: bool) -> RealServer {
    let args = if socketio {
        vec!["--socketio".to_owned()]
    } else {
        vec![]
    };
    RealServer::start_with(Options {
        args,
        ..Options::default()
    })
    .expect("real job server (see ../shared/jobserver/README.md)")
}

/// A worker with both jobs, as the worker registers them over REST.
fn register(server: &RealServer) -> String {
    let r = server.api().call_json("POST", "/workers", None);
    assert_eq!(r.status, 201, "{}", r.text());
    let worker = r.json()["id"].as_str().expect("worker id").to_owned();
    for full in [ECHO, CHECK] {
        let mut parts = full.split(':');
        let (room, category, name) = (
            parts.next().unwrap(),
            parts.next().unwrap(),
            parts.next().unwrap(),
        );
        let body = json!({"category": category, "name": name, "schema": {}, "worker_id": worker});
        let r = server
            .api()
            .call_json("PUT", &format!("/rooms/{room}/jobs"), Some(&body));
        assert!(r.status == 201 || r.status == 200, "{}", r.text());
    }
    worker
}

/// Submits to `job` from room `room1`; the task id.
fn submit(server: &RealServer, job: &str) -> String {
    server.api().submit("room1", job, r#"{"a":1}"#)
}

fn task_available(job: &str, task: &str) -> PushEvent {
    PushEvent::TaskAvailable {
        job_name: job.to_owned(),
        room_id: "room1".to_owned(),
        task_id: task.to_owned(),
    }
}

async fn next_event(push: &mut Push) -> PushEvent {
    match timeout(EVENT_WITHIN, push.next()).await {
        Ok(Ok(event)) => event,
        Ok(Err(e)) => panic!("next(): {e}"),
        Err(_) => panic!("no event within {EVENT_WITHIN:?}"),
    }
}

#[test]
fn joined_jobs_get_task_available_and_left_ones_do_not() {
    let server = server(true);
    let worker = register(&server);
    block_on(async {
        let mut push = Push::connect(server.url(), server.token(), CONNECT)
            .await
            .unwrap_or_else(|e| panic!("connect: {e}"));
        assert!(!push.sid().is_empty());
        assert!(!format!("{push:?}").contains(server.token()));
        push.join(ECHO, &worker).await.expect("join Echo");

        // CHECK is not joined: its submission (first) sends nothing here.
        let _unseen = submit(&server, CHECK);
        let task = submit(&server, ECHO);
        assert_eq!(next_event(&mut push).await, task_available(ECHO, &task));

        // After leaving ECHO and joining CHECK, only CHECK's arrive.
        push.leave(ECHO, &worker).await.expect("leave Echo");
        push.join(CHECK, &worker).await.expect("join Check");
        let _left = submit(&server, ECHO);
        let task = submit(&server, CHECK);
        assert_eq!(next_event(&mut push).await, task_available(CHECK, &task));

        push.close().await.expect("clean close");
    });
    // The worker outlives the socket (ZnDraw keeps it): heartbeat still 200.
    let r = server
        .api()
        .call_json("PATCH", &format!("/workers/{worker}"), None);
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn a_wrong_token_is_refused() {
    let server = server(true);
    block_on(async {
        for wrong in ["wrong-token".to_owned(), format!("Bearer {}", server.token())] {
            match Push::connect(server.url(), &wrong, CONNECT).await {
                Err(e @ PushError::Refused { .. }) => {
                    let shown = format!("{e} / {e:?}");
                    assert!(shown.contains("refused"), "{shown}");
                    assert!(
                        !shown.contains(&wrong) && !shown.contains(server.token()),
                        "{shown}"
                    );
                }
                Err(e) => panic!("{wrong:?}: expected a refusal, got: {e}"),
                Ok(_) => panic!("{wrong:?} was accepted"),
            }
        }
        // The right one is not.
        let push = Push::connect(server.url(), server.token(), CONNECT).await;
        assert!(push.is_ok(), "{}", push.unwrap_err());
    });
}

#[test]
fn a_server_without_socketio_is_said_so() {
    let server = server(false);
    let err = block_on(Push::connect(server.url(), server.token(), CONNECT)).expect_err("no Socket.IO");
    assert!(matches!(err, PushError::NoSocketIo), "{err}");
    assert!(err.to_string().contains("no Socket.IO"), "{err}");
}

/// The real server pings every 25 s and drops a socket whose pong is over
/// 20 s late, so a socket still in its job room after 50 s answered.
#[test]
fn pings_are_answered_past_interval_plus_timeout() {
    let server = server(true);
    let worker = register(&server);
    block_on(async {
        let mut push = Push::connect(server.url(), server.token(), CONNECT)
            .await
            .unwrap_or_else(|e| panic!("connect: {e}"));
        let connected = Instant::now();
        push.join(ECHO, &worker).await.expect("join");
        let interval = push.ping_interval();
        let grace = push.ping_timeout();
        assert_eq!(
            (interval, grace),
            (Duration::from_secs(25), Duration::from_secs(20))
        );
        let quiet_until = connected + interval + grace + Duration::from_secs(5);
        let left = quiet_until.saturating_duration_since(Instant::now());
        match timeout(left, push.next()).await {
            Err(_) => {}
            Ok(r) => panic!("nothing should happen while idle, got {r:?}"),
        }
        assert!(push.pongs_sent() >= 1, "{} pongs in 50 s", push.pongs_sent());
        let task = submit(&server, ECHO);
        assert_eq!(next_event(&mut push).await, task_available(ECHO, &task));
    });
}

/// SIGTERM: uvicorn closes the WebSocket (1012). SIGKILL: the kernel ends
/// the TCP connection. Either way `next()` fails at once, not after the
/// 45 s ping deadline.
#[test]
fn a_stopped_or_killed_server_ends_next_promptly() {
    let mut server = server(true);
    let worker = register(&server);
    let promptly = Duration::from_secs(10);
    for kill_it in [false, true] {
        block_on(async {
            let mut push = Push::connect(server.url(), server.token(), CONNECT)
                .await
                .unwrap_or_else(|e| panic!("connect: {e}"));
            push.join(ECHO, &worker).await.expect("join");
            let stopped = Instant::now();
            if kill_it {
                let pid = server.pid().expect("running") as i32;
                kill(Pid::from_raw(pid), Signal::SIGKILL).expect("SIGKILL");
            } else {
                // Not stop_now(): it blocks until the process is gone.
                let pid = server.pid().expect("running") as i32;
                kill(Pid::from_raw(pid), Signal::SIGTERM).expect("SIGTERM");
            }
            let r = timeout(promptly, push.next()).await;
            let took = stopped.elapsed();
            match r {
                Ok(Err(PushError::Closed(reason))) => {
                    eprintln!("kill={kill_it}: {reason} after {took:?}");
                    if kill_it {
                        assert_eq!(reason, CloseReason::Reset);
                    } else {
                        assert!(
                            matches!(reason, CloseReason::WebSocket { code: 1012 } | CloseReason::Reset),
                            "{reason}"
                        );
                    }
                }
                Ok(Err(e)) => panic!("kill={kill_it}: expected a close, got: {e}"),
                Ok(Ok(event)) => panic!("kill={kill_it}: event {event:?}"),
                Err(_) => panic!("kill={kill_it}: next() still waiting after {promptly:?}"),
            }
            let again = push.next().await.expect_err("failed once, failed for good");
            assert!(
                matches!(again, PushError::Closed(CloseReason::AlreadyFailed)),
                "{again}"
            );
        });
        // Same port and database: the next round connects again.
        server.restart().expect("restart");
    }
}
