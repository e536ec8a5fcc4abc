//! A token file that cannot be used when the token must be renewed (a 401)
//! stops the worker with one line that says so — not "check the user name
//! and password", which it has none of — and no request is made for it.

use std::time::Duration;

use outage_core::{Endpoint, Local, StopReason};
use outage_runtime_std::{Credentials, Job, Task, WorkerBuilder};
use outage_tests::capture;
use outage_tests::scenarios::fast_config;
use outage_tests::server::TestServer;

#[test]
fn an_unusable_token_file_at_renewal_says_so() {
    let log = capture::start();
    let server = TestServer::start().unwrap();
    let file = std::env::temp_dir().join(format!("outage-token-{}", uuid::Uuid::new_v4().simple()));
    std::fs::write(&file, format!("{}\n", server.token())).unwrap();
    let worker = async_std::task::block_on(
        WorkerBuilder::new(server.url(), "")
            .credentials(Credentials::TokenFile(file.clone()))
            .config(fast_config())
            .job(Job::parse("@global:modifiers:Echo").unwrap(), |_t: Task| async {
                Ok(())
            })
            .start(),
    )
    .expect("start with a token file");
    std::fs::remove_file(&file).unwrap();
    server.revoke_token();
    let reason =
        async_std::task::block_on(async_std::future::timeout(Duration::from_secs(20), worker.wait()))
            .expect("it stops");
    assert_eq!(
        reason,
        StopReason::Local {
            what: Endpoint::Login,
            error: Local::TokenFile
        }
    );
    let warn = log.matching("Cannot renew the token: cannot read ");
    assert_eq!(warn.len(), 1, "{}", log.dump());
    let errors = log.error_lines();
    assert_eq!(errors.len(), 1, "{}", log.dump());
    assert_eq!(
        errors[0].text,
        "Cannot renew the token: the token file is unusable, shutting down (fix it and start the worker again)"
    );
    assert!(!log.dump().contains("user name and password"), "{}", log.dump());
    assert!(!log.dump().contains(server.token()), "no token in the log");
}
