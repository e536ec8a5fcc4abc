//! A tokio application using the host worker. The library's futures run
//! on any executor (the worker runs on a thread of its own; `.await` them from
//! tokio as here); with the `tokio1` feature of `outage-runtime-std`
//! (async-std's `tokio1`), handlers may use tokio too — its timers, or a
//! tokio-based client — because async-std then runs them in a tokio context.
//!
//! ```text
//! cargo run -p outage-tests --features tokio-example --example tokio_app
//! ```
//!
//! It starts the Rust test job server, serves five tasks whose handler
//! sleeps with `tokio::time::sleep`, and checks they all completed.

use std::time::Duration;

use outage_core::protocol::TaskStatus;
use outage_runtime_std::{Job, Task, WorkerBuilder};
use outage_tests::scenarios::fast_config;
use outage_tests::server::TestServer;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = TestServer::start()?;
    let worker = WorkerBuilder::new(server.url(), server.token())
        .config(fast_config())
        .job(Job::new("@global", "modifiers", "Nap"), |task: Task| async move {
            // tokio inside a handler: needs the `tokio1` feature.
            tokio::time::sleep(Duration::from_millis(20)).await;
            println!("served task {}", task.id);
            Ok(())
        })
        .start()
        .await?;
    let ids: Vec<_> = (0..5)
        .map(|i| server.submit("room1", "@global:modifiers:Nap", serde_json::json!({ "i": i })))
        .collect::<Option<_>>()
        .ok_or("submit")?;
    let done = |id| server.state().tasks[id].status == TaskStatus::Completed;
    for _ in 0..500 {
        if ids.iter().all(done) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    worker.disconnect().await;
    let completed = ids.iter().filter(|id| done(id)).count();
    println!("tokio example: {completed}/{} tasks completed", ids.len());
    if completed != ids.len() {
        return Err("not every task completed".into());
    }
    Ok(())
}
