//! Payloads reach handlers byte-exact, through the real job server, on both
//! runtimes: floats that a `serde_json::Value` round-trip would round,
//! integers beyond 64 bits, `-0.0`, subnormals, escaped and raw non-ASCII,
//! `\u0000`, deep nesting and a 1 MB string. Names with JSON escapes (a room
//! `r\x`, which the server accepts) are read correctly.
//!
//! "Byte-exact" is measured against what the server sends: the payload in
//! its `GET /tasks/{id}` answer, taken raw.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use embassy_executor::Executor;
use outage_core::{Config, Duration as CoreDuration};
use outage_runtime_embassy::{
    ClaimBuffers, ErrorText, Handler, Job as DeviceJob, Task as DeviceTask, Worker,
};
use outage_runtime_std::{Job, Task, WorkerBuilder};
use outage_tests::real::RealServer;
use serde_json::value::RawValue;
use std_embedded_nal_async::Stack;

const JOB: &str = "@global:modifiers:Echo";
/// A room whose name JSON must escape (`r\x`), URL-encoded for the path.
const ODD_ROOM: &str = "r\\x";
const ODD_ROOM_PATH: &str = "r%5Cx";

/// What handlers saw: task id → (room, payload bytes).
type Seen = HashMap<String, (String, Vec<u8>)>;
static SEEN: Mutex<Option<Seen>> = Mutex::new(None);

fn record(id: &str, room: &str, payload: &[u8]) {
    SEEN.lock()
        .unwrap()
        .get_or_insert_with(HashMap::new)
        .insert(id.to_owned(), (room.to_owned(), payload.to_vec()));
}

fn seen(id: &str) -> Option<(String, Vec<u8>)> {
    SEEN.lock().unwrap().as_ref().and_then(|m| m.get(id).cloned())
}

