//! The host library worker as a process of its own, for `benches/drain.py`:
//! `bench_worker URL TOKEN ROOM:CATEGORY:NAME` registers one no-op job,
//! prints `registered <id>` once registered, serves until SIGTERM or
//! SIGINT, then prints its request count (`requests <n>`) and exits.

use outage_runtime_std::{Job, Task, WorkerBuilder};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, token, job] = &args[..] else {
        eprintln!("usage: bench_worker URL TOKEN ROOM:CATEGORY:NAME");
        std::process::exit(2);
    };
    let job = Job::parse(job).unwrap_or_else(|e| {
        eprintln!("bad job: {e}");
        std::process::exit(2)
    });
    async_std::task::block_on(async {
        let worker = match WorkerBuilder::new(url.as_str(), token.as_str())
            .job(job, |_task: Task| async { Ok(()) })
            .start()
            .await
        {
            Ok(w) => w,
            Err(e) => {
                eprintln!("start failed: {e}");
                std::process::exit(1)
            }
        };
        println!("registered {}", worker.id());
        worker.run_until_signal(std::time::Duration::ZERO).await;
        println!("requests {}", worker.stats().requests);
    });
}
