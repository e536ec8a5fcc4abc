//! What an operator reads: the server's own explanation of a refusal, and
//! one line per task, from the host worker (the per-task line is also in the
//! shared scenario list for both runtimes).

use outage_runtime_std::{Job, StartError, Task, WorkerBuilder};
use outage_tests::capture;
use outage_tests::server::TestServer;

#[test]
fn a_refusal_carries_the_servers_explanation() {
    let log = capture::start();
    let server = TestServer::start().unwrap();
    let err = async_std::task::block_on(
        WorkerBuilder::new(server.url(), server.token())
            .config(outage_tests::scenarios::fast_config())
            .job(Job::new("@global", "compute", "Relax"), |_t: Task| async {
                Ok(())
            })
            .start(),
    )
    .expect_err("an unknown category is refused");
    let StartError::Startup { detail, .. } = &err else {
        panic!("{err}")
    };
    let said = "Category 'compute' not in allowed list: ['modifiers', 'selections', 'analysis']";
    assert_eq!(detail.as_deref(), Some(said));
    assert!(err.to_string().contains(said), "{err}");
    let lines = log.matching("The server refused the register job (HTTP 400): ");
    assert_eq!(lines.len(), 1, "{}", log.dump());
    assert!(lines[0].text.ends_with(said), "{}", lines[0].text);
    assert_eq!(lines[0].level, log::Level::Warn);
}