/// The payloads, as raw JSON text (never through a `Value`).
fn payloads() -> Vec<(&'static str, String)> {
    // Depth 240: beyond serde_json's 128 for a `Value`, within the real
    // server's own limit (pydantic refuses to serialise depth 256: 500).
    let mut deep = String::new();
    for _ in 0..120 {
        deep.push_str("{\"a\":[");
    }
    deep.push('1');
    for _ in 0..120 {
        deep.push_str("]}");
    }
    let big = format!("{{\"s\":\"{}\"}}", "x".repeat(1 << 20));
    vec![
        ("float", r#"{"x":0.9889559355234849}"#.to_owned()),
        ("huge", r#"{"x":1e308}"#.to_owned()),
        ("negative zero", r#"{"x":-0.0}"#.to_owned()),
        ("subnormal", r#"{"x":5e-324}"#.to_owned()),
        (
            "big integer",
            r#"{"x":123456789012345678901234567890}"#.to_owned(),
        ),
        (
            "escaped non-ASCII",
            r#"{"s":"\u00e9\u4e2d\ud83d\ude00"}"#.to_owned(),
        ),
        ("raw non-ASCII", "{\"s\":\"é中😀\"}".to_owned()),
        ("NUL and escapes", r#"{"s":"a\u0000b\"c\\d\n"}"#.to_owned()),
        ("deep nesting", deep),
        ("1 MB string", big),
    ]
}

/// The task as the server holds it: status and raw payload bytes.
fn server_task(server: &RealServer, id: &str) -> (String, String) {
    #[derive(serde::Deserialize)]
    struct T<'a> {
        status: String,
        #[serde(borrow)]
        payload: &'a RawValue,
    }
    let r = server.api().call("GET", &format!("/tasks/{id}"), None);
    let t: T<'_> = serde_json::from_slice(&r.body).expect("task JSON");
    (t.status, t.payload.get().to_owned())
}

fn config() -> Config {
    Config {
        poll_interval: CoreDuration::from_millis(100),
        backoff_cap: CoreDuration::from_millis(500),
        request_timeout: CoreDuration::from_secs(10),
        ..Config::DEFAULT
    }
}

/// Submit every payload (and one in the odd room), wait for them to end,
/// and compare what the handler saw with what the server sends.
fn check_all(server: &RealServer, runtime: &str) {
    let mut tasks = Vec::new();
    for (what, payload) in payloads() {
        tasks.push((what, server.api().submit("room1", JOB, &payload), "room1"));
    }
    tasks.push((
        "room with escapes",
        server.api().submit(ODD_ROOM_PATH, JOB, r#"{"y":1}"#),
        ODD_ROOM,
    ));
    let deadline = Instant::now() + Duration::from_secs(90);
    for (what, id, room) in &tasks {
        loop {
            let (status, payload) = server_task(server, id);
            if status == "completed" {
                let (seen_room, bytes) = seen(id)
                    .unwrap_or_else(|| panic!("{runtime}: {what}: completed but the handler saw nothing"));
                assert_eq!(
                    bytes,
                    payload.as_bytes(),
                    "{runtime}: {what}: the handler's payload differs from the server's"
                );
                assert_eq!(&seen_room, room, "{runtime}: {what}: room");
                break;
            }
            assert!(
                status == "pending" || status == "claimed" || status == "running",
                "{runtime}: {what}: task ended {status}"
            );
            assert!(
                Instant::now() < deadline,
                "{runtime}: {what}: still {status} after 90 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    // The numbers that a Value round-trip would have altered are intact.
    for (needle, id) in [
        ("0.9889559355234849", &tasks[0].1),
        ("123456789012345678901234567890", &tasks[4].1),
        ("5e-324", &tasks[3].1),
        ("-0.0", &tasks[2].1),
    ] {
        let (_, bytes) = seen(id).unwrap();
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.contains(needle), "{runtime}: {needle} not in {text}");
    }
}

#[test]
fn std_worker_gets_payloads_byte_exact() {
    let server = RealServer::start().expect("real job server");
    let worker = async_std::task::block_on(
        WorkerBuilder::new(server.url(), server.token())
            .config(config())
            .job(Job::parse(JOB).unwrap(), |task: Task| async move {
                record(&task.id, &task.room_id, task.payload_json().as_bytes());
                Ok(())
            })
            .start(),
    )
    .expect("start");
    check_all(&server, "runtime-std");
    async_std::task::block_on(worker.disconnect());
}

struct Recorder;

impl Handler for Recorder {
    async fn run(&mut self, task: DeviceTask<'_>) -> Result<(), ErrorText> {
        record(task.id, task.room_id, task.payload);
        Ok(())
    }
}

type W = Worker<'static, Stack, Stack>;

#[embassy_executor::task]
async fn run_task(
    worker: &'static W,
    hb_rx: &'static mut [u8],
    bufs: ClaimBuffers<'static>,
    handler: &'static mut Recorder,
) {
    let _ = worker.run(hb_rx, bufs, handler).await;
}

fn leak_buf(n: usize) -> &'static mut [u8] {
    Box::leak(vec![0u8; n].into_boxed_slice())
}

#[test]
fn embassy_worker_gets_payloads_byte_exact() {
    let server = RealServer::start().expect("real job server");
    let stack: &'static Stack = Box::leak(Box::default());
    let parts: Vec<&'static str> = JOB.splitn(3, ':').collect();
    let jobs: &'static [DeviceJob<'static>] = Box::leak(Box::new([DeviceJob {
        room: parts[0],
        category: parts[1],
        name: parts[2],
        schema: "{}",
    }]));
    let url: &'static str = Box::leak(server.url().to_owned().into_boxed_str());
    let token: &'static str = Box::leak(server.token().to_owned().into_boxed_str());
    let worker: &'static W = Box::leak(Box::new(
        W::new(stack, stack, url, token, jobs, config(), 42).expect("worker"),
    ));
    // Buffers large enough for the 1 MB payload and its claim answer.
    let bufs = ClaimBuffers {
        rx: leak_buf(3 << 20),
        tx: leak_buf(2 << 10),
        payload: leak_buf(2 << 20),
    };
    let handler: &'static mut Recorder = Box::leak(Box::new(Recorder));
    let hb_rx = leak_buf(1 << 10);
    std::thread::spawn(move || {
        let executor: &'static mut Executor = Box::leak(Box::new(Executor::new()));
        executor.run(move |spawner| {
            spawner.spawn(run_task(worker, hb_rx, bufs, handler).expect("run task"));
        })
    });
    futures_lite::future::block_on(worker.started()).expect("start");
    check_all(&server, "runtime-embassy");
    futures_lite::future::block_on(worker.disconnect());
}
