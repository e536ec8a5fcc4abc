//! Tokens on the embassy worker: up to `MAX_TOKEN` (512) bytes, written
//! into every request without a copy in the worker, with a heartbeat
//! receive buffer smaller than the request (the request is gathered and
//! written out in pieces). A real JWT from the real server's login is in
//! `real_jwt.rs`.

use std::time::{Duration, Instant};

use outage_core::protocol::TaskStatus;
use outage_runtime_embassy::MAX_TOKEN;
use outage_tests::capture;
use outage_tests::embassy_rt::EmbassyRuntime;
use outage_tests::scenarios::{JOBS, RunningWorker, Runtime, Setup, fast_config};
use outage_tests::server::TestServer;
use serde_json::json;

/// A token of `n` bytes that looks like a JWT (three base64url parts).
fn token(n: usize) -> String {
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut t: String = (0..n).map(|i| alphabet[i * 7 % 64] as char).collect();
    t.replace_range(36..37, ".");
    t.replace_range(n - 44..n - 43, ".");
    t
}

#[test]
fn a_token_of_512_bytes_is_sent_whole() {
    assert_eq!(MAX_TOKEN, 512);
    let log = capture::start();
    let long = token(MAX_TOKEN);
    let server = TestServer::builder().token(long.clone()).start().unwrap();
    let setup = Setup {
        url: server.url(),
        token: long.clone(),
        config: fast_config(),
    };
    let w = EmbassyRuntime::start(&setup).unwrap_or_else(|e| panic!("{e}\n{}", log.dump()));
    let id = server.submit("room1", JOBS[0], json!({"n": 1})).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.state().tasks[&id].status != TaskStatus::Completed {
        assert!(Instant::now() < deadline, "{}", log.dump());
        std::thread::sleep(Duration::from_millis(10));
    }
    // Heartbeats too (their requests are larger than a 512-byte buffer).
    let beats = || {
        server
            .journal()
            .iter()
            .filter(|e| e.method == "PATCH" && e.path.contains("/workers/") && e.status == Some(200))
            .count()
    };
    while beats() < 2 {
        assert!(Instant::now() < deadline, "{}", log.dump());
        std::thread::sleep(Duration::from_millis(10));
    }
    let bearer = format!("Bearer {long}");
    assert!(
        server.journal().iter().all(|e| e
            .headers
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("authorization") && *v == bearer)),
        "every request carries the whole token"
    );
    assert_eq!(w.stop_reason(), None);
    w.disconnect();
}

#[test]
fn a_longer_token_is_refused_at_setup() {
    let setup = Setup {
        url: "http://127.0.0.1:9".into(),
        token: token(MAX_TOKEN + 1),
        config: fast_config(),
    };
    let Err(e) = EmbassyRuntime::start(&setup) else {
        panic!("a token of 513 bytes was accepted")
    };
    assert_eq!(e, "the token is longer than 512 bytes");
}
