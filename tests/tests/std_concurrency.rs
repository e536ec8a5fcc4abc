//! Four task slots on the host worker, through an outage: four tasks run at
//! once under one worker id, outcomes finished while the server is down
//! are held, and every task's handler runs once and its outcome is applied
//! once (counted from the server's own journal).

use std::time::{Duration, Instant};

use outage_core::protocol::TaskStatus;
use outage_core::{Config, Duration as CoreDuration};
use outage_runtime_std::{Job, Task, WorkerBuilder};
use outage_tests::capture;
use outage_tests::record;
use outage_tests::scenarios::fast_config;
use outage_tests::server::{Fault, TestServer};
use serde_json::json;

const JOB: &str = "@global:modifiers:Echo";

async fn sleepy(task: Task) -> Result<(), String> {
    let run = record::started(&task.id, &task.room_id, task.payload_json().as_bytes());
    let ms = task
        .payload::<serde_json::Value>()
        .ok()
        .and_then(|p| p["sleep_ms"].as_u64())
        .unwrap_or(0);
    async_std::task::sleep(Duration::from_millis(ms)).await;
    record::finished(&task.id, run, &Ok(()));
    Ok(())
}

#[test]
fn four_slots_through_an_outage_deliver_every_outcome_once() {
    let log = capture::start();
    let server = TestServer::start().unwrap();
    let config = Config {
        // Generous: the outage below (3 s) stays far from the limit.
        max_unreachable: CoreDuration::from_secs(30),
        ..fast_config()
    };
    let worker = async_std::task::block_on(
        WorkerBuilder::new(server.url(), server.token())
            .config(config)
            .concurrency(4)
            .job(Job::parse(JOB).unwrap(), sleepy)
            .start(),
    )
    .unwrap_or_else(|e| panic!("start: {e}\n{}", log.dump()));
    let ids: Vec<_> = (0..12)
        .map(|_| server.submit("room1", JOB, json!({"sleep_ms": 1500})).unwrap())
        .collect();
    // Four run at once: wait until four are running on the server.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let running = ids
            .iter()
            .filter(|id| server.state().tasks[id].status == TaskStatus::Running)
            .count();
        if running == 4 {
            break;
        }
        assert!(Instant::now() < deadline, "never four at once:\n{}", log.dump());
        std::thread::sleep(Duration::from_millis(10));
    }
    // The server goes away while they run (their outcomes are held).
    server.set_fault(Fault::Refuse);
    std::thread::sleep(Duration::from_secs(3));
    server.clear_faults();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ids
        .iter()
        .all(|id| server.state().tasks[id].status == TaskStatus::Completed)
    {
        assert!(Instant::now() < deadline, "not all completed:\n{}", log.dump());
        std::thread::sleep(Duration::from_millis(20));
    }
    async_std::task::block_on(worker.disconnect());
    for id in &ids {
        let runs = record::runs(&id.to_string());
        assert_eq!(runs.len(), 1, "task {id} ran {} times", runs.len());
        let completions = server
            .journal()
            .iter()
            .filter(|e| {
                e.method == "PATCH"
                    && e.path.ends_with(&id.to_string())
                    && e.processed
                    && e.status == Some(200)
                    && e.body.contains("completed")
            })
            .count();
        assert_eq!(completions, 1, "task {id}: outcome applied {completions} times");
    }
    // Four at once, by the handlers' own clocks.
    let mut spans: Vec<(Instant, Instant)> = ids
        .iter()
        .map(|id| {
            let r = &record::runs(&id.to_string())[0];
            (r.started, r.finished.expect("finished"))
        })
        .collect();
    spans.sort();
    let most = spans
        .iter()
        .map(|(s, _)| spans.iter().filter(|(a, b)| a <= s && s < b).count())
        .max()
        .unwrap_or(0);
    assert_eq!(most, 4, "at most four at once, and four did run together");
    assert!(!log.matching("Task outcome held").is_empty(), "{}", log.dump());
    assert!(
        !log.matching("Server reachable again").is_empty(),
        "{}",
        log.dump()
    );
    let stats = worker.stats();
    assert_eq!(stats.tasks_completed, 12);
}
